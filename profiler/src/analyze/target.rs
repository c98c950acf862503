//! What the analyses keep per followed process: its mapping ledger, sampled live
//! allocations, resident memory and wait counts.
use std::collections::BTreeMap;

use profiler_common::FreeFlow;

use crate::{
    allocator::{HeapLayout, LiveAllocations},
    analyze::memory::series::IntervalSeries,
    ledger::ProcessLedger,
    model::ProbedAllocator,
    model::ResidentTrack,
    procfs::Rss,
    targets::ProcessIdentity,
};

/// State of one target process.
pub struct Target {
    pub pid: u32,
    pub comm: String,
    /// Container, cgroup and namespace PID, read when the target was added.
    pub identity: ProcessIdentity,
    pub ledger: ProcessLedger,
    pub rss_before: Option<Rss>,
    pub rss_after: Option<Rss>,
    /// Resident bytes when the process was first followed: the memory verdict's
    /// baseline, since its other numbers count from then too.
    pub rss_at_follow: Option<u64>,
    pub events: u64,
    pub samples: u64,
    /// Stacks the unwinder could not finish.
    pub truncated: u64,
    pub exited: bool,
    /// Completed waits (at least the threshold long) seen in the window.
    pub waits: u64,
    /// Sampled live blocks (allocator probes).
    pub allocs: LiveAllocations,
    /// What the allocator probes attached to; empty when they are off or could not
    /// attach.
    pub allocators: Vec<ProbedAllocator>,
    /// Why the allocator probes are not running for this process, if they are not.
    pub allocator_note: Option<String>,
    /// The allocator its mappings show, when the probes are off.
    pub allocator_seen: Option<crate::allocator::AllocatorFamily>,
    /// Resident memory by kind from `kmem:rss_stat`, read at the end of the window.
    pub resident: Option<ResidentTrack>,
    /// How its JavaScript frames were named from V8's heap (None: not node).
    pub js_frames: Option<crate::runtimes::v8::JsFrameReport>,
    /// The census of suspended async functions, taken at the end of the window.
    pub async_census: Option<crate::runtimes::v8::AsyncCensusReport>,
    /// How the kernel side sizes frees of blocks it did not see allocated.
    pub heap_layout: HeapLayout,
    /// Monotonic time (ns) when the process was first followed: live blocks and frees
    /// count from here.
    pub followed_ns: u64,
    /// Those frees since the process was first followed, as last read.
    pub free_flow: Option<FreeFlow>,
    /// Live allocations at the end of each daemon interval, for trends.
    pub series: IntervalSeries,
    /// Committed bytes by region kind label when the window started (or when the
    /// process joined it): the report's "before".
    pub committed_at_start: Option<BTreeMap<String, u64>>,
    /// Its connections, requests in flight and outbound pools (the request ledger).
    pub requests: crate::analyze::requests::ledger::RequestLedger,
}

impl Target {
    /// A process followed from now: `ledger` seeded with its mappings, `rss` read now.
    pub fn new(
        pid: u32,
        comm: String,
        identity: ProcessIdentity,
        ledger: ProcessLedger,
        rss: Option<Rss>,
    ) -> Self {
        Self {
            pid,
            comm,
            identity,
            ledger,
            rss_before: rss,
            rss_after: None,
            rss_at_follow: rss.map(|r| r.total),
            events: 0,
            samples: 0,
            truncated: 0,
            exited: false,
            waits: 0,
            allocs: LiveAllocations::new(),
            allocators: Vec::new(),
            allocator_note: None,
            allocator_seen: None,
            resident: None,
            js_frames: None,
            async_census: None,
            heap_layout: HeapLayout::None,
            followed_ns: 0,
            free_flow: None,
            series: IntervalSeries::default(),
            committed_at_start: None,
            requests: Default::default(),
        }
    }

    /// The process is gone: it has no resident memory left.
    pub fn mark_exited(&mut self) {
        self.exited = true;
        self.rss_after = self.rss_after.or(self.rss_before.map(|_| Rss::default()));
    }
}
