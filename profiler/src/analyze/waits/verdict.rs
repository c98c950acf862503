//! The stall verdict: is this process stuck, idle, or making progress?
//!
//! A process is STALLED when at least 80 % of its threads have been blocked for longer
//! than the threshold on waits that nothing woke (futexes with no wake call in the
//! window, reads from sockets) *and* there is evidence of unmet demand for them
//! ([`super::demand`]): connections queued or requests unread on its listeners, waiters
//! piling up on one futex, a lock held by another thread, a call to a peer with no
//! answer. The same blocked threads without such evidence are workers waiting for work:
//! idle. Event loops and listeners waiting for work are idle too; sleeps end by
//! themselves and are never stuck.
//!
//! Two findings need no majority, since the other threads may well keep serving: a
//! cycle of threads waiting for each other's locks is a DEADLOCK, and threads waiting
//! for a lock whose owner is itself blocked (sleeping while it holds the lock) are
//! STALLED with that owner.
use std::collections::{BTreeMap, BTreeSet};

use super::{demand, InFlightWait, ThreadSnapshot};
use crate::{
    analyze::frames::frame_below_lock,
    events::StackId,
    model::{StallVerdict, WaitGroup, WaitOn},
};

/// Group the in-flight waits and decide the verdict.
pub fn judge(
    snap: &ThreadSnapshot,
    threshold_ns: u64,
    stack_names: impl Fn(StackId) -> Vec<String>,
) -> (StallVerdict, Vec<WaitGroup>) {
    // Long, not waiting for work by its kind, not a sleep, and nothing woke it.
    let unwoken = |w: &InFlightWait| -> bool {
        if w.on.is_idle_kind() || w.on.is_sleep() || snap.blocked_at_least(w) < threshold_ns {
            return false;
        }
        match &w.on {
            WaitOn::Futex { addr } => snap.futex_wakes.get(addr).copied().unwrap_or(0) == 0,
            _ => true,
        }
    };
    let candidates: Vec<&InFlightWait> = snap.in_flight.iter().filter(|w| unwoken(w)).collect();
    let findings = demand::find(snap, &candidates, threshold_ns, &stack_names);
    let stuck = |w: &InFlightWait| {
        unwoken(w) && findings.covered.contains(&w.tid) || findings.blocked_owners.contains(&w.tid)
    };
    let mut groups: BTreeMap<(String, Vec<String>), WaitGroup> = BTreeMap::new();
    for w in &snap.in_flight {
        let stack = w.stack.map(&stack_names).unwrap_or_default();
        let on = w.on.describe();
        let g = groups
            .entry((on.clone(), stack.clone()))
            .or_insert_with(|| WaitGroup {
                on,
                kind: w.on.kind_label(),
                tids: Vec::new(),
                blocked_at_least_ns: u64::MAX,
                wakes: match &w.on {
                    WaitOn::Futex { addr } => {
                        Some(snap.futex_wakes.get(addr).copied().unwrap_or(0))
                    }
                    _ => None,
                },
                stuck: true,
                frame_below_lock: frame_below_lock(&stack),
                stack,
                locations: Vec::new(),
            });
        g.tids.push(w.tid);
        g.blocked_at_least_ns = g.blocked_at_least_ns.min(snap.blocked_at_least(w));
        g.stuck &= stuck(w);
    }
    let mut groups: Vec<WaitGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.tids
            .len()
            .cmp(&a.tids.len())
            .then_with(|| a.on.cmp(&b.on))
    });

    let threads = snap.threads.max(snap.in_flight.len());
    let n_stuck = snap.in_flight.iter().filter(|w| stuck(w)).count();
    let most = |n: usize| threads > 0 && n * 5 >= threads * 4;
    let verdict = if let Some(cycle) = findings.cycle {
        StallVerdict::Deadlocked {
            threads,
            blocked_at_least_ns: snap
                .in_flight
                .iter()
                .filter(|w| cycle.iter().any(|c| c.tid == w.tid))
                .map(|w| snap.blocked_at_least(w))
                .min()
                .unwrap_or(0),
            cycle,
            stuck: n_stuck,
        }
    } else if most(n_stuck) || !findings.blocked_owners.is_empty() {
        let main = groups
            .iter()
            .find(|g| g.stuck)
            .expect("stuck threads form a group");
        StallVerdict::Stalled {
            stuck: n_stuck,
            threads,
            on: main.on.clone(),
            frame_below_lock: main.frame_below_lock.clone(),
            // The waiters' time: a blocked owner's own wait may be young (a sleep in a
            // loop) while the lock has been held all along.
            blocked_at_least_ns: snap
                .in_flight
                .iter()
                .filter(|w| unwoken(w) && findings.covered.contains(&w.tid))
                .map(|w| snap.blocked_at_least(w))
                .min()
                .unwrap_or(0),
            evidence: findings.evidence,
        }
    } else if most(candidates.len()) && findings.evidence.is_empty() {
        let waiting: BTreeSet<u32> = candidates.iter().map(|w| w.tid).collect();
        StallVerdict::Idle {
            threads,
            detail: waiting_for_work(&groups, &waiting, snap),
        }
    } else if let Some(idle) = snap
        .in_flight
        .iter()
        .filter(|w| w.on.is_idle_kind())
        // The event loop that serves the most sockets, not a helper thread's timer loop.
        .max_by_key(|w| match w.on {
            WaitOn::Poll { sockets, .. } => (sockets, 0),
            _ => (0, 1),
        })
    {
        let detail = match &idle.on {
            WaitOn::Poll {
                syscall, sockets, ..
            } => format!("idle in {syscall}, {sockets} sockets"),
            other => format!("idle in {}", other.describe()),
        };
        StallVerdict::Idle { threads, detail }
    } else {
        StallVerdict::Progressing {
            stuck: n_stuck,
            threads,
        }
    };
    (verdict, groups)
}

