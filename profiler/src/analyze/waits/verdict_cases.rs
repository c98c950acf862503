//! The stall verdict on in-flight snapshots shaped like the ones the root tests record:
//! each stalled case next to its healthy twin, which differs only by the evidence of
//! unmet demand.
use std::collections::BTreeMap;

use super::*;
use crate::events::WaitSyscall;
use crate::model::{DemandSignals, ListenerQueue, UnreadConnection};
use crate::render::verdict::{evidence_clause, stall_line, stall_short};

const S: u64 = 1_000_000_000;
/// `profiler stalls`: a 2 s watch and a 1 s threshold.
const WATCH: u64 = 2 * S;
const THRESHOLD: u64 = S;

/// Stack ids of the recorded cases, by the function that waits.
const WAIT_FOR_JOB: StackId = 0;
const ACQUIRE_NESTED: StackId = 1;
const HEALTH_ACCEPT: StackId = 2;
const LOCK: StackId = 3;
const QUERY: StackId = 4;
const SERVE_CLIENT: StackId = 5;
const UV_LOOP: StackId = 6;
const UV_WORKER: StackId = 7;
const V8_WORKER: StackId = 8;

fn names(id: StackId) -> Vec<String> {
    let frames: &[&str] = match id {
        WAIT_FOR_JOB => &[
            "start_thread",
            "worker",
            "worker_wait_for_job",
            "___pthread_cond_wait",
        ],
        ACQUIRE_NESTED => &[
            "start_thread",
            "worker",
            "handle_request",
            "acquire_nested",
            "pool_acquire",
            "___pthread_cond_wait",
        ],
        HEALTH_ACCEPT => &["start_thread", "health_check", "accept"],
        LOCK => &[
            "start_thread",
            "transfer",
            "___pthread_mutex_lock",
            "__lll_lock_wait",
        ],
        QUERY => &["main", "run_report_query", "PQgetResult", "poll"],
        SERVE_CLIENT => &["start_thread", "serve_client", "read"],
        UV_LOOP => &["main", "uv_run", "epoll_wait"],
        UV_WORKER => &[
            "start_thread",
            "worker",
            "uv_cond_wait",
            "pthread_cond_wait",
        ],
        _ => &[
            "start_thread",
            "v8::platform::WorkerThread",
            "pthread_cond_wait",
        ],
    };
    frames.iter().map(|f| f.to_string()).collect()
}

fn wait(tid: u32, on: WaitOn, syscall: WaitSyscall, stack: StackId) -> InFlightWait {
    InFlightWait {
        tid,
        syscall,
        on,
        blocked_ns: None,
        stack: Some(stack),
    }
}

fn futex(tid: u32, addr: u64, stack: StackId) -> InFlightWait {
    wait(tid, WaitOn::Futex { addr }, WaitSyscall::Futex, stack)
}

fn snapshot(threads: usize, in_flight: Vec<InFlightWait>, demand: DemandSignals) -> ThreadSnapshot {
    ThreadSnapshot {
        pid: 1000,
        comm: "test".into(),
        threads,
        in_flight,
        observed_ns: WATCH,
        demand,
        ..Default::default()
    }
}

/// 8 workers of `idle_pool` in `worker_wait_for_job` since before the watch; the main
/// thread sleeps (not a wait the probes know).
fn idle_workers() -> Vec<InFlightWait> {
    (1001..=1008)
        .map(|tid| futex(tid, 0x5555_0000_4060, WAIT_FOR_JOB))
        .collect()
}

fn health_listener(queued: u64) -> DemandSignals {
    DemandSignals {
        listeners: vec![ListenerQueue {
            local: "127.0.0.1:41000".into(),
            queued,
        }],
        ..Default::default()
    }
}

fn health_thread() -> InFlightWait {
    wait(
        1009,
        WaitOn::Socket {
            syscall: "accept".into(),
            peer: "tcp listening 127.0.0.1:41000".into(),
        },
        WaitSyscall::Accept,
        HEALTH_ACCEPT,
    )
}

