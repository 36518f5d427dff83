//! docker's management commands: `kiln container ls|rm|prune|...` and
//! `kiln image ls|rm|prune|...` name the same commands as the short forms
//! (`kiln ps`, `kiln rmi`, ...), plus `container prune`, which has no short
//! form.

use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::*;
use crate::args::Command;
use crate::output::human_size;
use crate::ExitStatus;

// Arguments of `kiln container`.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    pub command: ContainerCommand,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers (as `kiln ps`).
    #[command(visible_aliases = ["list", "ps"])]
    Ls(ps::PsArgs),
    /// Create a container from an image and start it.
    Run(run::RunArgs),
    /// Create a container without starting it.
    Create(run::CreateArgs),
    /// Start containers.
    Start(start::StartArgs),
    /// Stop running containers.
    Stop(stop::StopArgs),
    /// Stop and start containers again.
    Restart(stop::StopArgs),
    /// Send a signal to running containers.
    Kill(kill::KillArgs),
    /// Remove containers.
    #[command(visible_alias = "remove")]
    Rm(rm::RmArgs),
    /// Remove every stopped container.
    Prune(ContainerPruneArgs),
    /// Freeze every process of running containers.
    Pause(pause::PauseArgs),
    /// Thaw paused containers.
    Unpause(pause::PauseArgs),
    /// Give a container another name.
    Rename(rename::RenameArgs),
    /// Wait for containers to exit.
    Wait(wait::WaitArgs),
    /// Print a container's output.
    Logs(logs::LogsArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Attach to a running container.
    Attach(attach::AttachArgs),
    /// Show a container's record as JSON.
    Inspect(inspect::InspectArgs),
    /// Show the processes of a running container.
    Top(top::TopArgs),
    /// Show containers' resource use.
    Stats(stats::StatsArgs),
    /// List a container's published ports.
    Port(network::PortArgs),
    /// Copy files between a container and the host.
    Cp(cp::CpArgs),
    /// List the files a container changed.
    Diff(export::DiffArgs),
    /// Write a container's file system as a tar.
    Export(export::ExportArgs),
    /// Make an image from a container's changes.
    Commit(commit::CommitArgs),
}

/// Arguments of `kiln container prune`.
#[derive(Debug, Args)]
pub struct ContainerPruneArgs {
    /// Do not ask for confirmation (kiln never asks; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

// Arguments of `kiln image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images (as `kiln images`).
    #[command(visible_alias = "list")]
    Ls(images::ImagesArgs),
    /// Remove images.
    #[command(visible_alias = "remove")]
    Rm(rmi::RmiArgs),
    /// Remove untagged images (-a: every image no container uses).
    Prune(system::PruneArgs),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Show an image's history.
    History(history::HistoryArgs),
    /// Show an image's record as JSON.
    Inspect(inspect::InspectArgs),
    /// Give an image another name.
    Tag(tag::TagArgs),
    /// Download an image.
    Pull(pull::PullArgs),
    /// Upload an image.
    Push(push::PushArgs),
    /// Write images to a tar archive.
    Save(save::SaveArgs),
    /// Load images from a tar archive.
    Load(load::LoadArgs),
    /// Make a one-layer image from a root filesystem.
    Import(import::ImportArgs),
}

impl Command {
    /// The short command a management command names (`container ls` is
    /// `ps`); `container prune`, which only exists here, stays as it is.
    pub fn flatten(self) -> Command {
        match self {
            Command::Container(ContainerArgs { command }) => match command {
                ContainerCommand::Ls(a) => Command::Ps(a),
                ContainerCommand::Run(a) => Command::Run(a),
                ContainerCommand::Create(a) => Command::Create(a),
                ContainerCommand::Start(a) => Command::Start(a),
                ContainerCommand::Stop(a) => Command::Stop(a),
                ContainerCommand::Restart(a) => Command::Restart(a),
                ContainerCommand::Kill(a) => Command::Kill(a),
                ContainerCommand::Rm(a) => Command::Rm(a),
                ContainerCommand::Rename(a) => Command::Rename(a),
                ContainerCommand::Pause(a) => Command::Pause(a),
                ContainerCommand::Unpause(a) => Command::Unpause(a),
                ContainerCommand::Wait(a) => Command::Wait(a),
                ContainerCommand::Logs(a) => Command::Logs(a),
                ContainerCommand::Exec(a) => Command::Exec(a),
                ContainerCommand::Attach(a) => Command::Attach(a),
                ContainerCommand::Inspect(a) => Command::Inspect(a),
                ContainerCommand::Top(a) => Command::Top(a),
                ContainerCommand::Stats(a) => Command::Stats(a),
                ContainerCommand::Port(a) => Command::Port(a),
                ContainerCommand::Cp(a) => Command::Cp(a),
                ContainerCommand::Diff(a) => Command::Diff(a),
                ContainerCommand::Export(a) => Command::Export(a),
                ContainerCommand::Commit(a) => Command::Commit(a),
                prune @ ContainerCommand::Prune(_) => {
                    Command::Container(ContainerArgs { command: prune })
                }
            },
            Command::Image(ImageArgs { command }) => match command {
                ImageCommand::Ls(a) => Command::Images(a),
                ImageCommand::Rm(a) => Command::Rmi(a),
                ImageCommand::Prune(a) => Command::System(system::SystemArgs {
                    command: system::SystemCommand::Prune(a),
                }),
                ImageCommand::Build(a) => Command::Build(a),
                ImageCommand::History(a) => Command::History(a),
                ImageCommand::Inspect(a) => Command::Inspect(a),
                ImageCommand::Tag(a) => Command::Tag(a),
                ImageCommand::Pull(a) => Command::Pull(a),
                ImageCommand::Push(a) => Command::Push(a),
                ImageCommand::Save(a) => Command::Save(a),
                ImageCommand::Load(a) => Command::Load(a),
                ImageCommand::Import(a) => Command::Import(a),
            },
            other => other,
        }
    }
}

/// Bytes of the regular files below `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// `kiln container prune`: removes every container that is not running
/// (their writable layers; volumes stay), as docker does.
pub fn container_prune(root: &Path, _args: &ContainerPruneArgs) -> Result<ExitStatus> {
    let _ = kiln_runner::network::reap();
    let containers = run::containers_of(root);
    let _lock = containers.lock()?;
    let mut removed = Vec::new();
    let mut reclaimed = 0;
    for c in containers.list()? {
        if c.state()?.effective().is_alive() {
            continue;
        }
        let bytes = tree_bytes(&c.dir.join("upper"));
        containers.remove(&c)?;
        reclaimed += bytes;
        removed.push(c.record.id.clone());
    }
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(ExitStatus::SUCCESS)
}
