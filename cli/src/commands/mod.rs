//! One module per subcommand; each exposes `run(...) -> anyhow::Result<ExitStatus>`.

pub mod attach;
pub mod build;
pub mod build_output;
pub mod build_run;
pub mod builder;
pub mod commit;
pub mod cp;
pub mod exec;
pub mod export;
pub mod fsck;
pub mod groups;
pub mod history;
pub mod images;
pub mod import;
pub mod info;
pub mod inspect;
pub mod kill;
pub mod load;
pub mod login;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod pause;
pub mod ps;
pub mod pull;
pub mod push;
pub mod rename;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod runtime;
pub mod save;
pub mod search;
pub mod start;
pub mod stats;
pub mod stop;
pub mod system;
pub mod tag;
pub mod top;
pub mod volume;
pub mod wait;

use anyhow::Result;
use kiln_store::{Image, Store};

/// Finds an image by the name or id a user typed.
pub fn find_image(store: &Store, given: &str) -> Result<Image> {
    if let Ok(name) = crate::names::normalize(given) {
        match store.find_image(&name) {
            Ok(image) => return Ok(image),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.find_image(given).map_err(|e| {
        if e.is_not_found() {
            anyhow::anyhow!("no such image: {given}")
        } else {
            e.into()
        }
    })
}
