//! Progress events of a build; the CLI renders them (plain lines like
//! BuildKit's `--progress plain`, or JSON lines).

use std::time::Duration;

/// One thing that happened to a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEvent {
    /// The step started; `name` is its description.
    Started {
        /// `[build 2/3] RUN make`.
        name: String,
    },
    /// The step's result came from the cache.
    Cached,
    /// The step was not in the cache, and why (`src/main.rs changed`).
    Miss {
        /// In words.
        reason: String,
    },
    /// A line the step printed (RUN output), with the time since it started.
    Log {
        /// Time since the step started.
        elapsed: Duration,
        /// The line, without its newline.
        line: String,
    },
    /// The step finished.
    Done {
        /// How long it took.
        elapsed: Duration,
    },
    /// The step failed.
    Failed {
        /// The error, in one line.
        message: String,
        /// How long it ran.
        elapsed: Duration,
    },
}

/// Receives events as they happen, from any thread.
pub trait Progress: Send + Sync {
    /// Step `step` (1-based, stable for one graph) had `event`.
    fn event(&self, step: usize, event: StepEvent);
}

/// A [`Progress`] that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _step: usize, _event: StepEvent) {}
}
