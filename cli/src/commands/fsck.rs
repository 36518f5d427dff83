//! `kiln fsck`: check the whole store; exit 1 on any problem.

use anyhow::Result;
use clap::Args;
use kiln_store::Store;

use crate::ExitStatus;

// Arguments of `kiln fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {}

pub fn run(store: &Store, _args: &FsckArgs) -> Result<ExitStatus> {
    let report = store.fsck()?;
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "checked {} blobs, {} images, {} snapshots: {} problem{}",
        report.blobs_checked,
        report.images_checked,
        report.snapshots_checked,
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" }
    );
    Ok(if report.problems.is_empty() {
        ExitStatus::SUCCESS
    } else {
        ExitStatus::FAILURE
    })
}
