//! Progress of pulls and pushes, as docker shows it: one line per layer
//! (`a1b2c3d4e5f6: Pull complete`). On a terminal each line is an indicatif
//! bar with bytes and speed; otherwise only status changes are printed, one
//! line each; with `-q` nothing is. The registry client reports
//! [`ProgressEvent`]s; this module draws them (STYLE.md: only `cli` draws).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_registry::{ProgressEvent, ProgressKind};

/// What the registry client calls for every transfer event.
pub type Callback = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars redrawn in place (stdout is a terminal).
    Bars,
    /// One line per status change.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines otherwise; nothing when `quiet`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// The words a transfer direction uses.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Pull,
    Push,
}

struct Line {
    /// The id shown (a pushed twin keeps its local layer's id).
    shown: String,
    status: String,
    bar: Option<ProgressBar>,
}

/// The progress display of one pull or push.
pub struct Progress {
    mode: Mode,
    direction: Direction,
    multi: Option<MultiProgress>,
    lines: Mutex<HashMap<String, Line>>,
    /// Set by [`Progress::finish`]: the bars are done, print below them.
    finished: AtomicBool,
    /// Draw on stderr instead of stdout (a pull inside another command).
    on_stderr: bool,
}

/// The 12-hex-digit id docker shows for a blob.
pub fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

impl Progress {
    /// A display in `mode` on stdout.
    pub fn new(mode: Mode, direction: Direction) -> Arc<Progress> {
        Progress::with_output(mode, direction, false)
    }

    /// A display in `mode` on stderr, for a pull that serves another
    /// command (`kiln build`), whose stdout carries its own result.
    pub fn on_stderr(mode: Mode, direction: Direction) -> Arc<Progress> {
        Progress::with_output(mode, direction, true)
    }

    fn with_output(mode: Mode, direction: Direction, on_stderr: bool) -> Arc<Progress> {
        let multi = (mode == Mode::Bars).then(|| {
            MultiProgress::with_draw_target(if on_stderr {
                ProgressDrawTarget::stderr_with_hz(10)
            } else {
                ProgressDrawTarget::stdout_with_hz(10)
            })
        });
        Arc::new(Progress {
            mode,
            direction,
            multi,
            lines: Mutex::new(HashMap::new()),
            finished: AtomicBool::new(false),
            on_stderr,
        })
    }

    /// Where lines are written.
    fn output(&self) -> Box<dyn Write> {
        if self.on_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    }

    /// A callback for [`kiln_registry::ClientBuilder::progress`].
    pub fn callback(self: &Arc<Self>) -> Callback {
        let me = Arc::clone(self);
        Arc::new(move |event| me.event(event))
    }

    /// Prints a line that is not about one layer (above the bars).
    pub fn println(&self, text: &str) {
        match (&self.multi, self.mode) {
            (_, Mode::Quiet) => {}
            (Some(multi), _) if !self.finished.load(Ordering::SeqCst) => {
                let _ = multi.println(text);
            }
            (_, _) => {
                let _ = writeln!(self.output(), "{text}");
            }
        }
    }

    /// Adds the line of a blob of `size` bytes with its first status.
    pub fn add(&self, digest: &str, size: u64, status: &str) {
        let id = short_id(digest);
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(waiting_style());
            bar.set_prefix(id.clone());
            bar.set_message(status.to_string());
            bar
        });
        if self.mode == Mode::Lines {
            let _ = writeln!(self.output(), "{id}: {status}");
        }
        let mut lines = self.lines.lock().expect("progress lock is never poisoned");
        lines.insert(
            id.clone(),
            Line {
                shown: id,
                status: status.to_string(),
                bar,
            },
        );
    }

    /// The line of blob `from` now follows blob `to` of `size` bytes (a
    /// local layer and the compressed twin that is pushed in its place).
    pub fn rename(&self, from: &str, to: &str, size: u64) {
        let mut lines = self.lines.lock().expect("progress lock is never poisoned");
        if let Some(line) = lines.remove(&short_id(from)) {
            if let Some(bar) = &line.bar {
                bar.set_length(size);
            }
            lines.insert(short_id(to), line);
        }
    }

    /// Sets a blob's status; `done` ends its bar.
    pub fn status(&self, digest: &str, status: &str, done: bool) {
        let id = short_id(digest);
        let mut lines = self.lines.lock().expect("progress lock is never poisoned");
        let Some(line) = lines.get_mut(&id) else {
            return;
        };
        if line.status == status {
            return;
        }
        line.status = status.to_string();
        match (&line.bar, self.mode) {
            (Some(bar), _) => {
                if done {
                    bar.set_style(waiting_style());
                    bar.finish_with_message(status.to_string());
                } else {
                    bar.set_message(status.to_string());
                }
            }
            (None, Mode::Lines) => {
                let _ = writeln!(self.output(), "{}: {status}", line.shown);
            }
            _ => {}
        }
    }

    /// One event from the registry client.
    fn event(&self, event: &ProgressEvent) {
        let digest = event.digest.to_string();
        match event.kind {
            ProgressKind::Download | ProgressKind::Upload => {
                if self.mode != Mode::Bars {
                    return;
                }
                let lines = self.lines.lock().expect("progress lock is never poisoned");
                if let Some(bar) = lines.get(&short_id(&digest)).and_then(|l| l.bar.as_ref()) {
                    if bar.position() == 0 && !bar.is_finished() {
                        bar.set_style(bytes_style());
                        bar.set_length(event.total);
                        bar.set_message(match self.direction {
                            Direction::Pull => "Downloading",
                            Direction::Push => "Pushing",
                        });
                        bar.enable_steady_tick(Duration::from_millis(200));
                    }
                    bar.set_position(event.bytes_done);
                }
            }
            ProgressKind::Retry => self.status(&digest, "Retrying", false),
            ProgressKind::Done => {
                if let Direction::Pull = self.direction {
                    self.status(&digest, "Download complete", false);
                }
            }
            ProgressKind::Exists | ProgressKind::Mounted => {}
        }
    }

    /// Ends every bar (after an error, bars stop where they were); later
    /// lines print below them.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        let lines = self.lines.lock().expect("progress lock is never poisoned");
        for line in lines.values() {
            if let Some(bar) = &line.bar {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
        // indicatif leaves the cursor at the end of the last bar.
        if self.multi.is_some() && !lines.is_empty() {
            let _ = writeln!(self.output());
        }
    }
}

fn waiting_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg}").expect("a valid progress template")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix}: {msg:<11} [{bar:30}] {bytes:>9}/{total_bytes:<9} {bytes_per_sec:>11}",
    )
    .expect("a valid progress template")
    .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_like_docker() {
        assert_eq!(
            short_id("sha256:0123456789abcdef0123456789abcdef"),
            "0123456789ab"
        );
        assert_eq!(short_id("abc"), "abc");
    }
}