/// Check that an idle worker pool (8 threads in `pthread_cond_wait`, no jobs, no
/// listener) is idle, waiting for work, and not STALLED.
#[test]
fn idle_pool_is_idle() {
    let (v, groups) = judge(
        &snapshot(9, idle_workers(), DemandSignals::default()),
        THRESHOLD,
        names,
    );
    assert!(!v.is_stalled(), "{v:?}");
    assert_eq!(
        stall_line(&v),
        "not stalled: idle (8 threads waiting for work in worker_wait_for_job on futex 0x555500004060 \
         with no wake; no unmet demand: no listening socket, no unread requests, no waiters piling up, \
         no lock held; 9 threads)"
    );
    assert!(groups.iter().all(|g| !g.stuck));
    assert_eq!(
        stall_short(&v),
        "idle: 8 threads waiting for work in worker_wait_for_job"
    );
}

/// Check that the idle pool with a health-check thread in `accept` (its listener's
/// queue empty) is idle, and that the same pool with connections queued on the listener
/// is STALLED with that evidence in the sentence.
#[test]
fn idle_pool_with_health_check_is_idle_until_connections_queue() {
    let mut in_flight = idle_workers();
    in_flight.push(health_thread());
    let (v, _) = judge(
        &snapshot(10, in_flight.clone(), health_listener(0)),
        THRESHOLD,
        names,
    );
    let StallVerdict::Idle { detail, .. } = &v else {
        panic!("{v:?}")
    };
    assert!(
        detail.contains("nothing queued on 1 listener(s)"),
        "{detail}"
    );

    let (v, _) = judge(
        &snapshot(10, in_flight, health_listener(5)),
        THRESHOLD,
        names,
    );
    assert!(v.is_stalled(), "{v:?}");
    assert!(
        stall_line(&v)
            .ends_with("unmet demand: 5 connection(s) queued unaccepted on 127.0.0.1:41000"),
        "{}",
        stall_line(&v)
    );
}

/// The pool deadlock attached late: 4 workers in `acquire_nested` since before the
/// watch, main asleep, and (when `queued`) the two requests the workers never took in
/// the listener's accept queue.
fn pool_deadlock(queued: u64) -> ThreadSnapshot {
    let in_flight = (2001..=2004)
        .map(|tid| futex(tid, 0x5555_0000_40a0, ACQUIRE_NESTED))
        .collect();
    snapshot(5, in_flight, health_listener(queued))
}

/// Check that the pool deadlock attached late is STALLED on the queued requests, and
/// that its twin with nothing queued (the same threads, no demand) is idle.
#[test]
fn late_pool_deadlock_is_stalled_by_its_queue() {
    let (v, groups) = judge(&pool_deadlock(2), THRESHOLD, names);
    assert_eq!(
        stall_line(&v),
        "STALLED: 4 of 5 threads blocked for at least 2.0 s on futex 0x5555000040a0 with no wake, \
         waiting in pool_acquire; unmet demand: 2 connection(s) queued unaccepted on 127.0.0.1:41000"
    );
    assert_eq!(
        stall_short(&v),
        "STALLED: 4/5 threads on futex 0x5555000040a0 in pool_acquire (2 queued on 127.0.0.1:41000)"
    );
    assert!(groups[0].stuck);
    let (v, _) = judge(&pool_deadlock(0), THRESHOLD, names);
    assert!(matches!(v, StallVerdict::Idle { .. }), "{v:?}");
}

/// Check that unread request bytes on an accepted connection are evidence too, and that
/// bytes unread on an outbound connection (an answer, not a request) are not.
#[test]
fn unread_requests_are_demand() {
    let mut snap = pool_deadlock(0);
    snap.demand.unread.push(UnreadConnection {
        listener: "127.0.0.1:41000".into(),
        peer: "127.0.0.1:51000".into(),
        bytes: 78,
    });
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v)
            .ends_with("78 request byte(s) unread on 1 connection(s) accepted on 127.0.0.1:41000"),
        "{}",
        stall_line(&v)
    );
}

