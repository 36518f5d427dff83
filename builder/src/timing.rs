//! Phase timings for benchmarks: the runner's marks (`KILN_TIMINGS=FILE`
//! appends `<monotonic ms> <pid> <label>` lines; `/dev/stderr` prints them),
//! so a build's phases and its RUN containers' land in one file.

pub use kiln_runner::timing::mark;
