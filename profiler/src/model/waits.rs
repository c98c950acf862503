//! The wait model: what threads were blocked on, for how long, under which stacks, and
//! the stall verdict. Built by [`crate::analyze::waits`], read by [`crate::render`].
use serde::Serialize;

use super::CodeLocation;
use crate::targets::ProcessIdentity;

/// What a wait was on, as a person names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum WaitOn {
    /// A futex (mutex, condition variable, thread join …) at this user address.
    Futex { addr: u64 },
    /// A socket read/accept/connect; `peer` names the other side (`127.0.0.1:5432`).
    Socket { syscall: String, peer: String },
    /// epoll/poll/select over a set of descriptors (an event loop).
    Poll {
        syscall: String,
        sockets: usize,
        fds: usize,
    },
    /// Any other descriptor (a pipe, a file, a terminal).
    Other { syscall: String, what: String },
}

impl WaitOn {
    /// The flamegraph frame under the process: `futex`, `socket 127.0.0.1:5432`, `poll`…
    pub fn kind_label(&self) -> String {
        match self {
            Self::Futex { .. } => "futex".into(),
            Self::Socket { peer, .. } => format!("socket {peer}"),
            Self::Poll { syscall, .. } => syscall.clone(),
            Self::Other { syscall, what } => format!("{syscall} {what}"),
        }
    }

    /// A longer description for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Futex { addr } => format!("futex 0x{addr:x}"),
            Self::Socket { syscall, peer } => format!("{syscall} on socket {peer}"),
            Self::Poll {
                syscall,
                sockets,
                fds,
            } => format!("{syscall} over {fds} fds ({sockets} sockets)"),
            Self::Other { syscall, what } => format!("{syscall} on {what}"),
        }
    }

    /// Waiting for work to arrive (an event loop or a listener), not for a resource.
    pub fn is_idle_kind(&self) -> bool {
        match self {
            Self::Poll { .. } => true,
            Self::Socket { syscall, .. } => syscall == crate::events::WaitSyscall::Accept.name(),
            Self::Other { .. } | Self::Futex { .. } => false,
        }
    }
}

/// What a capture learned about waits, per process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitReport {
    pub threshold_ns: u64,
    pub stall_threshold_ns: u64,
    /// Waits shorter than the threshold, counted in the kernel (all targets).
    pub short_waits: u64,
    pub processes: Vec<ProcessWaits>,
}

/// One process's waits.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessWaits {
    /// Host PID.
    pub pid: u32,
    pub comm: String,
    /// Container, cgroup and PID in its own namespace, where known.
    #[serde(flatten)]
    pub identity: ProcessIdentity,
    pub threads: usize,
    pub verdict: StallVerdict,
    /// Blocked time of waits that ended in the window, by (what, stack).
    pub completed: Vec<BlockedStack>,
    /// Threads blocked at the end, grouped by (what, stack).
    pub in_flight: Vec<WaitGroup>,
    /// (futex address, waits started, wakes) in the window.
    pub futexes: Vec<(u64, u64, u64)>,
    pub observed_ns: u64,
}

/// Blocked time under one stack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BlockedStack {
    /// The flamegraph frame: `futex`, `socket 127.0.0.1:5432`, `epoll_wait`…
    pub kind: String,
    pub on: String,
    pub frames: Vec<String>,
    pub ns: u64,
    pub count: u64,
    /// The frames as code locations, root first, for pprof; empty when only names
    /// are known.
    #[serde(skip)]
    pub locations: Vec<CodeLocation>,
}

/// Threads blocked on the same thing with the same stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitGroup {
    /// e.g. `futex 0x55d0c1000040`, `recvfrom on socket 127.0.0.1:5432`.
    pub on: String,
    /// The flamegraph frame under the process: `futex`, `socket 127.0.0.1:5432`, …
    pub kind: String,
    pub tids: Vec<u32>,
    /// The shortest time any of these threads has been blocked.
    pub blocked_at_least_ns: u64,
    /// Futex wake calls on this futex during the window (futex waits only).
    pub wakes: Option<u64>,
    /// Whether these threads count as stuck (long, not idle, never woken).
    pub stuck: bool,
    /// The first frame above the lock / wait implementation (e.g. `acquire_nested`).
    pub frame_below_lock: Option<String>,
    /// Frames, root first.
    pub stack: Vec<String>,
    /// The frames as code locations for pprof, root first; filled by the caller that
    /// knows the stack table (empty: names only).
    #[serde(skip)]
    pub locations: Vec<CodeLocation>,
}

/// The verdict for one process.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum StallVerdict {
    Stalled {
        stuck: usize,
        threads: usize,
        on: String,
        frame_below_lock: Option<String>,
        blocked_at_least_ns: u64,
    },
    Idle {
        threads: usize,
        detail: String,
    },
    Progressing {
        stuck: usize,
        threads: usize,
    },
    /// The process exited before the snapshot: only its completed waits are known.
    Exited,
}

impl StallVerdict {
    pub fn is_stalled(&self) -> bool {
        matches!(self, StallVerdict::Stalled { .. })
    }
}