/// The idle detail for threads blocked long with no wake and nothing wanting them:
/// `8 threads waiting for work in worker_wait_for_job on futex 0x…, no unmet demand
/// (…)`, naming the largest group of them.
fn waiting_for_work(
    groups: &[WaitGroup],
    waiting: &BTreeSet<u32>,
    snap: &ThreadSnapshot,
) -> String {
    let largest = groups
        .iter()
        .filter(|g| g.tids.iter().all(|t| waiting.contains(t)))
        .max_by_key(|g| g.tids.len());
    let in_frame = |g: &WaitGroup| {
        g.frame_below_lock
            .as_ref()
            .map(|f| format!(" in {f}"))
            .unwrap_or_default()
    };
    let what = match largest {
        Some(g) if g.tids.len() == waiting.len() => format!(
            "{} threads waiting for work{} on {}",
            g.tids.len(),
            in_frame(g),
            g.on
        ),
        Some(g) => format!(
            "{} threads waiting for work, {} of them{} on {}",
            waiting.len(),
            g.tids.len(),
            in_frame(g),
            g.on
        ),
        None => format!("{} threads waiting for work", waiting.len()),
    };
    let listeners = match snap.demand.listeners.len() {
        0 => "no listening socket".to_string(),
        n => format!("nothing queued on {n} listener(s)"),
    };
    format!("{what} with no wake; no unmet demand: {listeners}, no unread requests, no waiters piling up, no lock held")
}

#[cfg(test)]
#[path = "verdict_cases.rs"]
mod cases;

#[cfg(test)]
#[path = "verdict_locks.rs"]
mod locks;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::waits::WaitOn;
    use crate::events::WaitSyscall;

    fn futex_wait(tid: u32, addr: u64, blocked_s: Option<u64>, stack: StackId) -> InFlightWait {
        InFlightWait {
            tid,
            syscall: WaitSyscall::Futex,
            on: WaitOn::Futex { addr },
            blocked_ns: blocked_s.map(|s| s * 1_000_000_000),
            stack: Some(stack),
        }
    }

    fn names(id: StackId) -> Vec<String> {
        let leaf: &[&str] = match id {
            0 => &[
                "main",
                "worker",
                "acquire_nested",
                "___pthread_cond_wait",
                "__futex_abstimed_wait_common",
            ],
            _ => &["main", "__pthread_clockjoin_ex"],
        };
        leaf.iter().map(|s| s.to_string()).collect()
    }

    /// Check that workers blocked on one futex nobody wakes, plus a joining main thread,
    /// make a STALLED verdict naming the futex and the function below the lock.
    #[test]
    fn pool_deadlock_is_stalled() {
        let mut snap = ThreadSnapshot {
            pid: 1,
            threads: 5,
            observed_ns: 5_000_000_000,
            ..Default::default()
        };
        for tid in 2..=5 {
            snap.in_flight
                .push(futex_wait(tid, 0xabc, Some(10 + 2 * u64::from(tid)), 0));
        }
        snap.in_flight.push(futex_wait(1, 0xdef, None, 1));
        let (v, groups) = judge(&snap, 10_000_000_000, names);
        let StallVerdict::Stalled {
            stuck,
            threads,
            on,
            frame_below_lock,
            ..
        } = &v
        else {
            panic!("{v:?}")
        };
        assert_eq!((*stuck, *threads), (4, 5));
        assert_eq!(on, "futex 0xabc");
        assert_eq!(frame_below_lock.as_deref(), Some("acquire_nested"));
        assert_eq!(groups[0].tids, vec![2, 3, 4, 5]);
    }

    /// Check that the same waits are not a stall when the futex was woken in the window
    /// or when the waits are younger than the threshold.
    #[test]
    fn woken_or_short_waits_are_not_stalls() {
        let mut snap = ThreadSnapshot {
            pid: 1,
            threads: 4,
            observed_ns: 5_000_000_000,
            ..Default::default()
        };
        for tid in 1..=4 {
            snap.in_flight
                .push(futex_wait(tid, 0xabc, Some(10 + 2 * u64::from(tid)), 0));
        }
        snap.futex_wakes.insert(0xabc, 3);
        assert!(!judge(&snap, 10_000_000_000, names).0.is_stalled());
        snap.futex_wakes.clear();
        assert!(!judge(&snap, 20_000_000_000, names).0.is_stalled());
        assert!(judge(&snap, 10_000_000_000, names).0.is_stalled());
    }

    /// Check that an event loop in epoll_wait is reported idle, not stalled.
    #[test]
    fn idle_event_loop_is_idle() {
        let snap = ThreadSnapshot {
            pid: 1,
            threads: 1,
            observed_ns: 30_000_000_000,
            in_flight: vec![InFlightWait {
                tid: 1,
                syscall: WaitSyscall::EpollWait,
                on: WaitOn::Poll {
                    syscall: "epoll_wait".into(),
                    sockets: 3,
                    fds: 4,
                },
                blocked_ns: None,
                stack: None,
            }],
            ..Default::default()
        };
        let (v, _) = judge(&snap, 10_000_000_000, names);
        assert_eq!(
            v,
            StallVerdict::Idle {
                threads: 1,
                detail: "idle in epoll_wait, 3 sockets".into()
            }
        );
    }
}
