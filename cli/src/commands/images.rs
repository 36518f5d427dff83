//! `kiln images`: list images as docker does.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_store::Store;
use serde_json::json;

use crate::names::repository_and_tag;
use crate::output::{human_since, human_size, parse_time, write_table};
use crate::ExitStatus;

// Arguments of `kiln images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: `table` or `json` (one JSON object a line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only images matching KEY=VALUE: dangling=true|false,
    /// reference=PATTERN (`*` within a path part, as docker), label=KEY or
    /// label=KEY=VALUE, before=IMAGE, since=IMAGE. Repeated keys match any
    /// value; different keys all must match.
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Only images of this repository (and tag).
    pub reference: Option<String>,
}

/// One `--filter` of `kiln images`.
enum Filter {
    Dangling(bool),
    Reference(regex::Regex),
    Label(String, Option<String>),
    /// Created before (true) or after (false) this time.
    Created(i64, bool),
}

/// A docker reference pattern (Go `path.Match`: `*` and `?` stay within a
/// path part, `[...]` classes) as a whole-string regex.
fn pattern(text: &str) -> Result<regex::Regex> {
    let mut re = String::from("^");
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    re.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '[' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| anyhow::anyhow!("invalid reference pattern {text:?}: {e}"))
}

fn parse_filters(store: &Store, raw: &[String]) -> Result<Vec<(String, Filter)>> {
    let mut out = Vec::new();
    for f in raw {
        let Some((key, value)) = f.split_once('=') else {
            anyhow::bail!("bad format of filter {f:?} (expected name=value)");
        };
        let key = key.trim().to_ascii_lowercase();
        let filter = match key.as_str() {
            "dangling" => match value {
                "true" | "1" => Filter::Dangling(true),
                "false" | "0" => Filter::Dangling(false),
                _ => anyhow::bail!("invalid filter 'dangling={value}': use true or false"),
            },
            "reference" => Filter::Reference(pattern(value)?),
            "label" => match value.split_once('=') {
                Some((k, v)) => Filter::Label(k.to_string(), Some(v.to_string())),
                None => Filter::Label(value.to_string(), None),
            },
            "before" | "since" => {
                let image = super::find_image(store, value)?;
                let created = created_secs(&image);
                Filter::Created(created, key == "before")
            }
            _ => anyhow::bail!(
                "invalid filter '{key}': use dangling, reference, label, before or since"
            ),
        };
        out.push((key, filter));
    }
    Ok(out)
}

/// When the image was made, in seconds since the epoch (0 when unknown).
fn created_secs(image: &kiln_store::Image) -> i64 {
    image
        .config
        .created()
        .as_deref()
        .and_then(parse_time)
        .unwrap_or(0)
}

/// True when, for every filter key given, one of its values matches.
fn filters_match(filters: &[(String, Filter)], image: &kiln_store::Image, created: i64) -> bool {
    let keys: std::collections::BTreeSet<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.into_iter().all(|key| {
        filters
            .iter()
            .filter(|(k, _)| k == key)
            .any(|(_, f)| match f {
                Filter::Dangling(want) => image.names.is_empty() == *want,
                Filter::Reference(re) => image.names.iter().any(|n| {
                    let familiar = kiln_store::familiar_name(n);
                    let (repo, _) = repository_and_tag(n);
                    re.is_match(familiar) || re.is_match(&repo)
                }),
                Filter::Label(k, v) => {
                    let labels = image
                        .config
                        .config()
                        .as_ref()
                        .and_then(|c| c.labels().clone());
                    labels.is_some_and(|l| match v {
                        Some(v) => l.get(k) == Some(v),
                        None => l.contains_key(k),
                    })
                }
                Filter::Created(at, before) => {
                    if *before {
                        created < *at
                    } else {
                        created > *at
                    }
                }
            })
    })
}

pub fn run(store: &Store, args: &ImagesArgs) -> Result<ExitStatus> {
    let now = chrono::Utc::now().timestamp();
    let filter = args.reference.as_deref().map(|r| {
        let (repo, tag) = match r.rfind(':') {
            Some(i) if !r[i + 1..].contains('/') => (&r[..i], Some(&r[i + 1..])),
            _ => (r, None),
        };
        (
            kiln_store::familiar_name(&crate::names::normalize(repo).unwrap_or_default())
                .trim_end_matches(":latest")
                .to_string(),
            tag.map(str::to_string),
        )
    });
    let filters = parse_filters(store, &args.filters)?;
    let mut rows: Vec<(i64, Vec<String>, serde_json::Value)> = Vec::new();
    for image in store.images()? {
        let created = created_secs(&image);
        if !filters_match(&filters, &image, created) {
            continue;
        }
        let id = if args.no_trunc {
            image.id().to_string()
        } else {
            image.id().short().to_string()
        };
        let size = human_size(store.unpacked_size(&image));
        let created_since = human_since(now - created);
        let names: Vec<(String, String)> = if image.names.is_empty() {
            vec![("<none>".to_string(), "<none>".to_string())]
        } else {
            image.names.iter().map(|n| repository_and_tag(n)).collect()
        };
        for (repo, tag) in names {
            if let Some((want_repo, want_tag)) = &filter {
                if repo != *want_repo || want_tag.as_ref().is_some_and(|t| *t != tag) {
                    continue;
                }
            }
            let json = json!({
                "Containers": "N/A",
                "CreatedAt": image.config.created().clone().unwrap_or_default(),
                "CreatedSince": created_since,
                "Digest": image.manifest_digest.to_string(),
                "ID": id,
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": size,
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": size,
            });
            rows.push((
                created,
                vec![repo, tag, id.clone(), created_since.clone(), size.clone()],
                json,
            ));
        }
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut out = std::io::stdout().lock();
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for (_, row, _) in &rows {
            if seen.insert(row[2].clone()) {
                writeln!(out, "{}", row[2])?;
            }
        }
    } else if args.format == "json" {
        for (_, _, json) in &rows {
            writeln!(out, "{json}")?;
        }
    } else {
        let mut table = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
            .map(String::from)
            .to_vec()];
        table.extend(rows.into_iter().map(|(_, row, _)| row));
        write_table(&mut out, &table)?;
    }
    Ok(ExitStatus::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn reference_patterns_match_like_go_path_match() {
        let p = |t: &str| pattern(t).unwrap();
        assert!(p("busy*").is_match("busybox"));
        assert!(p("busybox:*").is_match("busybox:latest"));
        assert!(!p("busy*").is_match("busybox:latest/x"));
        assert!(p("*/app").is_match("registry.local/app"));
        assert!(!p("*").is_match("registry.local/app"));
        assert!(p("app:v[0-9]").is_match("app:v1"));
        assert!(p("a.b").is_match("a.b") && !p("a.b").is_match("axb"));
    }
}
