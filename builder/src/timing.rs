//! Phase timings for benchmarks: with `KILN_TIMINGS` set, [`mark`] prints
//! the milliseconds since the first mark and since the previous one to
//! stderr. Off (one load of a static) otherwise.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

struct Clock {
    first: Instant,
    last: Mutex<Instant>,
}

fn clock() -> Option<&'static Clock> {
    static CLOCK: OnceLock<Option<Clock>> = OnceLock::new();
    CLOCK
        .get_or_init(|| {
            std::env::var_os("KILN_TIMINGS").map(|_| {
                let now = Instant::now();
                Clock {
                    first: now,
                    last: Mutex::new(now),
                }
            })
        })
        .as_ref()
}

/// Notes that `what` has just finished.
pub fn mark(what: &str) {
    let Some(clock) = clock() else {
        return;
    };
    let now = Instant::now();
    let mut last = clock.last.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "timing {:8.2} ms (+{:6.2}) {what}",
        (now - clock.first).as_secs_f64() * 1e3,
        (now - *last).as_secs_f64() * 1e3,
    );
    *last = now;
}
