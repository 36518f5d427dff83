//! The bound of `--jobs`: how many steps are *busy* at once.
//!
//! A step takes a slot before it starts and holds it while it works in
//! process (COPY, layer diffs, hashing). A RUN step's container runs in a
//! cgroup of its own; while it runs, [`watch`] samples the cgroup's CPU time
//! every [`TICK`]. A container that used less than [`IDLE_SHARE`] of one CPU
//! over the last [`IDLE_WINDOW`], and that had a moment with no thread
//! running or runnable (sleeping, waiting on the network or the disk; a
//! busy container starved by other work on the host stays busy), gives its
//! slot back and keeps running, so the next ready step can start. When it
//! is busy again it takes a slot back if one is free; if none is, it keeps
//! running without one (the bound is exceeded until it gets one back or its
//! container exits; steps waiting to start come first). Once its container
//! has exited, the step waits for a slot before it makes its layer.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_runner::cgroup::CpuUsage;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often a running container's CPU time is sampled.
pub(crate) const TICK: Duration = Duration::from_millis(25);

/// The span over which a container must stay below [`IDLE_SHARE`] to give
/// its slot back (two ticks: one quiet sample is not enough).
pub(crate) const IDLE_WINDOW: Duration = Duration::from_millis(50);

/// Below this share of one CPU a container counts as idle; at or above it,
/// as busy.
pub(crate) const IDLE_SHARE: f64 = 0.10;

/// One step's hold on a `--jobs` slot.
pub(crate) struct Slot {
    semaphore: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    /// A slot held with `permit` (taken from `semaphore` before the step
    /// started).
    pub(crate) fn new(
        semaphore: Arc<Semaphore>,
        runtime: tokio::runtime::Handle,
        permit: OwnedSemaphorePermit,
    ) -> Slot {
        Slot {
            semaphore,
            runtime,
            permit: Mutex::new(Some(permit)),
        }
    }

    fn held(&self) -> bool {
        self.permit.lock().expect("not poisoned").is_some()
    }

    /// Lets another step have the slot.
    fn give_back(&self) {
        self.permit.lock().expect("not poisoned").take();
    }

    /// Takes a slot if one is free now.
    fn try_take(&self) {
        let mut permit = self.permit.lock().expect("not poisoned");
        if permit.is_none() {
            *permit = self.semaphore.clone().try_acquire_owned().ok();
        }
    }

    /// Waits for a slot (from a blocking thread of the solver's runtime).
    pub(crate) fn take(&self) {
        if self.held() {
            return;
        }
        let permit = self
            .runtime
            .block_on(self.semaphore.clone().acquire_owned())
            .ok();
        *self.permit.lock().expect("not poisoned") = permit;
    }
}

/// Set when the watched container has exited.
#[derive(Default)]
pub(crate) struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub(crate) fn stop(&self) {
        *self.stopped.lock().expect("not poisoned") = true;
        self.wake.notify_all();
    }

    /// Sleeps up to `timeout`; true once stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().expect("not poisoned");
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, timeout, |s| !*s)
            .expect("not poisoned");
        *stopped
    }
}

/// Gives `slot` back while the container whose CPU time `usage` reads is
/// idle and takes it again when it is busy and a slot is free, until
/// `stop`.
pub(crate) fn watch(slot: &Slot, usage: &CpuUsage, stop: &Stop) {
    // (when, CPU time, a thread runnable) samples of the last IDLE_WINDOW
    // and one before it.
    let mut samples: std::collections::VecDeque<(Instant, Duration, bool)> = Default::default();
    while !stop.wait(TICK) {
        let Some(used) = usage.read() else {
            // Not started yet (or gone): nothing to judge.
            samples.clear();
            continue;
        };
        let now = Instant::now();
        let share = |from: &(Instant, Duration, bool)| {
            let wall = (now - from.0).as_secs_f64();
            let cpu = used.saturating_sub(from.1).as_secs_f64();
            if wall > 0.0 {
                cpu / wall
            } else {
                1.0
            }
        };
        // Threads are looked at only when the CPU time does not already
        // say busy.
        let runnable =
            samples.back().is_some_and(|last| share(last) >= IDLE_SHARE) || usage.runnable();
        samples.push_back((now, used, runnable));
        while samples.len() > 2 && now - samples[1].0 >= IDLE_WINDOW {
            samples.pop_front();
        }
        if slot.held() {
            let first = samples[0];
            // A thread runnable at every sample: CPU-bound, however little
            // CPU the host leaves it.
            let quiet = !samples.iter().skip(1).all(|s| s.2);
            if now - first.0 >= IDLE_WINDOW && quiet && share(&first) < IDLE_SHARE {
                slot.give_back();
            }
        } else {
            let busy =
                runnable || samples.len() >= 2 && share(&samples[samples.len() - 2]) >= IDLE_SHARE;
            if busy {
                slot.try_take();
                if slot.held() {
                    // Judged idle again only on what follows.
                    samples.drain(..samples.len() - 1);
                }
            }
        }
    }
}
