//! `kiln inspect`: an image's record as JSON.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::Store;
use serde_json::json;

use crate::ExitStatus;

// Arguments of `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: names or ids.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(root: &std::path::Path, args: &InspectArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    let mut store: Option<Store> = None;
    let mut records = Vec::new();
    for given in &args.names {
        // Containers first, as docker does; then images.
        if let Some(container) = containers.try_find(given)? {
            records.push(container_record(&container)?);
            continue;
        }
        if store.is_none() {
            store = Some(
                Store::open(root)
                    .with_context(|| format!("opening the store at {}", root.display()))?,
            );
        }
        let store = store.as_ref().expect("opened above");
        let image = crate::commands::find_image(store, given)?;
        let config = serde_json::to_value(&image.config)?;
        let repo_tags: Vec<&str> = image
            .names
            .iter()
            .map(|n| kiln_store::familiar_name(n))
            .collect();
        records.push(json!({
            "Id": image.id().to_string(),
            "RepoTags": repo_tags,
            "ManifestDigest": image.manifest_digest.to_string(),
            "Target": image.target,
            "Created": image.config.created(),
            "Architecture": config.get("architecture"),
            "Os": config.get("os"),
            "Config": config.get("config"),
            "RootFS": config.get("rootfs"),
            "History": config.get("history"),
            "Layers": image.manifest.layers(),
            "Size": store.unpacked_size(&image),
        }));
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &records)?;
    writeln!(out)?;
    Ok(ExitStatus::SUCCESS)
}

fn container_record(container: &crate::containers::Container) -> Result<serde_json::Value> {
    let r = &container.record;
    let state = container.state()?.effective();
    let process = r.spec.process().as_ref();
    Ok(json!({
        "Id": r.id,
        "Name": format!("/{}", r.name),
        "Created": r.created,
        "Path": r.command().first(),
        "Args": r.command().get(1..),
        "State": {
            "Status": state.docker_status(),
            "Running": state.status == crate::containers::Status::Running,
            "Paused": state.paused && state.is_alive(),
            "Restarting": state.is_restarting(),
            "Pid": if state.status == crate::containers::Status::Running { state.pid } else { 0 },
            "ExitCode": state.exit_code,
            "OOMKilled": state.oom_killed,
            "Error": state.error,
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
        },
        "Image": r.image_id,
        "ImageName": r.image,
        "ImageManifestDigest": r.image_digest,
        "LogPath": container.log_path(),
        "RestartCount": state.restart_count,
        "Config": {
            "Hostname": r.spec.hostname(),
            "User": process.map(|p| format!("{}:{}", p.user().uid(), p.user().gid())),
            "Env": process.and_then(|p| p.env().clone()),
            "Cmd": r.command(),
            "WorkingDir": process.map(|p| p.cwd().clone()),
            "Tty": r.tty(),
            "StopSignal": r.stop_signal,
            "StopTimeout": r.stop_timeout.map(|t| if t == u64::MAX { -1 } else { t as i64 }),
            "Labels": r.labels,
        },
        "Mounts": r.spec.mounts(),
        "Volumes": r.volumes,
        "HostConfig": {
            "AutoRemove": r.auto_remove,
            "RestartPolicy": {
                "Name": if r.restart.name.is_empty() { "no" } else { r.restart.name.as_str() },
                "MaximumRetryCount": r.restart.max_retries,
            },
            "Init": r.init,
            "NetworkMode": r.net.mode,
            "Dns": r.net.dns,
            "ExtraHosts": r.net.add_hosts.iter().map(|(n, a)| format!("{n}:{a}")).collect::<Vec<_>>(),
        },
        "NetworkSettings": {
            "Networks": state.addresses.iter().map(|(n, a)| (n.clone(), json!({ "IPAddress": a, "Aliases": r.net.aliases })))
                .collect::<serde_json::Map<_, _>>(),
            "Ports": state.ports.iter().map(|p| json!({
                "ContainerPort": format!("{}/{}", p.container_port, p.proto),
                "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                "HostPort": p.host_port.to_string(),
            })).collect::<Vec<_>>(),
        },
        "Spec": crate::containers::sorted_capabilities(serde_json::to_value(&r.spec)?),
    }))
}
