//! The memory model: what a capture learned about each process's memory, and the
//! verdict judged from it. Built by [`crate::analyze::memory`], read by [`crate::render`].
use std::collections::BTreeMap;

use serde::Serialize;

use super::{growth::Assessment, CodeLocation, Counters};
use crate::{
    allocator::{
        net::{NetGrowth, NoNetGrowth},
        AllocatorFamily,
    },
    ledger::RegionKind,
    procfs::Rss,
    targets::ProcessIdentity,
};

/// Everything a capture learned about memory, per process.
#[derive(Clone, Debug, Default)]
pub struct MemoryReport {
    /// What was targeted, for titles (e.g. `pid 1234`).
    pub target: String,
    /// Seconds of this window (a daemon: this interval).
    pub window_secs: f64,
    /// A daemon keeps each process's live memory across its intervals: the stacks and
    /// the verdict count from when the probes attached, this many seconds ago. None
    /// for `record`, whose numbers cover the window.
    pub since_follow_secs: Option<f64>,
    pub sample_bytes: u64,
    /// Mean bytes between sampled allocations (allocator probes).
    pub alloc_sample_bytes: u64,
    pub counters: Counters,
    pub processes: Vec<ProcessMemory>,
}

/// One process's memory over the window.
#[derive(Clone, Debug, Default)]
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
    /// A daemon: when the memory limit is reached at the rate resident memory grows
    /// across the intervals (None when the growth is not steady).
    pub oom: Option<super::forecast::OomForecast>,
}

/// Live allocations of one process: sampled blocks allocated in the window and not
/// freed by its end, by stack.
#[derive(Clone, Debug, Default)]
pub struct AllocationView {
    /// What was probed.
    pub allocators: Vec<ProbedAllocator>,
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
    /// Net growth of live heap bytes since the process was first followed (frees of
    /// blocks allocated before counted), or why it cannot be told.
    pub net: Option<NetGrowth>,
    pub net_missing: Option<NoNetGrowth>,
    /// Seconds since the process was first followed (the span of `growth`'s ages).
    pub followed_secs: f64,
    /// The same, split at `split_secs` into the window: for the differential view.
    pub first_half: Vec<AllocGrowth>,
    pub second_half: Vec<AllocGrowth>,
    pub split_secs: f64,
}

/// Live bytes and blocks held by one stack.
#[derive(Clone, Debug, Default)]
pub struct AllocGrowth {
    /// Frame names, root first (the allocator's own frames are not part of it: the
    /// stack is taken where the allocation returned).
    pub frames: Vec<String>,
    pub bytes: f64,
    pub objects: f64,
    /// Sampling variance of `bytes`.
    pub variance: f64,
    /// Live bytes by age (see `allocator::live::AGE_BUCKETS`), and the oldest's age.
    pub by_age: [f64; 4],
    pub oldest_secs: f64,
    /// Estimated bytes of this stack's blocks freed since the follow started.
    pub freed: f64,
    /// The interned stack (its daemon trend is kept by it).
    pub stack: Option<crate::events::StackId>,
    /// The frames as code locations, root first, for pprof; empty when only names are
    /// known.
    pub locations: Vec<CodeLocation>,
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
#[derive(Clone, Debug, Default)]
pub struct StackGrowth {
    pub kind: RegionKind,
    /// Frame names, root first.
    pub frames: Vec<String>,
    pub bytes: f64,
    /// Estimated number of live objects (mappings, or allocations) behind `bytes`.
    pub objects: f64,
    /// The frames as code locations (address, module, inlined lines), root first, for
    /// pprof; empty when only names are known.
    pub locations: Vec<CodeLocation>,
}

/// What the numbers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryVerdictKind {
    Leak,
    Retention,
    MappedGrowth,
    NoGrowth,
    /// The heap grew but the allocator probes were off: leak and retention look alike.
    HeapGrowthUnexplained,
    /// Live allocations grew and then stayed level (daemon): a warm-up, a cache filling.
    GrowthStopped,
    /// Live allocations rise and are released again (daemon): batches.
    Periodic,
    /// Live allocations grow, but the daemon has too few intervals to call a trend.
    Growing,
}

/// A stack and the bytes it contributes to the verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedStack {
    /// Frame names, root first.
    pub frames: Vec<String>,
    pub bytes: f64,
}

/// The verdict for one process, as facts: [`crate::render::verdict`] words it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryVerdict {
    pub kind: MemoryVerdictKind,
    /// The growth the headline states: live allocations (leak), the allocator's heap
    /// (retention, heap growth without allocator probes), direct mappings (mapped
    /// growth); 0 for no growth.
    pub growth: f64,
    /// Leak: the largest stack's share of the live growth, in percent.
    pub top_share_pct: f64,
    /// The frame the headline names (the culprit of the largest stack, with its caller).
    pub culprit: String,
    /// The numbers it rests on.
    pub numbers: Numbers,
    /// The stacks it names (leaking, heap-extending, or mapping).
    pub stacks: Vec<NamedStack>,
    /// What usually helps, for retention: advice depends on the allocator.
    pub advice: Option<RetentionAdvice>,
    /// Secondary findings, e.g. direct mapped growth next to a leak.
    pub also: Vec<AlsoGrew>,
    /// What decided whether live allocations grow, with the numbers its confidence
    /// rests on (allocator probes on).
    pub assessment: Option<Assessment>,
    /// Mapped growth without the allocator probes in a process whose allocator leaves no
    /// frames in mapping stacks (musl, which has no CFI): its heap may be part of it.
    pub heap_unseen: bool,
}

/// Retention advice for the allocator the process uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionAdvice {
    pub allocator: Option<AllocatorFamily>,
}

/// A secondary finding: direct mappings also grew, next to the main verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct AlsoGrew {
    pub bytes: f64,
    /// The culprit of the largest direct-mapping stack, when the verdict names one.
    pub culprit: Option<String>,
}

/// The numbers behind a verdict, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Numbers {
    pub live_growth: Option<f64>,
    pub allocated: Option<f64>,
    pub freed: Option<f64>,
    /// brk heap plus anonymous mappings made by the allocator.
    pub heap_growth: f64,
    /// Anonymous mappings made outside the allocator.
    pub direct_mapped_growth: f64,
    pub resident_delta: Option<i64>,
    /// The numbers cover the time since the process was first followed rather than one
    /// window: the daemon keeps what is live across its intervals.
    pub since_follow: bool,
    /// Net growth of live heap bytes (frees of older blocks counted) and its standard
    /// error, and the estimated bytes allocated per second (see `allocator::net`).
    pub net_growth: Option<f64>,
    pub net_sigma: Option<f64>,
    pub churn_per_sec: Option<f64>,
}

/// An allocator whose entry points the probes attached to in one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProbedAllocator {
    pub family: AllocatorFamily,
    /// The file probed, as the process maps it.
    pub path: std::path::PathBuf,
    /// How many of its functions were probed.
    pub entry_points: usize,
}

/// Resident memory of a process as `kmem:rss_stat` saw it during the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ResidentTrack {
    /// Latest bytes per kind: file, anon, swap entries, shmem.
    pub now: [i64; 4],
    pub peak: [i64; 4],
    /// Highest file + anon + shmem total.
    pub peak_total: i64,
    pub updates: u64,
}
