//! `kiln wait`: block until containers exit, print their exit codes.

use anyhow::Result;
use clap::Args;

use crate::containers::Status;
use crate::ExitStatus;

// Arguments of `kiln wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Containers: names or ids.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(root: &std::path::Path, args: &WaitArgs) -> Result<ExitStatus> {
    let containers = super::run::containers_of(root);
    for given in &args.containers {
        let container = containers.find(given)?;
        let state = loop {
            let state = container.wait_stopped(None)?.unwrap_or_default();
            // A created container counts as running for wait: docker waits for its exit.
            if state.status != Status::Created {
                break state;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // Nobody saw the exit (the monitor was killed): docker reports 255 then.
        println!("{}", state.exit_code.unwrap_or(255));
    }
    Ok(ExitStatus::SUCCESS)
}