/// Check that workers which began waiting on one futex one after the other during the
/// watch, none woken, are a pile-up (STALLED), while the same waiters arriving at once
/// (a pool going back to sleep after a burst), with a wake in the window, or only one
/// arrival, are not.
#[test]
fn waiters_piling_up_are_demand() {
    let mut snap = pool_deadlock(0);
    for (i, w) in snap.in_flight.iter_mut().enumerate() {
        w.blocked_ns = Some(WATCH - S / 10 - i as u64 * 3 * S / 10);
    }
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v).ends_with(
            "4 threads began waiting on futex 0x5555000040a0 over 0.9 s while watched, none woken"
        ),
        "{}",
        stall_line(&v)
    );
    snap.futex_wakes.insert(0x5555_0000_40a0, 1);
    assert!(!judge(&snap, THRESHOLD, names).0.is_stalled());
    snap.futex_wakes.clear();
    let burst = |snap: &mut ThreadSnapshot| {
        for w in &mut snap.in_flight {
            w.blocked_ns = Some(WATCH - S / 10);
        }
    };
    let mut at_once = snap.clone();
    burst(&mut at_once);
    assert!(matches!(
        judge(&at_once, THRESHOLD, names).0,
        StallVerdict::Idle { .. }
    ));
    for w in &mut snap.in_flight[1..] {
        w.blocked_ns = None;
    }
    assert!(!judge(&snap, THRESHOLD, names).0.is_stalled());
}

/// Check that two threads each waiting for a mutex the other holds are a DEADLOCK, and
/// that the same waits without owners (condition variables) are idle.
#[test]
fn lock_cycle_is_a_deadlock() {
    let in_flight = vec![futex(3001, 0xa000, LOCK), futex(3002, 0xb000, LOCK)];
    let mut snap = snapshot(2, in_flight, DemandSignals::default());
    snap.demand.lock_owners = BTreeMap::from([(0xa000, 3002), (0xb000, 3001)]);
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert_eq!(
        stall_line(&v),
        "DEADLOCK: 2 threads wait for each other's locks, blocked for at least 2.0 s: \
         TID 3001 in transfer waits for futex 0xa000 held by TID 3002; \
         TID 3002 in transfer waits for futex 0xb000 held by TID 3001 \
         (2 of 2 threads stuck with them)"
    );
    assert_eq!(
        stall_short(&v),
        "DEADLOCK: TIDs 3001, 3002 wait for each other's locks in transfer"
    );
    assert!(v.is_stalled());
    snap.demand.lock_owners.clear();
    assert!(matches!(
        judge(&snap, THRESHOLD, names).0,
        StallVerdict::Idle { .. }
    ));
}

/// Check that the lock-order deadlock of `abba_deadlock` (two threads each waiting for
/// the mutex the other holds, main joining one of them) is a DEADLOCK with all 3
/// threads stuck, while main joining an idle worker is still idle.
#[test]
fn lock_cycle_with_a_joining_main_is_stalled() {
    let in_flight = vec![
        futex(3001, 0xa000, LOCK),
        futex(3002, 0xb000, LOCK),
        futex(3000, 0xc000, WAIT_FOR_JOB),
    ];
    let mut snap = snapshot(3, in_flight, DemandSignals::default());
    snap.demand.lock_owners = BTreeMap::from([(0xa000, 3002), (0xb000, 3001)]);
    snap.demand.joins.insert(0xc000, 3001);
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v).ends_with("(3 of 3 threads stuck with them)"),
        "{}",
        stall_line(&v)
    );

    let mut in_flight = idle_workers();
    in_flight.push(futex(1000, 0xc000, WAIT_FOR_JOB));
    let mut snap = snapshot(9, in_flight, DemandSignals::default());
    snap.demand.joins.insert(0xc000, 1001);
    assert!(matches!(
        judge(&snap, THRESHOLD, names).0,
        StallVerdict::Idle { .. }
    ));
}

