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

#[derive(Debug, Subcommand)]
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
