//! profiler: an eBPF production profiler for memory growth and blocked threads.
//!
//! The pipeline, one module per stage:
//! [`collect`] (the only module that touches the kernel) → [`events`] (plain types) →
//! [`ledger`] (live mappings per process) → [`unwind`] → [`symbolize`] →
//! [`aggregate`] (interned stacks) → [`render`] (folded, SVG, report) →
//! [`record`] (the command that ties them together) and [`daemon`] (the same capture,
//! continuously, with snapshots and retention).
pub mod aggregate;
pub mod allocator;
pub mod cli;
pub mod collect;
pub mod compare;
pub mod daemon;
pub mod events;
pub mod ledger;
pub mod memory_verdict;
pub mod offcpu;
pub mod procfs;
pub mod push;
pub mod record;
pub mod render;
pub mod runtimes;
pub mod sockets;
pub mod symbolize;
pub mod targets;
pub mod units;
pub mod unwind;
