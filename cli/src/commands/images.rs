//! `kiln images`: list images as docker does.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_store::Store;
use serde_json::json;

use crate::names::repository_and_tag;
use crate::output::{human_since, human_size, parse_time, write_table};
use crate::ExitStatus;

/// Arguments of `kiln images`.
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
    /// Only images of this repository (and tag).
    pub reference: Option<String>,
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
    let mut rows: Vec<(i64, Vec<String>, serde_json::Value)> = Vec::new();
    for image in store.images()? {
        let created = image
            .config
            .created()
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(0);
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
