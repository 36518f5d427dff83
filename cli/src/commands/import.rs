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

// Arguments of `kiln import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT,
    /// ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR (repeatable;
    /// quoting and `$VAR` as in a Dockerfile).
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
    let config = config_from_changes(&args.changes)?;
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

/// The instructions `--change` takes (docker's list for import, less the
/// docker-only config fields HEALTHCHECK and ONBUILD).
const CHANGE_INSTRUCTIONS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The image config the `--change` instructions (Dockerfile syntax, read by
/// the build's own parser and compiler, so quoting, escapes and `$VAR`
/// expansion are as in a Dockerfile) give an image that starts empty.
fn config_from_changes(changes: &[String]) -> Result<oci_spec::image::Config> {
    let mut source = String::from("FROM scratch\n");
    for change in changes {
        let ast = kiln_builder::dockerfile::parser::parse("--change", change).map_err(|e| {
            anyhow::anyhow!(
                "--change {change:?}: {}",
                e.to_string().lines().next().unwrap_or("")
            )
        })?;
        match ast.nodes.as_slice() {
            [node] if CHANGE_INSTRUCTIONS.contains(&node.name().as_str()) => {}
            [node] => bail!(
                "--change {change:?}: unsupported instruction {}: import takes {}",
                node.name(),
                CHANGE_INSTRUCTIONS.join(", ")
            ),
            _ => bail!("--change {change:?}: give exactly one instruction"),
        }
        source.push_str(change.trim());
        source.push('\n');
    }
    let dockerfile = kiln_builder::Dockerfile::parse("--change", &source)
        .map_err(|e| anyhow::anyhow!("--change: {}", first_line(&e)))?;
    let graph = kiln_builder::compile(
        &dockerfile,
        &kiln_builder::CompileOptions::default(),
        &kiln_builder::NoImages,
    )
    .map_err(|e| anyhow::anyhow!("--change: {}", first_line(&e)))?;
    let built = &graph.target_stage().config;
    // The compiler gives every stage a PATH, as BuildKit does; docker import
    // sets only what the changes say.
    let sets_path = changes.iter().any(|c| {
        let c = c.trim_start();
        c.len() > 3
            && c[..3].eq_ignore_ascii_case("ENV")
            && c[3..]
                .split_whitespace()
                .any(|w| w == "PATH" || w.starts_with("PATH="))
    });
    let env: Vec<String> = built
        .env
        .iter()
        .filter(|e| sets_path || !e.starts_with("PATH="))
        .cloned()
        .collect();
    let mut config = ConfigBuilder::default()
        .build()
        .expect("an empty config builds");
    if !env.is_empty() {
        config.set_env(Some(env));
    }
    config.set_cmd(built.cmd.clone());
    config.set_entrypoint(built.entrypoint.clone());
    if !built.user.is_empty() {
        config.set_user(Some(built.user.clone()));
    }
    if !built.working_dir.is_empty() {
        config.set_working_dir(Some(built.working_dir.clone()));
    }
    if !built.labels.is_empty() {
        config.set_labels(Some(
            built
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ));
    }
    if !built.exposed_ports.is_empty() {
        config.set_exposed_ports(Some(built.exposed_ports.clone()));
    }
    if !built.volumes.is_empty() {
        config.set_volumes(Some(built.volumes.clone()));
    }
    config.set_stop_signal(built.stop_signal.clone());
    Ok(config)
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(changes: &[&str]) -> Result<oci_spec::image::Config> {
        config_from_changes(&changes.iter().map(|c| c.to_string()).collect::<Vec<_>>())
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
        for bad in [
            "RUN echo",
            "EXPOSE http",
            "ENV",
            "WORKDIR",
            "ENV =x",
            "STOPSIGNAL NOSUCH",
            "USER a\nRUN rm -rf /",
            "FROM busybox",
        ] {
            let err = config_with(&[bad]).unwrap_err().to_string();
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn changes_read_like_a_dockerfile() {
        let c = config_with(&[
            "ENV BASE=/opt/app",
            r#"WORKDIR $BASE/bin"#,
            r#"LABEL "quoted key"='single $BASE' other=a\ b"#,
            "STOPSIGNAL SIGINT",
            "EXPOSE 8000-8001/tcp",
            r#"VOLUME ["/data", "/logs"]"#,
        ])
        .unwrap();
        assert_eq!(c.env().clone().unwrap(), ["BASE=/opt/app"]);
        assert_eq!(c.working_dir().as_deref(), Some("/opt/app/bin"));
        let labels = c.labels().clone().unwrap();
        assert_eq!(labels["quoted key"], "single $BASE");
        assert_eq!(labels["other"], "a b");
        assert_eq!(c.stop_signal().as_deref(), Some("SIGINT"));
        assert_eq!(c.exposed_ports().clone().unwrap(), ["8000/tcp", "8001/tcp"]);
        assert_eq!(c.volumes().clone().unwrap(), ["/data", "/logs"]);
        let with_path = config_with(&["ENV PATH=/x:/y"]).unwrap();
        assert_eq!(with_path.env().clone().unwrap(), ["PATH=/x:/y"]);
    }
}
