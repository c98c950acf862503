//! Rendering: folded stacks, flamegraph SVG, and the plain-text / JSON report.
//!
//! Input is the plain [`crate::model`] built by `analyze`; nothing here reads the
//! kernel or /proc, so every renderer is tested on hand-made reports (golden files
//! under `profiler/tests/data/golden`, re-blessed with `BLESS=1`).
pub mod allocations;
pub mod async_census;
pub mod diff;
pub mod folded;
pub mod growth;
pub mod oom;
pub mod pprof;
pub mod report;
pub mod report_json;
pub mod stall_verdict;
pub mod summary;
pub mod svg;
pub mod verdict;
pub mod waits;

/// How many growing stacks the report lists per process.
pub const TOP_STACKS: usize = 10;
