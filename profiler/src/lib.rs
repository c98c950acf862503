//! profiler: an eBPF production profiler for memory growth and blocked threads.
//!
//! The pipeline, one module per stage, read top to bottom:
//! [`collect`] (the only module that touches the kernel; records decode into
//! [`events`], blocked threads are read by [`collect::inflight`]) →
//! [`stacks`] (unwind with [`unwind`], symbolize with [`symbolize`], intern) →
//! [`analyze`] (per process: the [`ledger`] of live mappings, live allocations, waits;
//! the memory and stall verdicts) → [`model`] (the plain typed contracts) →
//! [`render`] (folded, SVG, pprof, report text and JSON, verdict prose).
//! [`record`] ties them together for one window and [`daemon`] runs the same capture
//! continuously, with snapshots and retention.
pub mod allocator;
pub mod analyze;
pub mod cli;
pub mod collect;
pub mod compare;
pub mod daemon;
pub mod events;
pub mod layout;
pub mod ledger;
pub mod model;
pub mod procfs;
pub mod push;
pub mod record;
pub mod render;
pub mod runtimes;
pub mod safe_file;
pub mod sockets;
pub mod stacks;
pub mod symbolize;
pub mod targets;
pub mod units;
pub mod unwind;
