//! The wait model of a window: per process, the completed waits by stack, the threads
//! blocked now grouped by what they wait on, futex activity, and the stall verdict.
use super::{verdict, ThreadSnapshot, WaitProfile};
use crate::analyze::requests::verdict as req_verdict;
use crate::{
    analyze::Target,
    model::{BlockedStack, ProcessWaits, StallVerdict, WaitGroup},
    stacks::{locations, StackTable},
};

/// Judge one process. `snap` is None when the process was gone at the snapshot.
pub fn process(
    pid: u32,
    target: Option<&Target>,
    snap: Option<ThreadSnapshot>,
    profile: &WaitProfile,
    stacks: &StackTable,
    stall_threshold_ns: u64,
    observed_ns: u64,
) -> ProcessWaits {
    let (mut verdict, mut in_flight) = match &snap {
        Some(snap) => verdict::judge(snap, stall_threshold_ns, |id| {
            stacks.get(id).map(|s| s.names.clone()).unwrap_or_default()
        }),
        None => (StallVerdict::Exited, Vec::new()),
    };
    if let Some(snap) = &snap {
        fill_wait_groups(&mut in_flight, snap, stacks);
    }
    let snap = snap.unwrap_or_else(|| ThreadSnapshot {
        pid,
        comm: target.map(|t| t.comm.clone()).unwrap_or_default(),
        observed_ns,
        ..Default::default()
    });
    let completed = profile
        .of_process(pid)
        .into_iter()
        .map(|(on, stack, totals)| BlockedStack {
            kind: on.kind_label(),
            on: on.describe(),
            frames: stack
                .and_then(|id| stacks.get(id))
                .map(|s| s.names.clone())
                .unwrap_or_default(),
            ns: totals.ns,
            count: totals.count,
            locations: locations::of_stack(stacks, stack),
        })
        .collect();
    let mut futexes: Vec<(u64, u64, u64)> = snap
        .futex_waits
        .iter()
        .map(|(&addr, &waits)| {
            (
                addr,
                waits,
                snap.futex_wakes.get(&addr).copied().unwrap_or(0),
            )
        })
        .collect();
    futexes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // The request ledger at the snapshot: a thread verdict of STALLED says more (the
    // blocked stacks), otherwise requests piling up unanswered decide.
    let names = |id| stacks.get(id).map(|s| s.names.clone()).unwrap_or_default();
    let (requests, peers) = match target {
        Some(t) => {
            let ledger = &t.requests;
            let now_ns = ledger.window_start_ns + observed_ns;
            if !verdict.is_stalled() && verdict != StallVerdict::Exited {
                if let Some(stall) = req_verdict::judge(ledger, now_ns, stall_threshold_ns, names) {
                    verdict = StallVerdict::Requests(stall);
                }
            }
            (
                req_verdict::listeners(ledger, now_ns),
                req_verdict::peers(ledger, now_ns, names),
            )
        }
        None => Default::default(),
    };
    ProcessWaits {
        pid,
        comm: snap.comm.clone(),
        identity: target.map(|t| t.identity.clone()).unwrap_or_default(),
        threads: snap.threads,
        verdict,
        completed,
        in_flight,
        futexes,
        observed_ns,
        async_census: target.and_then(|t| t.async_census.clone()),
        requests,
        peers,
    }
}

/// Give each in-flight wait group the locations of its stack, through any of its
/// threads (they share the frame names, so any of their stacks reads the same).
fn fill_wait_groups(groups: &mut [WaitGroup], snap: &ThreadSnapshot, stacks: &StackTable) {
    for g in groups {
        let id = snap
            .in_flight
            .iter()
            .find(|w| g.tids.contains(&w.tid))
            .and_then(|w| w.stack);
        g.locations = locations::of_stack(stacks, id);
    }
}
