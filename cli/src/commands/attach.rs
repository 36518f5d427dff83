//! `kiln attach`: connect this terminal (or stdio) to a running container
//! through its monitor, until it exits or the detach keys are typed.

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::containers::attach;
use crate::ExitStatus;

// Arguments of `kiln attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not forward stdin.
    #[arg(long)]
    pub no_stdin: bool,
    /// Forward the signals kiln receives to the container (without a terminal).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    /// Keys that detach and leave the container running.
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    /// The container: name or id.
    pub container: String,
}

pub fn run(root: &std::path::Path, args: &AttachArgs) -> Result<ExitStatus> {
    let detach_keys = attach::parse_detach_keys(&args.detach_keys)?;
    let containers = super::run::containers_of(root);
    let container = containers.find(&args.container)?;
    let state = container.state()?.effective();
    if !state.is_alive() {
        bail!(
            "cannot attach to container {}: it is not running",
            args.container
        );
    }
    let record = &container.record;
    // As docker: stdin goes to a container made with -i (or to its terminal).
    let stdin = !args.no_stdin && (record.open_stdin || record.tty());
    let stream = attach::connect(&record.id, stdin)
        .with_context(|| format!("attaching to container {}", args.container))?;
    let options = attach::ClientOptions {
        stdin,
        tty: record.tty(),
        detach_keys,
        signal_pid: args.sig_proxy.then_some(state.pid),
    };
    let outcome = attach::session(stream, &options)?;
    super::run::attach_outcome(&container, outcome)
}