/// Check that threads waiting for a mutex whose owner is itself blocked are STALLED,
/// naming the owner and its own wait, and that the owner counts as stuck with them.
#[test]
fn lock_held_by_a_blocked_thread_is_demand() {
    let mut in_flight: Vec<InFlightWait> = (3001..=3004).map(|t| futex(t, 0xa000, LOCK)).collect();
    in_flight.push(futex(3005, 0xc000, WAIT_FOR_JOB));
    let mut snap = snapshot(5, in_flight, DemandSignals::default());
    snap.demand.lock_owners.insert(0xa000, 3005);
    let (v, groups) = judge(&snap, THRESHOLD, names);
    let StallVerdict::Stalled {
        stuck, evidence, ..
    } = &v
    else {
        panic!("{v:?}")
    };
    assert_eq!(*stuck, 5);
    assert_eq!(
        evidence_clause(&evidence[0]),
        "4 thread(s) wait on the lock futex 0xa000 held by TID 3005 in worker_wait_for_job, \
         which is itself blocked (futex 0xc000 for at least 2.0 s)"
    );
    assert!(groups.iter().any(|g| g.tids == [3005] && g.stuck));
}

/// Check that a client blocked for an answer from its database is STALLED, while a
/// thread-per-connection server thread blocked reading its client's next request is not.
#[test]
fn awaiting_a_peer_is_demand_but_awaiting_a_client_is_not() {
    let on = |peer: &str| WaitOn::Socket {
        syscall: "poll".into(),
        peer: peer.into(),
    };
    let snap = snapshot(
        1,
        vec![wait(4001, on("127.0.0.1:5432"), WaitSyscall::Poll, QUERY)],
        DemandSignals::default(),
    );
    let (v, _) = judge(&snap, THRESHOLD, names);
    assert!(
        stall_line(&v).ends_with("1 thread(s) waiting for an answer from 127.0.0.1:5432"),
        "{}",
        stall_line(&v)
    );
    let mut demand = health_listener(0);
    demand.inbound_peers.insert("127.0.0.1:51000".into());
    let snap = snapshot(
        1,
        vec![wait(
            4001,
            on("127.0.0.1:51000"),
            WaitSyscall::Read,
            SERVE_CLIENT,
        )],
        demand,
    );
    assert!(!judge(&snap, THRESHOLD, names).0.is_stalled());
}

/// Check that an idle Node server (event loop in `epoll_wait`, libuv and V8 workers
/// waiting for tasks, nothing queued on its listener) is idle.
#[test]
fn idle_node_server_is_idle() {
    let mut in_flight = vec![wait(
        5000,
        WaitOn::Poll {
            syscall: "epoll_wait".into(),
            sockets: 1,
            fds: 4,
        },
        WaitSyscall::EpollWait,
        UV_LOOP,
    )];
    in_flight.extend((5001..=5004).map(|t| futex(t, 0x7f00_0000_1000, V8_WORKER)));
    in_flight.extend((5005..=5008).map(|t| futex(t, 0x7f00_0000_2000, UV_WORKER)));
    let snap = snapshot(10, in_flight, health_listener(0));
    let (v, _) = judge(&snap, THRESHOLD, names);
    let StallVerdict::Idle { detail, threads } = &v else {
        panic!("{v:?}")
    };
    assert_eq!(*threads, 10);
    assert!(detail.contains("8 threads waiting for work"), "{detail}");
}

/// Check that a Node server below the 80 % mark is idle in the event loop with its
/// sockets, not in a helper thread's timer loop without any.
#[test]
fn idle_node_names_the_main_event_loop() {
    let poll = |tid, sockets| {
        wait(
            tid,
            WaitOn::Poll {
                syscall: "epoll_wait".into(),
                sockets,
                fds: sockets + 2,
            },
            WaitSyscall::EpollWait,
            UV_LOOP,
        )
    };
    let in_flight = vec![poll(6001, 0), poll(6000, 1), futex(6002, 0x1000, V8_WORKER)];
    let (v, _) = judge(
        &snapshot(7, in_flight, health_listener(0)),
        THRESHOLD,
        names,
    );
    assert_eq!(
        stall_line(&v),
        "not stalled: idle (idle in epoll_wait, 1 sockets; 7 threads)"
    );
}
