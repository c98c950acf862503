//! The wait model: what threads were blocked on, for how long, under which stacks, and
//! the stall verdict. Built by [`crate::analyze::waits`], read by [`crate::render`].
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::CodeLocation;
use crate::{
    events::{StackId, WaitSyscall},
    targets::ProcessIdentity,
};

/// What a wait was on, as a person names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// A sleep (`nanosleep`, `clock_nanosleep`): it ends by itself.
    Sleep { syscall: String },
}

impl WaitOn {
    /// The flamegraph frame under the process: `futex`, `socket 127.0.0.1:5432`, `poll`…
    pub fn kind_label(&self) -> String {
        match self {
            Self::Futex { .. } => "futex".into(),
            Self::Socket { peer, .. } => format!("socket {peer}"),
            Self::Poll { syscall, .. } => syscall.clone(),
            Self::Other { syscall, what } => format!("{syscall} {what}"),
            Self::Sleep { .. } => "sleep".into(),
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
            Self::Sleep { syscall } => format!("sleep ({syscall})"),
        }
    }

    /// A sleep, which ends by itself: nothing has to wake it.
    pub fn is_sleep(&self) -> bool {
        matches!(self, Self::Sleep { .. })
    }

    /// Waiting for work to arrive (an event loop or a listener), not for a resource.
    pub fn is_idle_kind(&self) -> bool {
        match self {
            Self::Poll { .. } => true,
            Self::Socket { syscall, .. } => syscall == WaitSyscall::Accept.name(),
            Self::Other { .. } | Self::Futex { .. } | Self::Sleep { .. } => false,
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
    /// What the process's suspended async functions wait for (node targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_census: Option<crate::runtimes::v8::AsyncCensusReport>,
    /// Requests in flight per listener, from the request ledger.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<super::ListenerRequests>,
    /// Connections per outbound peer, from the request ledger.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<super::PeerPool>,
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

/// One piece of evidence that demand is not being met.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// Connections waiting in a listener's accept queue.
    QueuedConnections { listener: String, queued: u64 },
    /// Accepted connections holding request bytes nobody read.
    UnreadRequests {
        listener: String,
        connections: usize,
        bytes: u64,
    },
    /// Threads that began waiting on one futex while the probes watched, one after the
    /// other over `over_ns`, none woken.
    PileUp {
        on: String,
        arrived: usize,
        over_ns: u64,
    },
    /// Threads waiting for each other's locks: a deadlock.
    LockCycle { tids: Vec<u32> },
    /// Threads waiting for a lock another thread holds.
    LockHeld {
        on: String,
        owner: u32,
        waiters: usize,
        /// What the owner itself is waiting on at the snapshot; None when it is not in a
        /// wait (running, or in another system call).
        #[serde(skip_serializing_if = "Option::is_none")]
        owner_waits: Option<OwnerWait>,
    },
    /// Threads blocked reading a connection they opened: a call with no answer.
    AwaitingPeer { peer: String, threads: usize },
}

/// The wait of a thread that holds a lock others wait for: why the lock is not released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerWait {
    /// What it waits on: the sleep's system call (`clock_nanosleep`), or the wait
    /// described (`futex 0x…`, `recvfrom on socket 10.0.0.5:5432`).
    pub on: String,
    pub sleeping: bool,
    /// Its own code, the first frame above its wait (`hold_lock`).
    pub frame: Option<String>,
    pub blocked_at_least_ns: u64,
}

/// One thread of a deadlock: it waits for the lock `on`, held by `owner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CycleStep {
    pub tid: u32,
    /// The lock it waits for (`futex 0x…`).
    pub on: String,
    pub owner: u32,
    /// Its code, the first frame above the lock (`transfer`).
    pub frame: Option<String>,
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
        /// Why this is a stall and not idle workers: what wants these threads.
        evidence: Vec<Evidence>,
    },
    /// Threads that wait for each other's locks (a cycle in the wait-for graph): they
    /// never move again, however busy the other threads are.
    Deadlocked {
        threads: usize,
        /// The cycle, smallest TID first: each waits for the lock the next one holds.
        cycle: Vec<CycleStep>,
        /// Threads stuck with it: the cycle and those waiting behind it (for its locks,
        /// or joining its threads).
        stuck: usize,
        blocked_at_least_ns: u64,
    },
    Idle {
        threads: usize,
        detail: String,
    },
    /// Threads blocked past the threshold, but not all of them and with nothing
    /// waiting on them: `not stalled`, the words of the report.
    #[serde(rename = "not_stalled")]
    Progressing {
        stuck: usize,
        threads: usize,
    },
    /// The process exited before the snapshot: only its completed waits are known.
    Exited,
    /// Requests pile up unanswered while no thread blocks (an event loop hung on
    /// promises): the request ledger's verdict.
    Requests(super::RequestStall),
}

impl StallVerdict {
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            StallVerdict::Stalled { .. }
                | StallVerdict::Deadlocked { .. }
                | StallVerdict::Requests(_)
        )
    }
}

/// A thread that was inside a wait when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InFlightWait {
    pub tid: u32,
    pub syscall: WaitSyscall,
    pub on: WaitOn,
    /// How long it has been blocked, when the start was seen by the probes; `None`
    /// means it was already blocked when the probes attached (so: at least `observed_ns`).
    pub blocked_ns: Option<u64>,
    pub stack: Option<StackId>,
}

/// The threads of one process at the snapshot, with the futex activity of the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadSnapshot {
    pub pid: u32,
    pub comm: String,
    pub threads: usize,
    pub in_flight: Vec<InFlightWait>,
    /// Futex wake calls in the window, by futex address.
    pub futex_wakes: BTreeMap<u64, u64>,
    /// Futex waits started in the window, by futex address.
    pub futex_waits: BTreeMap<u64, u64>,
    /// How long the probes watched before the snapshot.
    pub observed_ns: u64,
    /// What /proc showed of unmet demand at the snapshot (queues, lock owners).
    pub demand: DemandSignals,
}

impl ThreadSnapshot {
    /// How long thread `w` has certainly been blocked.
    pub fn blocked_at_least(&self, w: &InFlightWait) -> u64 {
        w.blocked_ns.unwrap_or(self.observed_ns)
    }
}

/// What /proc showed at the snapshot, beside the waits themselves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemandSignals {
    /// The process's own listening sockets and the connections in their accept queue
    /// (`rx_queue` of a LISTEN row in /proc/PID/net/tcp is the accept backlog).
    pub listeners: Vec<ListenerQueue>,
    /// Connections accepted on those listeners with request bytes nobody has read.
    pub unread: Vec<UnreadConnection>,
    /// Peers (as waits name them) of connections accepted on those listeners: a thread
    /// blocked reading one waits for a client's next request, not for an answer.
    pub inbound_peers: BTreeSet<String>,
    /// The thread holding the lock at a futex address some thread waits on, where the
    /// lock word names it (glibc and musl mutexes, PI futexes).
    pub lock_owners: BTreeMap<u64, u32>,
    /// The thread a `pthread_join` (a futex wait on that thread's TID word) waits for,
    /// by futex address: a join of a stuck thread is stuck with it.
    pub joins: BTreeMap<u64, u32>,
}

/// One listening socket and its accept queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerQueue {
    /// `127.0.0.1:8080`.
    pub local: String,
    /// Connections established and waiting for `accept`.
    pub queued: u64,
}

/// An accepted connection with bytes in its receive queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadConnection {
    /// The listener it was accepted on (`127.0.0.1:8080`).
    pub listener: String,
    pub peer: String,
    pub bytes: u64,
}
