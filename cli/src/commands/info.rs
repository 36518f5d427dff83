//! `kiln info`: what this kiln sees, as `docker info` lists it: containers
//! by state, images, the store, the kernel's cgroup setup, networks.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_store::Store;
use serde_json::json;

use crate::containers::Status;
use crate::ExitStatus;

// Arguments of `kiln info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format: text (default) or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn run(store: &Store, args: &InfoArgs) -> Result<ExitStatus> {
    let root = store.root();
    let containers = super::run::containers_of(root).list()?;
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    for c in &containers {
        let state = c.state().unwrap_or_default().effective();
        match state.status {
            Status::Running if state.paused => paused += 1,
            Status::Running => running += 1,
            _ => stopped += 1,
        }
    }
    let images = store.images()?.len();
    let cgroup = match kiln_runner::cgroup::detect() {
        kiln_runner::cgroup::CgroupVersion::V1 => "1",
        kiln_runner::cgroup::CgroupVersion::V2 => "2",
    };
    let networks: Vec<String> = crate::containers::net::definitions(root)
        .list()
        .map(|l| l.into_iter().map(|n| n.name).collect())
        .unwrap_or_default();
    let (arch, os) = kiln_store::host_platform();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let record = json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": "overlay",
        "KilnRootDir": root,
        "CgroupVersion": cgroup,
        "KernelVersion": kernel(),
        "OperatingSystem": os.to_string(),
        "Architecture": arch.to_string(),
        "NCPU": cpus,
        "Networks": networks,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
    });
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        writeln!(out, "{record}")?;
        return Ok(ExitStatus::SUCCESS);
    }
    writeln!(out, "Containers: {}", containers.len())?;
    writeln!(out, " Running: {running}")?;
    writeln!(out, " Paused: {paused}")?;
    writeln!(out, " Stopped: {stopped}")?;
    writeln!(out, "Images: {images}")?;
    writeln!(out, "Server Version: kiln {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "Storage Driver: overlay")?;
    writeln!(out, "Kiln Root Dir: {}", root.display())?;
    writeln!(out, "Cgroup Version: {cgroup}")?;
    writeln!(out, "Networks: {}", networks.join(" "))?;
    writeln!(out, "Kernel Version: {}", kernel())?;
    writeln!(out, "OSType: {os}")?;
    writeln!(out, "Architecture: {arch}")?;
    writeln!(out, "CPUs: {cpus}")?;
    Ok(ExitStatus::SUCCESS)
}
