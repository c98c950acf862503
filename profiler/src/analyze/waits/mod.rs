//! The waits analysis: what threads were blocked on, for how long, by stack; and the
//! stall verdict built from a snapshot of the waits that have not ended.
//!
//! Pure except for [`classify::FdClassifier`], which names file descriptors from /proc.
pub mod classify;
pub mod demand;
pub mod report;
pub mod verdict;

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    collect::inflight::InFlight,
    events::{StackId, StackSample, WaitSyscall},
    model::{InFlightWait, ThreadSnapshot, WaitOn},
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
        .collect::<Vec<_>>();
    let demand = demand::signals(&raw.sockets, &raw.futex_words, &raw.tids, &in_flight);
    ThreadSnapshot {
        pid: raw.pid,
        comm,
        threads: raw.threads,
        in_flight,
        futex_wakes: raw.futex_wakes,
        futex_waits: raw.futex_waits,
        observed_ns,
        demand,
    }
}
