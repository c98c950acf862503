//! Naming V8 (Node.js) JavaScript frames without `--perf-basic-prof`.
//!
//! Shaped like the OpenTelemetry eBPF profiler's interpreters: [`binary`] recognises a
//! node binary and reads its metadata once per file ([`V8Binary`], shared); [`namer`]
//! is the per-process instance ([`V8Process`]) that names frames over a memory-reading
//! closure; [`metadata`] is the pure `v8dbg_*` reader and [`heap`] the checked object
//! walk, both reusable by other readers of the V8 heap. [`census`] (with
//! [`async_objects`], [`positions`] and [`census_live`]) is such a reader: the async functions a
//! process has suspended, counted from its heap.
pub mod async_objects;
pub mod binary;
pub mod census;
pub mod census_live;
#[cfg(test)]
mod census_tests;
pub mod heap;
#[cfg(test)]
mod image;
pub mod metadata;
pub mod namer;
pub mod positions;
pub mod report;

pub use binary::{looks_like_node, V8Binary};
pub use census::{AsyncCensus, AsyncChain, AsyncFrame, AsyncGroup, ScanLimits};
pub use metadata::{Layout, MetadataError, Symbols};
pub use namer::{JsFrame, V8Counts, V8Process};
pub use report::{AsyncCensusReport, JsFrameReport};
