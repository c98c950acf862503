//! The capture stream: what the analysis applies, in order. `collect` and `stacks` (or a
//! recording, on replay) produce it; [`crate::analyze::CaptureState`] applies it.
//!
//! Every record is a fact, already decoded, with its stack interned and every `/proc`
//! read done (mappings of a followed process, its comm and RSS, what a descriptor is),
//! so the analysis needs neither the kernel nor the host and a saved stream replays
//! the same reports anywhere.
use serde::{Deserialize, Serialize};

use super::{Counters, ProbedAllocator, ResidentTrack, ThreadSnapshot, WaitOn};
use crate::{
    allocator::{AllocatorFamily, HeapLayout},
    events::{MemOp, StackId},
    procfs::{MapEntry, Rss},
};

/// An interned stack as an event refers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRef {
    pub id: StackId,
    /// The unwinder stopped early (stack copy too short, unreadable memory).
    pub truncated: bool,
}

/// Who a process is, as `/proc` said when it was followed: the text of
/// `/proc/PID/cgroup` and its PID in its own namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFacts {
    pub cgroup: Option<String>,
    pub ns_pid: Option<u32>,
}

/// A process the capture starts to follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Followed {
    pub pid: u32,
    pub comm: String,
    pub identity: IdentityFacts,
    /// Its mappings when it was followed (they seed the ledger).
    pub maps: Vec<MapEntry>,
    pub start_brk: Option<u64>,
    pub rss: Option<Rss>,
    /// Monotonic ns when it was followed: live blocks and frees count from here.
    #[serde(default)]
    pub followed_ns: u64,
}

/// A sampled memory event's stack and the factor from changed bytes to estimated bytes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemSampleRef {
    pub stack: Option<StackRef>,
    pub scale: f64,
}

/// What happened to a sampled block (see [`crate::events::AllocOp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockOp {
    Alloc {
        addr: u64,
        size: u64,
        /// The size the allocator's header gives; 0 when unknown.
        #[serde(default)]
        usable_size: u32,
        weight: u64,
        stack: Option<StackRef>,
    },
    Free {
        addr: u64,
    },
}

/// Frees of blocks of one process that were not sampled live, as the kernel counted
/// them since it was followed (see `profiler_common::FreeFlow`), read at `read_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeFlowRead {
    pub read_ns: u64,
    pub frees: u64,
    pub unsized_frees: u64,
    pub sampled: u64,
    pub weight: u64,
    pub variance: u64,
    pub sized_bytes: u64,
}

/// The facts a window ends with, to build its reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowEnd {
    /// What was targeted, for titles (e.g. `pid 1234`).
    pub target: String,
    pub window_secs: f64,
    /// Seconds since the probes attached (memory growth counts from then).
    pub attached_secs: f64,
    pub end_ns: u64,
    pub sample_bytes: u64,
    pub alloc_sample_bytes: u64,
    /// This window's event counters.
    pub counters: Counters,
    /// Whether memory and waits were recorded.
    pub memory: bool,
    pub waits: bool,
    pub wait_threshold_ns: u64,
    pub stall_threshold_ns: u64,
    /// Wall-clock time the window ended, ns since the Unix epoch, for the absolute
    /// `start`/`end` of report.json. None in recordings made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_ns: Option<i64>,
}

/// One record of the capture stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureRecord {
    /// The window starts (monotonic ns, the clock of the probes).
    WindowStart { start_ns: u64 },
    /// A process is followed from now (a PID reused by a new process included).
    Follow(Followed),
    /// Its allocator is probed.
    Allocator { pid: u32, probed: ProbedAllocator },
    /// Why its allocator is not probed.
    AllocatorNote { pid: u32, note: String },
    /// The allocator its mappings show, with the probes off: how the verdict words
    /// growth whose allocator frames stacks may lack (musl's).
    AllocatorSeen { pid: u32, family: AllocatorFamily },
    /// How the kernel sizes the frees of the process's blocks it did not see allocated.
    HeapLayout { pid: u32, layout: HeapLayout },
    /// The kernel's counters of those frees.
    FreeFlow { pid: u32, flow: FreeFlowRead },
    /// Judge growth by its trend over intervals (the daemon), not by one window.
    JudgeByTrend,
    /// A daemon interval ends: each process's live allocations are a level of its
    /// trend.
    IntervalEnd { end_ns: u64 },
    /// Take each followed process's committed bytes now as the window's "before"
    /// (`only_new`: only of processes that have none yet, i.e. joined mid-window).
    Baseline { only_new: bool },
    /// A memory event.
    Mem {
        pid: u32,
        op: MemOp,
        sample: Option<MemSampleRef>,
    },
    /// The process executed a new program with this name.
    Comm { pid: u32, comm: String },
    /// An allocator event of a sampled block.
    Block { pid: u32, time_ns: u64, op: BlockOp },
    /// A completed wait at least the threshold long.
    Wait {
        pid: u32,
        on: WaitOn,
        stack: Option<StackRef>,
        blocked_ns: u64,
        end_ns: u64,
    },
    /// The process is gone (found by a rescan).
    Exited { pid: u32 },
    /// Resident memory at the end of the window; None: the process is gone.
    FinalRss { pid: u32, rss: Option<Rss> },
    /// What `kmem:rss_stat` saw of the process.
    Resident {
        pid: u32,
        track: Option<ResidentTrack>,
    },
    /// The blocked threads of a process (None: gone), and how many of their stacks the
    /// unwinder could not finish.
    Snapshot {
        pid: u32,
        observed_ns: u64,
        snapshot: Option<ThreadSnapshot>,
        truncated: u64,
    },
    /// Waits shorter than the threshold, counted in the kernel.
    ShortWaits { count: u64 },
    /// What the framers learnt from one of the process's connections (metadata only).
    Conn {
        pid: u32,
        fd: i32,
        time_ns: u64,
        event: super::ConnEvent,
    },
    /// How naming the process's JavaScript frames from V8's heap went (None: not node).
    JsFrames {
        pid: u32,
        report: Option<crate::runtimes::v8::JsFrameReport>,
    },
    /// The census of a node process's suspended async functions.
    AsyncCensus {
        pid: u32,
        report: Option<crate::runtimes::v8::AsyncCensusReport>,
    },
    /// The window ends.
    WindowEnd(WindowEnd),
    /// The next window of a capture that keeps its probes (the daemon) starts:
    /// exited targets are forgotten, each remaining one starts from this RSS.
    NextWindow { rss_before: Vec<(u32, Option<Rss>)> },
}
