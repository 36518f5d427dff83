//! What the user typed: clap derive structs for every command.
//!
//! Commands whose arguments are large keep their struct next to their code in
//! `commands/<name>.rs`; this file names them all.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;

/// kiln builds container images from Dockerfiles, runs them, and moves them
/// to and from OCI registries.
#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Store root (an OCI image layout plus kiln's metadata).
    #[arg(
        long,
        global = true,
        env = "KILN_ROOT",
        default_value = "/var/lib/kiln"
    )]
    pub root: PathBuf,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, env = "KILN_LOG", default_value = "warn")]
    pub log_level: String,

    /// A registry (`host[:port]`) that may be reached over plain HTTP or
    /// with unverified TLS; repeatable. Also env KILN_INSECURE_REGISTRIES
    /// (comma-separated). Loopback registries may always use plain HTTP.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Directories holding `HOST:PORT/ca.crt` files, instead of
    /// /etc/kiln/certs.d and /etc/docker/certs.d (for tests).
    #[arg(
        long = "certs-dir",
        global = true,
        hide = true,
        env = "KILN_CERTS_DIR",
        value_delimiter = ':'
    )]
    pub certs_dir: Vec<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Each command's arguments are defined only when that command is parsed
/// (or its help shown): defining all of them cost most of `kiln`'s start.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(commands::build::BuildArgs),
    /// Manage the build cache: disk usage, pruning.
    Builder(commands::builder::BuilderArgs),
    /// Make a one-layer image from a root filesystem tar or directory.
    Import(commands::import::ImportArgs),
    /// Show an image's history.
    History(commands::history::HistoryArgs),
    /// List images.
    Images(commands::images::ImagesArgs),
    /// Give an image another name.
    Tag(commands::tag::TagArgs),
    /// Remove images.
    Rmi(commands::rmi::RmiArgs),
    /// Show a container's or an image's record as JSON.
    Inspect(commands::inspect::InspectArgs),
    /// Write images to a tar archive (docker-archive and OCI layout in one).
    Save(commands::save::SaveArgs),
    /// Load images from a docker-archive or OCI archive tar.
    Load(commands::load::LoadArgs),
    /// Download an image from a registry.
    Pull(commands::pull::PullArgs),
    /// Upload an image to a registry.
    Push(commands::push::PushArgs),
    /// Log in to a registry.
    Login(commands::login::LoginArgs),
    /// Log out from a registry.
    Logout(commands::login::LogoutArgs),
    /// Search a registry's repositories.
    Search(commands::search::SearchArgs),
    /// Manage kiln's store: disk usage, pruning.
    System(commands::system::SystemArgs),
    /// Show what this kiln sees: containers, images, store, cgroups, networks.
    Info(commands::info::InfoArgs),
    /// Check every blob, image and snapshot in the store.
    Fsck(commands::fsck::FsckArgs),
    /// Create a container from an image and start it.
    Run(commands::run::RunArgs),
    /// Create a container without starting it.
    Create(commands::run::CreateArgs),
    /// Start containers in the background.
    Start(commands::start::StartArgs),
    /// Stop running containers (stop signal, then SIGKILL).
    Stop(commands::stop::StopArgs),
    /// Stop and start containers again.
    Restart(commands::stop::StopArgs),
    /// Send a signal to running containers.
    Kill(commands::kill::KillArgs),
    /// Freeze every process of running containers.
    Pause(commands::pause::PauseArgs),
    /// Thaw paused containers.
    Unpause(commands::pause::PauseArgs),
    /// Give a container another name.
    Rename(commands::rename::RenameArgs),
    /// Remove containers.
    Rm(commands::rm::RmArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(commands::wait::WaitArgs),
    /// List containers.
    Ps(commands::ps::PsArgs),
    /// Print a container's output.
    Logs(commands::logs::LogsArgs),
    /// Run a command in a running container.
    Exec(commands::exec::ExecArgs),
    /// Show containers' CPU, memory, network and block I/O, and processes.
    Stats(commands::stats::StatsArgs),
    /// Show the processes of a running container.
    Top(commands::top::TopArgs),
    /// Make an image from a container's changes.
    Commit(commands::commit::CommitArgs),
    /// Manage named volumes.
    Volume(commands::volume::VolumeArgs),
    /// Manage networks.
    Network(commands::network::NetworkArgs),
    /// List a container's published ports.
    Port(commands::network::PortArgs),
    /// Copy files between a container and the host.
    Cp(commands::cp::CpArgs),
    /// Write a container's file system as a tar.
    Export(commands::export::ExportArgs),
    /// List the files a container added, changed or deleted.
    Diff(commands::export::DiffArgs),
    /// Attach this terminal (or stdio) to a running container.
    Attach(commands::attach::AttachArgs),
    /// Manage containers (docker's `container` commands).
    Container(commands::groups::ContainerArgs),
    /// Manage images (docker's `image` commands).
    Image(commands::groups::ImageArgs),
    /// Per-container monitor of a detached container (internal).
    #[command(name = "container-monitor", hide = true)]
    ContainerMonitor(commands::monitor::MonitorArgs),
    /// Low-level OCI runtime: run a bundle (config.json + rootfs), as runc does.
    #[command(hide = true)]
    Runtime(commands::runtime::RuntimeArgs),
    /// Print version information.
    Version,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// The command tree with every deferred command defined, as it was
    /// before definitions were deferred.
    fn eager() -> clap::Command {
        let mut cmd = Cli::command();
        cmd.build();
        cmd
    }

    #[test]
    fn the_command_tree_is_valid() {
        Cli::command().debug_assert();
    }

    /// What a command shows of itself in its parent's list before its
    /// arguments are defined, recursively.
    fn listing(cmd: &clap::Command) -> Vec<String> {
        cmd.get_subcommands()
            .flat_map(|sub| {
                let mut lines = vec![format!(
                    "{} {:?} {:?} {:?} {}",
                    sub.get_name(),
                    sub.get_about().map(|s| s.to_string()),
                    sub.get_long_about().map(|s| s.to_string()),
                    sub.get_visible_aliases().collect::<Vec<_>>(),
                    sub.is_hide_set()
                )];
                lines.extend(listing(sub).into_iter().map(|l| format!("  {l}")));
                lines
            })
            .collect()
    }

    /// Defining a command's arguments later leaves what its parent lists
    /// about it (name, about, aliases) as it was.
    #[test]
    fn deferred_commands_list_as_defined() {
        let mut lazy = Cli::command();
        let top: Vec<String> = listing(&lazy)
            .into_iter()
            .filter(|l| !l.starts_with(' '))
            .collect();
        lazy.build();
        let built: Vec<String> = listing(&lazy)
            .into_iter()
            .filter(|l| !l.starts_with(' '))
            .collect();
        assert_eq!(top, built);
        assert!(top.len() > 40, "{top:?}");
    }

    /// Parsing through the deferred tree gives what the fully defined
    /// tree gives: the same values, and byte for byte the same help,
    /// version and error text with the same exit code.
    #[test]
    fn deferred_parsing_matches_the_full_tree() {
        let cases: &[&[&str]] = &[
            &["kiln", "--version"],
            &["kiln", "-V"],
            &["kiln", "--help"],
            &["kiln"],
            &["kiln", "bogus"],
            &["kiln", "help"],
            &["kiln", "--root", "/r", "run", "--rm", "busybox", "true"],
            &[
                "kiln", "run", "--root", "/r", "-it", "busybox", "sh", "-c", "x",
            ],
            &["kiln", "--debug", "images"],
            &["kiln", "run"],
            &["kiln", "run", "--help"],
            &["kiln", "run", "-h"],
            &["kiln", "run", "--memory"],
            &["kiln", "run", "--no-such-flag", "busybox"],
            &["kiln", "images", "--version"],
            &["kiln", "images", "a", "b", "c"],
            &["kiln", "build", "-t", "x:1", "."],
            &["kiln", "build", "--no-such"],
            &["kiln", "container", "ls", "-a"],
            &["kiln", "container", "list", "--bogus"],
            &["kiln", "image", "--help"],
            &["kiln", "image", "ls", "--help"],
            &["kiln", "network", "create", "n1"],
            &["kiln", "volume"],
            &["kiln", "tag", "x"],
            &["kiln", "--root"],
            &["kiln", "ps", "--format", "{{.ID}}", "-q"],
            &["kiln", "version"],
        ];
        for args in cases {
            let lazy = Cli::command().try_get_matches_from(*args);
            let full = eager().try_get_matches_from(*args);
            match (lazy, full) {
                (Ok(lazy), Ok(full)) => {
                    let lazy = Cli::from_arg_matches(&lazy).map(|c| format!("{c:?}"));
                    let full = Cli::from_arg_matches(&full).map(|c| format!("{c:?}"));
                    match (lazy, full) {
                        (Ok(lazy), Ok(full)) => assert_eq!(lazy, full, "{args:?}"),
                        (Err(lazy), Err(full)) => {
                            assert_eq!(lazy.to_string(), full.to_string(), "{args:?}")
                        }
                        (lazy, full) => panic!("{args:?}: {lazy:?} vs {full:?}"),
                    }
                }
                (Err(lazy), Err(full)) => {
                    assert_eq!(lazy.kind(), full.kind(), "{args:?}");
                    assert_eq!(lazy.exit_code(), full.exit_code(), "{args:?}");
                    assert_eq!(
                        lazy.render().ansi().to_string(),
                        full.render().ansi().to_string(),
                        "{args:?}"
                    );
                }
                (lazy, full) => panic!("{args:?}: {lazy:?} vs {full:?}"),
            }
        }
    }
}
