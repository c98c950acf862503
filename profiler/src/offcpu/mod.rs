//! Off-CPU aggregation: what threads were blocked on, for how long, by stack; and the
//! stall verdict built from a snapshot of the waits that have not ended.
//!
//! Pure except for [`classify::FdClassifier`], which names file descriptors from /proc.
pub mod classify;
pub mod demand;
pub mod verdict;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::events::{StackId, WaitSyscall};

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
            Self::Socket { syscall, .. } => syscall == WaitSyscall::Accept.name(),
            Self::Other { .. } | Self::Futex { .. } => false,
        }
    }
}

/// Total blocked time and number of waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaitTotals {
    pub ns: u64,
    pub count: u64,
}

/// Blocked time of completed waits by (process, what, stack).
#[derive(Default)]
pub struct WaitProfile {
    entries: HashMap<(u32, WaitOn, Option<StackId>), WaitTotals>,
}

impl WaitProfile {
    pub fn add(&mut self, pid: u32, on: WaitOn, stack: Option<StackId>, ns: u64) {
        let t = self.entries.entry((pid, on, stack)).or_default();
        t.ns += ns;
        t.count += 1;
    }

    /// Entries of one process, largest blocked time first.
    pub fn of_process(&self, pid: u32) -> Vec<(&WaitOn, Option<StackId>, WaitTotals)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|((p, ..), _)| *p == pid)
            .map(|((_, on, stack), t)| (on, *stack, *t))
            .collect();
        v.sort_by(|a, b| {
            b.2.ns
                .cmp(&a.2.ns)
                .then_with(|| a.0.cmp(b.0))
                .then_with(|| a.1.cmp(&b.1))
        });
        v
    }
}

/// A thread that was inside a wait when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
#[derive(Clone, Debug, Default, Serialize)]
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
    pub demand: demand::DemandSignals,
}

impl ThreadSnapshot {
    /// How long thread `w` has certainly been blocked.
    pub fn blocked_at_least(&self, w: &InFlightWait) -> u64 {
        w.blocked_ns.unwrap_or(self.observed_ns)
    }
}
