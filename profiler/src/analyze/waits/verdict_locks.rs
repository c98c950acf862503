//! The lock verdicts on snapshots shaped like the root tests' programs (`lock_sleep`,
//! `abba_deadlock` with busy workers): a lock whose owner sleeps, a lock-order deadlock
//! among threads that keep serving, and the healthy twin of each.
use std::collections::BTreeMap;

use super::*;
use crate::events::WaitSyscall;
use crate::render::verdict::{stall_line, stall_short};

const S: u64 = 1_000_000_000;
/// `profiler stalls`: a 2 s watch and a 1 s threshold.
const WATCH: u64 = 2 * S;
const THRESHOLD: u64 = S;

const TAKE_LOCK: StackId = 0;
const HOLD_LOCK: StackId = 1;
const JOIN: StackId = 2;
const TRANSFER: StackId = 3;
const WORKER_NAP: StackId = 4;

fn names(id: StackId) -> Vec<String> {
    let frames: &[&str] = match id {
        TAKE_LOCK => &[
            "start_thread",
            "request",
            "take_lock",
            "___pthread_mutex_lock",
            "__lll_lock_wait",
        ],
        HOLD_LOCK => &[
            "start_thread",
            "holder",
            "hold_lock",
            "usleep",
            "__clock_nanosleep",
        ],
        JOIN => &["main", "__pthread_clockjoin_ex"],
        TRANSFER => &[
            "start_thread",
            "transfer_ab",
            "transfer",
            "___pthread_mutex_lock",
            "__lll_lock_wait",
        ],
        _ => &["start_thread", "worker", "sleep_ms", "__clock_nanosleep"],
    };
    frames.iter().map(|f| f.to_string()).collect()
}

fn futex(tid: u32, addr: u64, stack: StackId) -> InFlightWait {
    InFlightWait {
        tid,
        syscall: WaitSyscall::Futex,
        on: WaitOn::Futex { addr },
        blocked_ns: None,
        stack: Some(stack),
    }
}

/// A thread in `clock_nanosleep`, for `for_ns` so far.
fn sleeping(tid: u32, for_ns: u64, stack: StackId) -> InFlightWait {
    InFlightWait {
        tid,
        syscall: WaitSyscall::ClockNanosleep,
        on: WaitOn::Sleep {
            syscall: "clock_nanosleep".into(),
        },
        blocked_ns: Some(for_ns),
        stack: Some(stack),
    }
}

fn snapshot(threads: usize, in_flight: Vec<InFlightWait>) -> ThreadSnapshot {
    ThreadSnapshot {
        pid: 4000,
        comm: "test".into(),
        threads,
        in_flight,
        observed_ns: WATCH,
        ..Default::default()
    }
}

const TABLE: u64 = 0x5555_0000_4040;
const HOLDER: u32 = 4001;

/// `lock_sleep`: 5 request threads on the table lock, held by a holder napping in
/// `hold_lock`, main joining the holder.
fn lock_held_while_sleeping() -> ThreadSnapshot {
    let mut in_flight: Vec<InFlightWait> =
        (4002..=4006).map(|t| futex(t, TABLE, TAKE_LOCK)).collect();
    in_flight.push(sleeping(HOLDER, 300_000_000, HOLD_LOCK));
    in_flight.push(futex(4000, 0x7f00_0000_02d0, JOIN));
    let mut snap = snapshot(7, in_flight);
    snap.demand.lock_owners.insert(TABLE, HOLDER);
    snap.demand.joins.insert(0x7f00_0000_02d0, HOLDER);
    snap
}

/// Check that threads piled up on a mutex whose owner sleeps are STALLED, with the
/// owner named by TID, code and its own wait, and counted as stuck with its joiner.
#[test]
fn lock_held_while_sleeping_names_the_sleeping_holder() {
    let (v, groups) = judge(&lock_held_while_sleeping(), THRESHOLD, names);
    assert_eq!(
        stall_line(&v),
        "STALLED: 7 of 7 threads blocked for at least 2.0 s on futex 0x555500004040 with no \
         wake, waiting in take_lock; unmet demand: 5 thread(s) wait on the lock futex \
         0x555500004040 held by TID 4001 in hold_lock, which is itself sleeping \
         (clock_nanosleep for at least 300 ms)"
    );
    assert_eq!(
        stall_short(&v),
        "STALLED: 7/7 threads on futex 0x555500004040 in take_lock (lock held by 4001, sleeping)"
    );
    let holder = groups.iter().find(|g| g.tids == [HOLDER]).unwrap();
    assert_eq!((holder.kind.as_str(), holder.stuck), ("sleep", true));
    assert_eq!(holder.on, "sleep (clock_nanosleep)");
}

