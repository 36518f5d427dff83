//! `kiln import`: a one-layer image from a root filesystem tar or directory,
//! as `docker import` makes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_store::layer::{Compression, DiffOptions};
use kiln_store::Store;
use oci_spec::image::{ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, RootFsBuilder};

use crate::ExitStatus;

/// Arguments of `kiln import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT,
    /// ENV, WORKDIR, USER, LABEL, EXPOSE or VOLUME (repeatable).
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Commit message recorded in the image history.
    #[arg(short, long)]
    pub message: Option<String>,
    /// A root filesystem: a tar (plain, gzip or zstd), a directory, or `-` for a tar on stdin.
    pub source: String,
    /// Name for the image, `[REGISTRY/]REPOSITORY[:TAG]`.
    pub name: Option<String>,
}

pub fn run(store: &Store, args: &ImportArgs) -> Result<ExitStatus> {
    let name = args
        .name
        .as_deref()
        .map(crate::names::normalize)
        .transpose()?;
    let mut config = ConfigBuilder::default()
        .build()
        .expect("an empty config builds");
    for change in &args.changes {
        apply_change(&mut config, change).with_context(|| format!("--change {change:?}"))?;
    }
    let lease = store.lease()?;
    let options = DiffOptions {
        compression: Compression::None,
        source_date_epoch: source_date_epoch()?,
    };
    let layer = if args.source == "-" {
        if std::io::stdin().is_terminal() {
            bail!("import: no tar on standard input");
        }
        store.layer_from_rootfs_tar(
            BufReader::with_capacity(1 << 20, std::io::stdin().lock()),
            &lease,
            &options,
        )
    } else {
        let path = Path::new(&args.source);
        let meta =
            std::fs::metadata(path).with_context(|| format!("import source {}", args.source))?;
        if meta.is_dir() {
            store.layer_from_dir(path, &lease, &options)
        } else {
            let file = File::open(path).with_context(|| format!("opening {}", args.source))?;
            store.layer_from_rootfs_tar(BufReader::with_capacity(1 << 20, file), &lease, &options)
        }
    }
    .with_context(|| format!("importing {}", args.source))?;

    let created = match options.source_date_epoch {
        Some(epoch) => chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    }
    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let comment = match &args.message {
        Some(m) => m.clone(),
        None => format!(
            "Imported from {}",
            if args.source == "-" {
                "-"
            } else {
                &args.source
            }
        ),
    };
    let (arch, os) = kiln_store::host_platform();
    let image_config = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(arch)
        .os(os)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.diff_id.to_string()])
                .build()
                .expect("a rootfs with type and diff ids builds"),
        )
        .history(vec![HistoryBuilder::default()
            .created(created)
            .comment(comment)
            .build()
            .expect("a history entry builds")])
        .build()
        .expect("an image config with every required field builds");
    let target = store.commit_image(&image_config, &[layer.descriptor], &lease)?;
    match &name {
        Some(name) => store.set_name(name, &target)?,
        None => store.keep_untagged(&target)?,
    }
    let id = kiln_store::Digest::of(&serde_json::to_vec(&image_config)?);
    println!("{id}");
    Ok(ExitStatus::SUCCESS)
}

/// SOURCE_DATE_EPOCH, when set, pins timestamps for reproducible images.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// Applies one `--change` instruction (Dockerfile syntax) to `config`.
fn apply_change(config: &mut oci_spec::image::Config, change: &str) -> Result<()> {
    let change = change.trim();
    let (keyword, rest) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    match keyword.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(command_form(rest)?));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(command_form(rest)?));
        }
        "WORKDIR" => {
            config.set_working_dir(Some(non_empty(rest, "WORKDIR")?.to_string()));
        }
        "USER" => {
            config.set_user(Some(non_empty(rest, "USER")?.to_string()));
        }
        "ENV" => {
            let mut env = config.env().clone().unwrap_or_default();
            for (k, v) in key_values(rest, "ENV")? {
                env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            config.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels: HashMap<String, String> = config.labels().clone().unwrap_or_default();
            labels.extend(key_values(rest, "LABEL")?);
            config.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for port in rest.split_whitespace() {
                let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if number.parse::<u16>().is_err() || !["tcp", "udp", "sctp"].contains(&proto) {
                    bail!("EXPOSE: invalid port {port:?} (want PORT[/tcp|udp|sctp])");
                }
                let port = format!("{number}/{proto}");
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let mut volumes = config.volumes().clone().unwrap_or_default();
            let paths = if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest).context("VOLUME: invalid JSON array")?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            volumes.extend(paths);
            config.set_volumes(Some(volumes));
        }
        other => bail!(
            "unsupported instruction {other:?}: import takes CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE or VOLUME"
        ),
    }
    Ok(())
}

fn non_empty<'a>(value: &'a str, what: &str) -> Result<&'a str> {
    if value.is_empty() {
        bail!("{what} needs a value");
    }
    Ok(value)
}

/// Exec form (`["a","b"]`) or shell form (`a b` -> `/bin/sh -c "a b"`).
fn command_form(rest: &str) -> Result<Vec<String>> {
    if rest.starts_with('[') {
        if let Ok(args) = serde_json::from_str::<Vec<String>>(rest) {
            return Ok(args);
        }
    }
    non_empty(rest, "the instruction")?;
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

/// `k=v k2="v 2"` or the legacy `k v`.
fn key_values(rest: &str, what: &str) -> Result<Vec<(String, String)>> {
    let rest = non_empty(rest, what)?;
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return Ok(vec![(k.to_string(), unquote(v.trim()))]);
    }
    let mut out = Vec::new();
    for word in split_words(rest) {
        let (k, v) = word
            .split_once('=')
            .with_context(|| format!("{what}: {word:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            bail!("{what}: empty key in {word:?}");
        }
        out.push((k.to_string(), unquote(v)));
    }
    Ok(out)
}

/// Splits on white space outside quotes.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (_, '\\') => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            (_, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Removes quotes and backslash escapes.
fn unquote(text: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            (_, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(changes: &[&str]) -> Result<oci_spec::image::Config> {
        let mut config = ConfigBuilder::default().build().unwrap();
        for c in changes {
            apply_change(&mut config, c)?;
        }
        Ok(config)
    }

    #[test]
    fn applies_changes() {
        let c = config_with(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /bin/run me",
            r#"ENV A=1 B="two words""#,
            "ENV C three",
            "WORKDIR /srv",
            "USER 1000:1000",
            "LABEL org.x=y",
            "EXPOSE 80 53/udp",
        ])
        .unwrap();
        assert_eq!(c.cmd().clone().unwrap(), ["sh", "-c", "echo hi"]);
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            ["/bin/sh", "-c", "/bin/run me"]
        );
        assert_eq!(c.env().clone().unwrap(), ["A=1", "B=two words", "C=three"]);
        assert_eq!(c.working_dir().as_deref(), Some("/srv"));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
        assert_eq!(c.labels().clone().unwrap()["org.x"], "y");
        assert_eq!(c.exposed_ports().clone().unwrap(), ["80/tcp", "53/udp"]);
    }

    #[test]
    fn rejects_bad_changes() {
        for bad in ["RUN echo", "EXPOSE http", "ENV", "WORKDIR", "ENV =x"] {
            assert!(config_with(&[bad]).is_err(), "{bad}");
        }
    }
}
