//! The stall verdict: is this process stuck, idle, or making progress?
//!
//! A process is STALLED when at least 80 % of its threads have been blocked for longer
//! than the threshold on waits that nothing woke (futexes with no wake call in the
//! window, reads from sockets) *and* there is evidence of unmet demand for them
//! ([`super::demand`]): connections queued or requests unread on its listeners, waiters
//! piling up on one futex, a lock held by another thread or a cycle of them, a call to a
//! peer with no answer. The same blocked threads without such evidence are workers
//! waiting for work: idle. Event loops and listeners waiting for work are idle too.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{demand, demand::Evidence, InFlightWait, ThreadSnapshot};
use crate::events::StackId;

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
    pub locations: Vec<crate::render::pprof::CodeLocation>,
}

/// The verdict for one process.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Stalled {
        stuck: usize,
        threads: usize,
        on: String,
        frame_below_lock: Option<String>,
        blocked_at_least_ns: u64,
        /// Why this is a stall and not idle workers: what wants these threads.
        evidence: Vec<Evidence>,
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

impl Verdict {
    /// One line for the report.
    pub fn line(&self) -> String {
        match self {
            Verdict::Stalled { stuck, threads, on, frame_below_lock, blocked_at_least_ns, evidence } => format!(
                "STALLED: {stuck} of {threads} threads blocked for at least {:.1} s on {on} with no wake{}; unmet demand: {}",
                *blocked_at_least_ns as f64 / 1e9,
                frame_below_lock.as_ref().map(|f| format!(", waiting in {f}")).unwrap_or_default(),
                evidence.iter().map(Evidence::describe).collect::<Vec<_>>().join("; ")
            ),
            Verdict::Idle { threads, detail } => format!("not stalled: idle ({detail}; {threads} threads)"),
            Verdict::Exited => "exited before the end of the window: completed waits only".into(),
            Verdict::Progressing { stuck, threads } => {
                format!("not stalled: {stuck} of {threads} threads blocked past the threshold with no wake")
            }
        }
    }

    /// A short form for a flamegraph subtitle, which has one line of ~150 characters.
    pub fn short(&self) -> String {
        match self {
            Verdict::Stalled {
                stuck,
                threads,
                on,
                frame_below_lock,
                evidence,
                ..
            } => format!(
                "STALLED: {stuck}/{threads} threads on {on}{}{}",
                frame_below_lock
                    .as_ref()
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default(),
                evidence
                    .first()
                    .map(|e| format!(" ({})", e.short()))
                    .unwrap_or_default()
            ),
            // The first clause of the detail: `idle: 8 threads waiting for work in
            // worker_wait_for_job`, `idle in epoll_wait`.
            Verdict::Idle { detail, .. } => {
                let first = detail.split([';', ',']).next().unwrap_or_default();
                let first = first.split(" on futex ").next().unwrap_or_default();
                if first.starts_with("idle") {
                    first.to_string()
                } else {
                    format!("idle: {first}")
                }
            }
            Verdict::Progressing { .. } => "not stalled".into(),
            Verdict::Exited => "exited".into(),
        }
    }

    pub fn is_stalled(&self) -> bool {
        matches!(self, Verdict::Stalled { .. })
    }
}

