//! Progress of `kiln build`, drawn from the solver's [`StepEvent`]s:
//! BuildKit-style lines (`plain`), JSON lines (`json`), nothing (`quiet`),
//! or a live terminal view (`tty`) like BuildKit's: running steps with
//! their timers and the last lines of their output, finished steps
//! collapsed to one line each with `CACHED` or their time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln_builder::{Progress, StepEvent};

/// How build progress is shown (`--progress`, `auto` resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Tty,
    Plain,
    Json,
    Quiet,
}

/// Lines of a running step's output kept on screen.
const TAIL_LINES: usize = 6;
/// Lines of a running step's output kept to show in full if it fails.
const KEPT_LINES: usize = 10_000;

/// Renders a build's events on stderr.
pub struct BuildProgress {
    style: Style,
    cached: Mutex<HashSet<usize>>,
    tty: Option<Tty>,
    /// When the running export started (`json`: its events are step 0's).
    export_started: Mutex<Option<Instant>>,
}

struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    steps: Mutex<HashMap<usize, Running>>,
    total: usize,
    done: AtomicUsize,
    /// Failed steps: name and all the output kept, shown by `finish`.
    failures: Mutex<Vec<(String, Vec<String>)>>,
    /// The export's pseudo-step, when it runs, and its lines (shown
    /// below its own line when it is done).
    export: Mutex<Option<(ProgressBar, Instant, Vec<String>)>>,
    /// Finished exports, printed by `finish` below the total, so the view
    /// ends with the image id, as BuildKit's does.
    exported: Mutex<Vec<String>>,
}

struct Running {
    bar: ProgressBar,
    name: String,
    cached: bool,
    tail: VecDeque<String>,
    tail_bars: Vec<ProgressBar>,
    /// The step's output so far (the last [`KEPT_LINES`]).
    log: VecDeque<String>,
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template(" => {wide_msg} {secs:>6}")
        .expect("a valid progress template")
        .with_key(
            "secs",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", seconds(state.elapsed()));
            },
        )
}

fn header_style(total: usize) -> ProgressStyle {
    ProgressStyle::with_template("[+] Building {secs} ({pos}/{len})")
        .expect("a valid progress template")
        .with_key(
            "secs",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", seconds(state.elapsed()));
            },
        )
        .with_key(
            "len",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{total}");
            },
        )
}

fn plain_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid progress template")
}

