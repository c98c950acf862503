//! The waits analysis: what threads were blocked on, for how long, by stack; and the
//! stall verdict built from a snapshot of the waits that have not ended.
//!
//! Pure except for [`classify::FdClassifier`], which names file descriptors from /proc.
pub mod classify;
pub mod report;
pub mod verdict;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::{
    collect::inflight::InFlight,
    events::{StackId, StackSample, WaitSyscall},
    model::WaitOn,
};

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
}

impl ThreadSnapshot {
    /// How long thread `w` has certainly been blocked.
    pub fn blocked_at_least(&self, w: &InFlightWait) -> u64 {
        w.blocked_ns.unwrap_or(self.observed_ns)
    }
}

/// The snapshot of one process from its blocked threads: each wait named (`classify`:
/// syscall, fd, futex address → what it waits on) and its stack interned (`resolve`).
pub fn snapshot(
    raw: InFlight,
    comm: String,
    observed_ns: u64,
    mut resolve: impl FnMut(&StackSample) -> Option<StackId>,
    mut classify: impl FnMut(WaitSyscall, i32, u64) -> WaitOn,
) -> ThreadSnapshot {
    let in_flight = raw
        .blocked
        .iter()
        .map(|b| InFlightWait {
            tid: b.tid,
            syscall: b.syscall,
            on: classify(b.syscall, b.fd, b.futex_addr),
            blocked_ns: b.start_ns.map(|s| raw.now_ns.saturating_sub(s)),
            stack: b.stack.as_ref().and_then(&mut resolve),
        })
        .collect();
    ThreadSnapshot {
        pid: raw.pid,
        comm,
        threads: raw.threads,
        in_flight,
        futex_wakes: raw.futex_wakes,
        futex_waits: raw.futex_waits,
        observed_ns,
    }
}