/// Frames that implement waiting rather than being the code that waits.
fn is_wait_machinery(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "_",
        "pthread_",
        "futex",
        "syscall",
        "sem_",
        "lll_",
        "std::sys",
        "std::sync",
        "std::thread::park",
        "core::",
        "parking_lot",
        "tokio::runtime::park",
        "[unknown]",
        "epoll_",
        "poll",
        "select",
        "recv",
        "read",
        "accept",
        "connect",
        "libc_",
        "sleep",
        "nanosleep",
        "clock_nanosleep",
        "usleep",
        "<std::sync",
        "<std::sys",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The leaf-most frame that is not wait machinery: the code that asked to wait.
pub fn frame_below_lock(stack_root_first: &[String]) -> Option<String> {
    stack_root_first
        .iter()
        .rev()
        .find(|f| !is_wait_machinery(f))
        .cloned()
}

/// Group the in-flight waits and decide the verdict.
pub fn judge(
    snap: &ThreadSnapshot,
    threshold_ns: u64,
    stack_names: impl Fn(StackId) -> Vec<String>,
) -> (Verdict, Vec<WaitGroup>) {
    // Long, not waiting for work by its kind, and nothing woke it.
    let unwoken = |w: &InFlightWait| -> bool {
        if w.on.is_idle_kind() || snap.blocked_at_least(w) < threshold_ns {
            return false;
        }
        match &w.on {
            super::WaitOn::Futex { addr } => snap.futex_wakes.get(addr).copied().unwrap_or(0) == 0,
            _ => true,
        }
    };
    let candidates: Vec<&InFlightWait> = snap.in_flight.iter().filter(|w| unwoken(w)).collect();
    let findings = demand::find(snap, &candidates);
    let stuck = |w: &InFlightWait| unwoken(w) && findings.covered.contains(&w.tid);
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
                    super::WaitOn::Futex { addr } => {
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
    let verdict = if most(n_stuck) {
        let main = groups
            .iter()
            .find(|g| g.stuck)
            .expect("stuck threads form a group");
        Verdict::Stalled {
            stuck: n_stuck,
            threads,
            on: main.on.clone(),
            frame_below_lock: main.frame_below_lock.clone(),
            blocked_at_least_ns: groups
                .iter()
                .filter(|g| g.stuck)
                .map(|g| g.blocked_at_least_ns)
                .min()
                .unwrap_or(0),
            evidence: findings.evidence,
        }
    } else if most(candidates.len()) && findings.evidence.is_empty() {
        let waiting: BTreeSet<u32> = candidates.iter().map(|w| w.tid).collect();
        Verdict::Idle {
            threads,
            detail: waiting_for_work(&groups, &waiting, snap),
        }
    } else if let Some(idle) = snap.in_flight.iter().find(|w| w.on.is_idle_kind()) {
        let detail = match &idle.on {
            super::WaitOn::Poll {
                syscall, sockets, ..
            } => format!("idle in {syscall}, {sockets} sockets"),
            other => format!("idle in {}", other.describe()),
        };
        Verdict::Idle { threads, detail }
    } else {
        Verdict::Progressing {
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
    let what = match largest {
        Some(g) if g.tids.len() == waiting.len() => format!(
            "{} threads waiting for work{} on {}",
            g.tids.len(),
            g.frame_below_lock
                .as_ref()
                .map(|f| format!(" in {f}"))
                .unwrap_or_default(),
            g.on
        ),
        Some(g) => format!(
            "{} threads waiting for work, {} of them{} on {}",
            waiting.len(),
            g.tids.len(),
            g.frame_below_lock
                .as_ref()
                .map(|f| format!(" in {f}"))
                .unwrap_or_default(),
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
mod tests {
    use super::*;
    use crate::events::WaitSyscall;
    use crate::offcpu::WaitOn;

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
            snap.in_flight.push(futex_wait(tid, 0xabc, Some(12), 0));
        }
        snap.in_flight.push(futex_wait(1, 0xdef, None, 1));
        let (v, groups) = judge(&snap, 10_000_000_000, names);
        let Verdict::Stalled {
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
        assert!(v.line().starts_with("STALLED: 4 of 5 threads"));
        assert_eq!(
            v.short(),
            "STALLED: 4/5 threads on futex 0xabc in acquire_nested (4 waiters piled up)"
        );
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
            snap.in_flight.push(futex_wait(tid, 0xabc, Some(12), 0));
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
            Verdict::Idle {
                threads: 1,
                detail: "idle in epoll_wait, 3 sockets".into()
            }
        );
    }

    /// Check that the frame below the lock skips libc, pthread and Rust std machinery.
    #[test]
    fn finds_frame_below_lock() {
        let rust: Vec<String> = [
            "main",
            "pool::wait_for_slot",
            "std::sync::poison::condvar::Condvar::wait",
            "std::sys::pal::unix::futex::futex_wait",
            "syscall",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            frame_below_lock(&rust).as_deref(),
            Some("pool::wait_for_slot")
        );
        assert_eq!(frame_below_lock(&[]), None);
    }
}
