//! Rendering: folded stacks, flamegraph SVG, and the plain-text / JSON report.
//!
//! Input is the plain [`MemoryReport`] model built by `record`; nothing here reads the
//! kernel or /proc, so every renderer is tested on hand-made reports (golden files
//! under `profiler/tests/data/golden`, re-blessed with `BLESS=1`).
pub mod allocations;
pub mod diff;
pub mod folded;
pub mod pprof;
pub mod report;
pub mod svg;
pub mod waits;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    collect::Counters, memory_verdict::MemoryVerdict, procfs::Rss, targets::ProcessIdentity,
};

/// Everything a capture learned about memory, per process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryReport {
    /// What was targeted, for titles (e.g. `pid 1234`).
    pub target: String,
    pub window_secs: f64,
    pub sample_bytes: u64,
    /// Mean bytes between sampled allocations (allocator probes).
    pub alloc_sample_bytes: u64,
    pub counters: Counters,
    pub processes: Vec<ProcessMemory>,
}

/// One process's memory over the window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessMemory {
    /// Host PID.
    pub pid: u32,
    pub comm: String,
    /// Container, cgroup and PID in its own namespace, where known.
    pub identity: ProcessIdentity,
    pub exited: bool,
    /// Committed (accessible) mapped bytes by region kind label, at attach and at the end.
    pub mapped_before: BTreeMap<String, u64>,
    pub mapped_after: BTreeMap<String, u64>,
    /// Reserved (PROT_NONE) bytes at the end.
    pub reserved_after: u64,
    pub rss_before: Option<Rss>,
    pub rss_after: Option<Rss>,
    /// Estimated live bytes created in the window, by (region kind, stack); positive only.
    pub growth: Vec<StackGrowth>,
    /// Live bytes created in the window by events that were not sampled (the estimate in
    /// `growth` already accounts for them through the sample weights).
    pub unsampled_live_bytes: u64,
    /// Memory events of this process seen in userspace, and of those, sampled.
    pub events: u64,
    pub samples: u64,
    /// Stacks that the unwinder could not finish (copy too short, unreadable memory).
    pub truncated_stacks: u64,
    /// Allocator-level view (None when the allocator probes were off).
    pub allocations: Option<AllocationView>,
    /// Resident memory by kind from `kmem:rss_stat` (None when not seen).
    pub resident: Option<ResidentView>,
    /// Leak, retention, mapped growth or no growth, with its numbers.
    pub verdict: Option<MemoryVerdict>,
    /// JavaScript frames named from V8's heap (None when the process is not node).
    pub js_frames: Option<crate::runtimes::v8::JsFrameReport>,
}

/// Live allocations of one process: sampled blocks allocated in the window and not
/// freed by its end, by stack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AllocationView {
    /// What was probed, e.g. `glibc malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)`.
    pub allocators: Vec<String>,
    /// Estimated bytes and blocks still live.
    pub live_bytes: f64,
    pub live_objects: f64,
    /// Estimated bytes allocated and freed in the window (sampled blocks).
    pub allocated_bytes: f64,
    pub freed_bytes: f64,
    /// Sampled allocations and frees received; allocations whose free was missed.
    pub samples: u64,
    pub frees: u64,
    pub replaced: u64,
    /// Live growth by stack, largest first.
    pub growth: Vec<AllocGrowth>,
    /// The same, split at `split_secs` into the window: for the differential view.
    pub first_half: Vec<AllocGrowth>,
    pub second_half: Vec<AllocGrowth>,
    pub split_secs: f64,
}

/// Live bytes and blocks held by one stack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AllocGrowth {
    /// Frame names, root first (the allocator's own frames are not part of it: the
    /// stack is taken where the allocation returned).
    pub frames: Vec<String>,
    pub bytes: f64,
    pub objects: f64,
    /// The frames as code locations, root first, for pprof; empty when only names are
    /// known.
    #[serde(skip)]
    pub locations: Vec<pprof::CodeLocation>,
}

/// Resident memory by kind during the window, from `kmem:rss_stat`, in bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResidentView {
    /// At the end of the window (latest update seen).
    pub anon: i64,
    pub file: i64,
    pub shmem: i64,
    pub swap: i64,
    /// Highest values seen during the window.
    pub peak_anon: i64,
    pub peak_file: i64,
    pub peak_shmem: i64,
    pub peak_total: i64,
    /// Updates seen (page faults and unmaps that moved a counter).
    pub updates: u64,
}

impl ProcessMemory {
    /// Net change of committed bytes per region kind (after - before).
    pub fn net_by_kind(&self) -> BTreeMap<String, i64> {
        let mut net = BTreeMap::new();
        for (kind, &after) in &self.mapped_after {
            *net.entry(kind.clone()).or_insert(0) += after as i64;
        }
        for (kind, &before) in &self.mapped_before {
            *net.entry(kind.clone()).or_insert(0) -= before as i64;
        }
        net
    }

    /// Total estimated growth attributed to stacks.
    pub fn attributed_growth(&self) -> f64 {
        self.growth.iter().map(|g| g.bytes).sum()
    }
}

/// Bytes held by one stack in one region kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackGrowth {
    pub kind: String,
    /// Frame names, root first.
    pub frames: Vec<String>,
    pub bytes: f64,
    /// Estimated number of live objects (mappings, or allocations) behind `bytes`.
    #[serde(skip)]
    pub objects: f64,
    /// The frames as code locations (address, module, inlined lines), root first, for
    /// pprof; empty when only names are known.
    #[serde(skip)]
    pub locations: Vec<pprof::CodeLocation>,
}
