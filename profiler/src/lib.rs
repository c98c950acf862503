//! profiler: an eBPF production profiler for memory growth and blocked threads.
//!
//! The pipeline, one module per stage:
//! `collect` (the only module that touches the kernel) → `events` (plain types) →
//! `ledger` (live mappings per process) → `unwind` → `symbolize` → `render`
//! (folded, SVG, report) → `record` (the command that ties them together).
pub mod events;
pub mod ledger;
pub mod procfs;
pub mod unwind;
pub mod symbolize;
