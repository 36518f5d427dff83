//! What compiling one stage tracks: its file system so far, its image
//! config, its ARGs, and the variables the next instruction may read.

use std::rc::Rc;

use crate::dockerfile::instructions::CommandLine;
use crate::dockerfile::platform::Platform;
use crate::graph::image::{History, ImageConfig};
use crate::graph::ops::NodeId;

const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// One stage being compiled.
pub(super) struct StageState {
    pub(super) root: Option<NodeId>,
    pub(super) config: ImageConfig,
    pub(super) platform: Platform,
    /// Declared ARGs of this stage with their values (None: no value).
    pub(super) args: Vec<(String, Option<String>)>,
    /// ARG values of the stage this one is FROM (and its own parents):
    /// visible to expansion and RUN, below this stage's ARGs and ENV.
    pub(super) inherited: Vec<(String, String)>,
    pub(super) cmd_set: bool,
    /// Cache of [`StageState::scope`].
    pub(super) scope: Option<Rc<Scope>>,
    pub(super) label: String,
    pub(super) step: usize,
    pub(super) steps: usize,
}

impl StageState {
    /// Variables for expansion: ARG values, then ENV (ENV wins).
    /// The variables and declared ARG names visible to the next
    /// instruction; rebuilt only after ENV or ARG changed them.
    pub(super) fn scope(&mut self) -> Rc<Scope> {
        if let Some(scope) = &self.scope {
            return scope.clone();
        }
        let scope = Rc::new(Scope {
            env: self.env(),
            declared: self.args.iter().map(|(k, _)| k.clone()).collect(),
        });
        self.scope = Some(scope.clone());
        scope
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.inherited.clone();
        env.extend(
            self.args
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))),
        );
        env.extend(self.config.env.iter().map(|e| split_env(e)));
        env
    }

    pub(super) fn env_value(&self, key: &str) -> Option<String> {
        self.config
            .env
            .iter()
            .rev()
            .find(|e| env_key(e) == key)
            .map(|e| e[key.len()..].trim_start_matches('=').to_string())
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        self.scope = None;
        let entry = format!("{key}={value}");
        match self.config.env.iter().position(|e| env_key(e) == key) {
            Some(i) => self.config.env[i] = entry,
            None => self.config.env.push(entry),
        }
    }

    pub(super) fn shell(&self) -> Vec<String> {
        self.config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }

    pub(super) fn with_shell(&self, command: &CommandLine) -> Vec<String> {
        match command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => {
                let mut args = self.shell();
                args.push(text.clone());
                args
            }
        }
    }

    pub(super) fn history(&mut self, created_by: String, empty_layer: bool) {
        self.config.history.push(History {
            created: None,
            created_by,
            comment: HISTORY_COMMENT.to_string(),
            empty_layer,
        });
    }

    pub(super) fn workdir(&self) -> String {
        if self.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            self.config.working_dir.clone()
        }
    }
}

/// The key of a `KEY=value` entry.
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// What one instruction may read: variables (ARG values, then ENV, so ENV
/// wins) and the ARG names declared so far.
pub(super) struct Scope {
    pub(super) env: Vec<(String, String)>,
    pub(super) declared: Vec<String>,
}

impl Scope {
    pub(super) fn is_declared(&self, name: &str) -> bool {
        self.declared.iter().any(|d| d == name)
    }
}

fn split_env(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (entry.to_string(), String::new()),
    }
}