impl BuildProgress {
    /// A display in `style`; `total` is the number of steps (for `tty`).
    pub fn new(style: Style, total: usize) -> BuildProgress {
        let tty = (style == Style::Tty).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            // The cursor is hidden while the view redraws and shown again
            // by `finish` (or on drop, after an error).
            let _ = write!(std::io::stderr(), "\x1b[?25l");
            let header = multi.add(ProgressBar::new(total as u64));
            header.set_style(header_style(total));
            header.enable_steady_tick(Duration::from_millis(100));
            Tty {
                multi,
                header,
                steps: Mutex::new(HashMap::new()),
                failures: Mutex::new(Vec::new()),
                total,
                done: AtomicUsize::new(0),
                export: Mutex::new(None),
                exported: Mutex::new(Vec::new()),
            }
        });
        BuildProgress {
            style,
            cached: Mutex::new(HashSet::new()),
            tty,
            export_started: Mutex::new(None),
        }
    }

    /// Whether failed steps' output is shown by [`BuildProgress::finish`]
    /// (the live view), so the caller need not show it again.
    pub fn shows_failures(&self) -> bool {
        self.tty.is_some()
    }

    /// The export after the solve: its title (`exporting to image`).
    pub fn export_start(&self, title: &str) {
        match (self.style, &self.tty) {
            (Style::Tty, Some(tty)) => {
                let bar = tty.multi.add(ProgressBar::new_spinner());
                bar.set_style(running_style());
                bar.set_message(title.to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                *tty.export.lock().expect("not poisoned") = Some((bar, Instant::now(), Vec::new()));
            }
            (Style::Plain, _) => {
                let _ = writeln!(std::io::stderr(), "\n#0 {title}");
            }
            (Style::Json, _) => {
                *self.export_started.lock().expect("not poisoned") = Some(Instant::now());
                self.event(
                    0,
                    StepEvent::Started {
                        name: title.to_string(),
                    },
                );
            }
            _ => {}
        }
    }

    /// One line of the export (`writing image sha256:... done`).
    pub fn export_line(&self, line: &str) {
        match (self.style, &self.tty) {
            (Style::Tty, Some(tty)) => {
                if let Some((_, _, lines)) = tty.export.lock().expect("not poisoned").as_mut() {
                    lines.push(format!(" => => {line}"));
                }
            }
            (Style::Plain, _) => {
                let _ = writeln!(std::io::stderr(), "#0 {line}");
            }
            (Style::Json, _) => {
                let started = *self.export_started.lock().expect("not poisoned");
                self.event(
                    0,
                    StepEvent::Log {
                        elapsed: started.map(|s| s.elapsed()).unwrap_or_default(),
                        line: line.to_string(),
                    },
                );
            }
            _ => {}
        }
    }

    /// The export finished.
    pub fn export_done(&self) {
        match (self.style, &self.tty) {
            (Style::Tty, Some(tty)) => {
                if let Some((bar, started, lines)) = tty.export.lock().expect("not poisoned").take()
                {
                    let title = bar.message();
                    bar.finish_and_clear();
                    tty.multi.remove(&bar);
                    let mut text = done_line(&title, started.elapsed());
                    for line in lines {
                        text.push('\n');
                        text.push_str(&line);
                    }
                    tty.exported.lock().expect("not poisoned").push(text);
                }
            }
            (Style::Plain, _) => {
                let _ = writeln!(std::io::stderr(), "#0 DONE");
            }
            (Style::Json, _) => {
                let started = self.export_started.lock().expect("not poisoned").take();
                self.event(
                    0,
                    StepEvent::Done {
                        elapsed: started.map(|s| s.elapsed()).unwrap_or_default(),
                    },
                );
            }
            _ => {}
        }
    }

    /// Ends the live view: the total time, the exports, failed steps'
    /// output; shows the cursor again. Later output prints below it.
    pub fn finish(&self) {
        let Some(tty) = &self.tty else { return };
        if tty.header.is_finished() {
            return;
        }
        let mut steps = tty.steps.lock().expect("not poisoned");
        for (_, running) in steps.drain() {
            for bar in &running.tail_bars {
                bar.finish_and_clear();
            }
            running.bar.abandon();
        }
        drop(steps);
        if let Some((bar, _, _)) = tty.export.lock().expect("not poisoned").take() {
            bar.abandon();
        }
        let done = tty.done.load(Ordering::SeqCst);
        let elapsed = tty.header.elapsed();
        tty.header.finish_and_clear();
        let _ = tty.multi.clear();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "[+] Building {} ({done}/{}) FINISHED",
            seconds(elapsed),
            tty.total
        );
        for text in tty.exported.lock().expect("not poisoned").iter() {
            let _ = writeln!(err, "{text}");
        }
        // Failed steps with all their output, as BuildKit ends its view.
        let failures = tty.failures.lock().expect("not poisoned");
        for (name, log) in failures.iter().filter(|(_, log)| !log.is_empty()) {
            let _ = writeln!(err, "------\n > {name}:");
            for line in log {
                let _ = writeln!(err, "{line}");
            }
            let _ = writeln!(err, "------");
        }
        let _ = write!(err, "\x1b[?25h");
        let _ = err.flush();
    }

    fn tty_event(&self, tty: &Tty, step: usize, event: StepEvent) {
        let mut steps = tty.steps.lock().expect("not poisoned");
        match event {
            StepEvent::Started { name } => {
                let bar = tty.multi.add(ProgressBar::new_spinner());
                bar.set_style(running_style());
                bar.set_message(name.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                steps.insert(
                    step,
                    Running {
                        bar,
                        name,
                        cached: false,
                        tail: VecDeque::new(),
                        tail_bars: Vec::new(),
                        log: VecDeque::new(),
                    },
                );
            }
            StepEvent::Cached => {
                if let Some(r) = steps.get_mut(&step) {
                    r.cached = true;
                    r.bar.set_message(format!("CACHED {}", r.name));
                }
            }
            StepEvent::Miss { .. } => {}
            StepEvent::Log { line, .. } => {
                let Some(r) = steps.get_mut(&step) else {
                    return;
                };
                if r.tail.len() == TAIL_LINES {
                    r.tail.pop_front();
                }
                if r.log.len() == KEPT_LINES {
                    r.log.pop_front();
                }
                r.log.push_back(line.clone());
                r.tail.push_back(screen_text(&line));
                if r.tail_bars.len() < r.tail.len() {
                    let after = r.tail_bars.last().unwrap_or(&r.bar).clone();
                    let bar = tty.multi.insert_after(&after, ProgressBar::new_spinner());
                    bar.set_style(plain_style(" => => # {wide_msg}"));
                    r.tail_bars.push(bar);
                }
                for (bar, text) in r.tail_bars.iter().zip(&r.tail) {
                    bar.set_message(text.clone());
                }
            }
            StepEvent::Done { elapsed } | StepEvent::Failed { elapsed, .. } => {
                let failed = matches!(event, StepEvent::Failed { .. });
                let Some(r) = steps.remove(&step) else { return };
                for bar in &r.tail_bars {
                    bar.finish_and_clear();
                    tty.multi.remove(bar);
                }
                r.bar.finish_and_clear();
                tty.multi.remove(&r.bar);
                let label = if failed {
                    format!("ERROR {}", r.name)
                } else if r.cached {
                    format!("CACHED {}", r.name)
                } else {
                    r.name.clone()
                };
                let _ = tty.multi.println(done_line(&label, elapsed));
                if failed {
                    tty.failures
                        .lock()
                        .expect("not poisoned")
                        .push((r.name, r.log.into()));
                }
                if !failed {
                    tty.done.fetch_add(1, Ordering::SeqCst);
                    tty.header.inc(1);
                }
            }
        }
    }
}

