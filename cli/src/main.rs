//! The `kiln` binary: parse, set up logging, dispatch, report.
#![forbid(unsafe_code)]

mod args;
mod build_progress;
mod commands;
mod containers;
mod names;
mod output;
mod progress;
mod settings;
mod transfer;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// What a command ends with: the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(pub u8);

impl ExitStatus {
    pub const SUCCESS: ExitStatus = ExitStatus(0);
    pub const FAILURE: ExitStatus = ExitStatus(1);
}

fn main() -> ExitCode {
    // Must run before anything starts a thread: the container set-up path
    // re-executes this binary and takes over here.
    kiln_runner::init_if_requested();
    let mut cli = args::Cli::parse();
    cli.command = cli.command.flatten();
    init_logging(&cli.log_level);
    let result = match &cli.command {
        args::Command::Build(a) => commands::build::run(&cli, a),
        args::Command::Runtime(a) => commands::runtime::run(&cli, a),
        args::Command::Builder(a) => with_store(&cli, |s| commands::builder::run(s, a)),
        args::Command::Import(a) => with_store(&cli, |s| commands::import::run(s, a)),
        args::Command::Images(a) => with_store(&cli, |s| commands::images::run(s, a)),
        args::Command::Tag(a) => with_store(&cli, |s| commands::tag::run(s, a)),
        args::Command::Rmi(a) => with_store(&cli, |s| commands::rmi::run(s, a)),
        args::Command::Inspect(a) => commands::inspect::run(&cli.root, a),
        args::Command::Save(a) => with_store(&cli, |s| commands::save::run(s, a)),
        args::Command::Load(a) => with_store(&cli, |s| commands::load::run(s, a)),
        args::Command::Pull(a) => with_store(&cli, |s| commands::pull::run(&cli, s, a)),
        args::Command::Push(a) => with_store(&cli, |s| commands::push::run(&cli, s, a)),
        args::Command::Login(a) => commands::login::run(&cli, a),
        args::Command::Logout(a) => commands::login::logout(&cli, a),
        args::Command::Search(a) => commands::search::run(&cli, a),
        args::Command::System(a) => with_store(&cli, |s| commands::system::run(s, a)),
        args::Command::Info(a) => with_store(&cli, |s| commands::info::run(s, a)),
        args::Command::Fsck(a) => with_store(&cli, |s| commands::fsck::run(s, a)),
        args::Command::Run(a) => {
            commands::run::run(&cli.root, &settings::RegistrySettings::from_cli(&cli), a)
        }
        args::Command::Create(a) => {
            commands::run::run_create(&cli.root, &settings::RegistrySettings::from_cli(&cli), a)
        }
        args::Command::Start(a) => commands::start::run(&cli.root, a),
        args::Command::Stop(a) => commands::stop::run(&cli.root, a),
        args::Command::Restart(a) => commands::stop::restart(&cli.root, a),
        args::Command::Kill(a) => commands::kill::run(&cli.root, a),
        args::Command::Pause(a) => commands::pause::pause(&cli.root, a),
        args::Command::Unpause(a) => commands::pause::unpause(&cli.root, a),
        args::Command::Rename(a) => commands::rename::run(&cli.root, a),
        args::Command::Rm(a) => commands::rm::run(&cli.root, a),
        args::Command::Wait(a) => commands::wait::run(&cli.root, a),
        args::Command::Ps(a) => commands::ps::run(&cli.root, a),
        args::Command::Logs(a) => commands::logs::run(&cli.root, a),
        args::Command::Exec(a) => commands::exec::run(&cli.root, a),
        args::Command::History(a) => with_store(&cli, |s| commands::history::run(s, a)),
        args::Command::Commit(a) => with_store(&cli, |s| commands::commit::run(s, a)),
        args::Command::Volume(a) => commands::volume::run(&cli.root, a),
        args::Command::Network(a) => commands::network::run(&cli.root, a),
        args::Command::Port(a) => commands::network::port(&cli.root, a),
        args::Command::Stats(a) => commands::stats::run(&cli.root, a),
        args::Command::Top(a) => commands::top::run(&cli.root, a),
        args::Command::Cp(a) => commands::cp::run(&cli.root, a),
        args::Command::Export(a) => commands::export::export(&cli.root, a),
        args::Command::Diff(a) => commands::export::diff(&cli.root, a),
        args::Command::Attach(a) => commands::attach::run(&cli.root, a),
        args::Command::Container(commands::groups::ContainerArgs {
            command: commands::groups::ContainerCommand::Prune(a),
        }) => commands::groups::container_prune(&cli.root, a),
        args::Command::Container(_) | args::Command::Image(_) => {
            unreachable!("flattened into the short commands")
        }
        args::Command::ContainerMonitor(a) => commands::monitor::run(&cli.root, a),
        args::Command::Version => {
            println!("kiln {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitStatus::SUCCESS)
        }
    };
    match result {
        Ok(status) => ExitCode::from(status.0),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "kiln: {err:#}");
            // docker: 125 when the engine itself fails a container command.
            let code = match &cli.command {
                args::Command::Run(_)
                | args::Command::Create(_)
                | args::Command::Start(_)
                | args::Command::Exec(_) => 125,
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}

/// Opens the store at `--root` and runs `f` on it.
fn with_store(
    cli: &args::Cli,
    f: impl FnOnce(&kiln_store::Store) -> anyhow::Result<ExitStatus>,
) -> anyhow::Result<ExitStatus> {
    let store = kiln_store::Store::open(&cli.root)
        .with_context(|| format!("opening the store at {}", cli.root.display()))?;
    f(&store)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

/// A closed stdout pipe (`kiln images | head -1`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
