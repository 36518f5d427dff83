//! Phase timings for profiling container start-up, off unless asked for:
//! with `KILN_TIMINGS=FILE` in the environment, every [`mark`] appends
//! `<CLOCK_MONOTONIC ms> <pid> <label>` to FILE (the container init inherits
//! the variable, so its phases land in the same file). When the variable is
//! unset a mark costs one atomic load.

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Environment variable naming the file that receives the marks.
pub const TIMINGS_ENV: &str = "KILN_TIMINGS";

/// The file, opened once per process: a container init cloned from this
/// process reopens it (the copy it inherits is closed with the other
/// descriptors), before it changes its root.
fn sink() -> Option<std::sync::MutexGuard<'static, Option<(u32, File)>>> {
    static PATH: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    static FILE: Mutex<Option<(u32, File)>> = Mutex::new(None);
    let path = PATH
        .get_or_init(|| std::env::var_os(TIMINGS_ENV))
        .as_ref()?;
    let mut file = FILE.lock().ok()?;
    let pid = std::process::id();
    if file.as_ref().is_none_or(|(p, _)| *p != pid) {
        // Another process's descriptor number, closed or reused here.
        std::mem::forget(file.take());
        let opened = File::options().create(true).append(true).open(path).ok()?;
        *file = Some((pid, opened));
    }
    Some(file)
}

/// Records that `label` was reached now (see the module docs).
pub fn mark(label: &str) {
    let Some(mut guard) = sink() else {
        return;
    };
    let Some((_, file)) = guard.as_mut() else {
        return;
    };
    let now = crate::sys::monotonic_ms();
    // One write(2) per line: the init and the caller append at once.
    let line = format!("{now:.3} {} {label}\n", std::process::id());
    let _ = file.write_all(line.as_bytes());
}

/// The variable as `NAME=VALUE` for a child's environment, when set.
pub(crate) fn env_entry() -> Option<String> {
    std::env::var(TIMINGS_ENV)
        .ok()
        .map(|v| format!("{TIMINGS_ENV}={v}"))
}