/// `line` safe to draw in the view: what a carriage return left (the
/// last redraw of a progress line), tabs as spaces, no control bytes or
/// escape sequences (which would move the cursor under indicatif).
fn screen_text(line: &str) -> String {
    let last = line
        .trim_end_matches('\r')
        .rsplit('\r')
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(last.len());
    let mut chars = last.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push(' '),
            // CSI: ESC [ parameters final-byte.
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A finished step's one line: ` => NAME ... 1.2s` to the terminal width.
fn done_line(label: &str, elapsed: Duration) -> String {
    // One column short of the width: a full line would wrap on some terminals.
    let width = terminal_width().max(40) - 1;
    let time = seconds(elapsed);
    // ` => ` (4), a space and the time in 6 columns.
    let room = width.saturating_sub(4 + 1 + time.len().max(6));
    let mut label: String = label.chars().take(room).collect();
    let pad = room.saturating_sub(label.chars().count());
    label.push_str(&" ".repeat(pad));
    format!(" => {label} {time:>6}")
        .trim_end_matches(' ')
        .to_string()
}

fn terminal_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(80, |(_, cols)| usize::from(cols))
}

impl Drop for BuildProgress {
    fn drop(&mut self) {
        if self.tty.is_some() {
            let _ = write!(std::io::stderr(), "\x1b[?25h");
        }
    }
}

impl Progress for BuildProgress {
    fn event(&self, step: usize, event: StepEvent) {
        if let Some(tty) = &self.tty {
            self.tty_event(tty, step, event);
            return;
        }
        let mut err = std::io::stderr().lock();
        match self.style {
            Style::Quiet | Style::Tty => {}
            Style::Json => {
                let time = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let mut value = serde_json::json!({"time": time, "step": step});
                let fields = match &event {
                    StepEvent::Started { name } => {
                        serde_json::json!({"event": "started", "name": name})
                    }
                    StepEvent::Cached => serde_json::json!({"event": "cached"}),
                    StepEvent::Miss { reason } => {
                        serde_json::json!({"event": "miss", "reason": reason})
                    }
                    StepEvent::Log { elapsed, line } => {
                        serde_json::json!({"event": "log", "elapsed": elapsed.as_secs_f64(), "line": line})
                    }
                    StepEvent::Done { elapsed } => {
                        serde_json::json!({"event": "done", "elapsed": elapsed.as_secs_f64()})
                    }
                    StepEvent::Failed { message, elapsed } => serde_json::json!({
                        "event": "failed", "message": message, "elapsed": elapsed.as_secs_f64()}),
                };
                if let (Some(v), Some(f)) = (value.as_object_mut(), fields.as_object()) {
                    v.extend(f.clone());
                }
                let _ = writeln!(err, "{value}");
            }
            Style::Plain => {
                let _ = match event {
                    StepEvent::Started { name } => writeln!(err, "\n#{step} {name}"),
                    StepEvent::Cached => {
                        self.cached.lock().expect("not poisoned").insert(step);
                        writeln!(err, "#{step} CACHED")
                    }
                    StepEvent::Miss { reason } => writeln!(err, "#{step} cache miss: {reason}"),
                    StepEvent::Log { elapsed, line } => {
                        writeln!(err, "#{step} {:.3} {line}", elapsed.as_secs_f64())
                    }
                    StepEvent::Done { elapsed } => {
                        if self.cached.lock().expect("not poisoned").contains(&step) {
                            Ok(())
                        } else {
                            writeln!(err, "#{step} DONE {}", seconds(elapsed))
                        }
                    }
                    StepEvent::Failed { message, elapsed } => {
                        writeln!(err, "#{step} ERROR: {message} ({})", seconds(elapsed))
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_are_made_safe_to_draw() {
        assert_eq!(screen_text("a\tb"), "a b");
        assert_eq!(screen_text("10%\r50%\r100%"), "100%");
        assert_eq!(screen_text("\x1b[1;31mred\x1b[0m done\x07"), "red done");
        assert_eq!(screen_text("plain"), "plain");
    }
}