/// Check that the sleeping holder's waiters are STALLED even when most threads keep
/// serving (no majority needed), and that an owner outside any wait is said so.
#[test]
fn lock_held_while_sleeping_needs_no_majority() {
    let mut snap = lock_held_while_sleeping();
    snap.threads = 20;
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v).starts_with("STALLED: 7 of 20 threads"),
        "{}",
        stall_line(&v)
    );

    // The owner running (not in a wait): its waiters still name it, and the majority
    // rule decides.
    snap.in_flight.retain(|w| w.tid != HOLDER);
    snap.threads = 7;
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v).starts_with("not stalled: 5 of 7 threads"),
        "{}",
        stall_line(&v)
    );
    snap.threads = 6;
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v).ends_with(
            "held by TID 4001, which is not in a wait (running, or in another system call)"
        ),
        "{}",
        stall_line(&v)
    );
}

/// Check the healthy twin: the same threads on the same mutex with short critical
/// sections (the lock changes hands, wakes in the window, waits younger than the
/// threshold) are not stalled, and sleeps alone are never stuck.
#[test]
fn short_critical_sections_are_not_stalled() {
    let mut snap = lock_held_while_sleeping();
    for w in &mut snap.in_flight {
        w.blocked_ns = Some(3_000_000);
    }
    snap.futex_wakes.insert(TABLE, 900);
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        matches!(v, StallVerdict::Progressing { stuck: 0, .. }),
        "{v:?}"
    );

    // Every thread asleep for long: nothing to wake, nothing stuck.
    let snap = snapshot(
        6,
        (4000..4006)
            .map(|t| sleeping(t, 5 * S, WORKER_NAP))
            .collect(),
    );
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert_eq!(
        stall_line(&v),
        "not stalled: 0 of 6 threads blocked past the threshold with no wake"
    );
}

const ACCOUNT_A: u64 = 0x5555_0000_4080;
const ACCOUNT_B: u64 = 0x5555_0000_40c0;

/// `abba_deadlock` with 6 workers: two request threads each waiting for the account
/// the other holds, main joining the first, the workers napping between requests.
fn abba_among_busy_workers() -> ThreadSnapshot {
    let mut in_flight = vec![
        futex(4011, ACCOUNT_B, TRANSFER),
        futex(4012, ACCOUNT_A, TRANSFER),
        futex(4000, 0x7f00_0000_09d0, JOIN),
    ];
    in_flight.extend((4001..=4005).map(|t| sleeping(t, 12_000_000, WORKER_NAP)));
    let mut snap = snapshot(9, in_flight);
    snap.demand.lock_owners = BTreeMap::from([(ACCOUNT_A, 4011), (ACCOUNT_B, 4012)]);
    snap.demand.joins.insert(0x7f00_0000_09d0, 4011);
    snap.futex_wakes.insert(0x5555_0000_4100, 120);
    snap
}

/// Check that a lock-order deadlock of 2 request threads is a DEADLOCK while 6 other
/// workers keep serving, the cycle named with TIDs, locks and code.
#[test]
fn lock_order_deadlock_among_busy_workers_is_a_deadlock() {
    let (v, _) = judge(&abba_among_busy_workers(), THRESHOLD, names);
    assert_eq!(
        stall_line(&v),
        "DEADLOCK: 2 threads wait for each other's locks, blocked for at least 2.0 s: \
         TID 4011 in transfer waits for futex 0x5555000040c0 held by TID 4012; \
         TID 4012 in transfer waits for futex 0x555500004080 held by TID 4011 \
         (3 of 9 threads stuck with them)"
    );
    assert!(v.is_stalled());
}

/// Check the healthy twin: the same threads locking in one order (account A changes
/// hands, its waiter was woken; B is held by the thread that holds A) are not stalled.
#[test]
fn same_lock_order_among_busy_workers_is_not_stalled() {
    let mut snap = abba_among_busy_workers();
    snap.in_flight.retain(|w| w.tid != 4011);
    snap.in_flight[0] = InFlightWait {
        blocked_ns: Some(80_000_000),
        ..futex(4012, ACCOUNT_A, TRANSFER)
    };
    snap.demand.lock_owners = BTreeMap::from([(ACCOUNT_A, 4011)]);
    snap.futex_wakes.insert(ACCOUNT_A, 9);
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(!v.is_stalled(), "{v:?}");
    assert!(
        stall_line(&v).starts_with("not stalled"),
        "{}",
        stall_line(&v)
    );
}
