//! Evidence of unmet demand: what separates a stuck process from an idle one.
//!
//! Threads blocked for seconds on a futex nobody wakes look the same whether a pool
//! deadlocked or its workers simply have nothing to do. The stall verdict therefore asks
//! for evidence that something wants these threads to move and is not being served:
//! connections queued on a listener nobody accepts, request bytes nobody reads, waiters
//! piling up on one futex during the window, a lock held by another thread (or a cycle of
//! them: a deadlock), or a call to a peer that was never answered. Without any of it, the
//! same picture is an idle process, and the verdict says so.
//!
//! Pure: the signals are read from /proc by the snapshot ([`DemandSignals`]), the rules
//! live here and are tested on recorded snapshots.
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    analyze::frames::frame_below_lock,
    events::StackId,
    model::{
        CycleStep, DemandSignals, Evidence, InFlightWait, ListenerQueue, OwnerWait, ThreadSnapshot,
        UnreadConnection, WaitOn,
    },
    sockets::SocketInfo,
};

impl DemandSignals {
    /// The listeners, their queues and their accepted connections among `own`, the
    /// sockets the process holds open. A connection belongs to a listener when its
    /// local address is the listener's (or the listener is bound to any address).
    pub fn from_sockets<'a>(own: impl IntoIterator<Item = &'a SocketInfo>) -> Self {
        const ESTABLISHED: u8 = 1;
        const LISTEN: u8 = 10;
        let own: Vec<&SocketInfo> = own.into_iter().filter(|s| s.proto == "tcp").collect();
        let listeners: Vec<std::net::SocketAddr> = own
            .iter()
            .filter(|s| s.state == LISTEN)
            .filter_map(|s| s.local)
            .collect();
        let mut signals = Self {
            listeners: own
                .iter()
                .filter(|s| s.state == LISTEN)
                .filter_map(|s| {
                    Some(ListenerQueue {
                        local: s.local?.to_string(),
                        queued: s.rx_queue,
                    })
                })
                .collect(),
            ..Self::default()
        };
        signals.listeners.sort_by(|a, b| a.local.cmp(&b.local));
        for s in own.iter().filter(|s| s.state == ESTABLISHED) {
            let (Some(local), Some(remote)) = (s.local, s.remote) else {
                continue;
            };
            let Some(listener) = listeners.iter().find(|l| {
                l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip())
            }) else {
                continue;
            };
            signals.inbound_peers.insert(s.label());
            if s.rx_queue > 0 {
                signals.unread.push(UnreadConnection {
                    listener: listener.to_string(),
                    peer: remote.to_string(),
                    bytes: s.rx_queue,
                });
            }
        }
        signals
    }
}

/// The signals of one snapshot: the process's `sockets`, and for each futex a thread
/// waits on, the lock owner or joined thread its `futex_words` (the word and the word
/// 8 bytes in) name among `tids`.
pub fn signals(
    sockets: &[SocketInfo],
    futex_words: &BTreeMap<u64, (u32, u32)>,
    tids: &[u32],
    in_flight: &[InFlightWait],
) -> DemandSignals {
    let mut signals = DemandSignals::from_sockets(sockets);
    for w in in_flight {
        let WaitOn::Futex { addr } = w.on else {
            continue;
        };
        let Some(&(word, owner_field)) = futex_words.get(&addr) else {
            continue;
        };
        let other = |t: &u32| *t != w.tid;
        if let Some(owner) = lock_owner(word, owner_field, tids).filter(other) {
            signals.lock_owners.insert(addr, owner);
        } else if let Some(joined) = joined_thread(word, tids).filter(other) {
            signals.joins.insert(addr, joined);
        }
    }
    signals
}

/// The evidence found in a snapshot, and which of the `candidates` (threads blocked
/// past the threshold with no wake) it covers: process-wide demand (queued or unread
/// requests) covers every candidate, the rest only the threads it is about.
pub struct Findings {
    pub evidence: Vec<Evidence>,
    pub covered: BTreeSet<u32>,
    /// A deadlock: threads waiting for each other's locks.
    pub cycle: Option<Vec<CycleStep>>,
    /// Owners of locks that candidates wait for, themselves blocked in a wait nothing
    /// woke (a sleep included): stuck with their waiters, whatever their wait is.
    pub blocked_owners: BTreeSet<u32>,
}

/// Look for unmet demand among `candidates`, the waits already judged long and unwoken
/// (past `threshold_ns`); `stack_names` names a wait's frames, root first.
pub fn find(
    snap: &ThreadSnapshot,
    candidates: &[&InFlightWait],
    threshold_ns: u64,
    stack_names: &dyn Fn(StackId) -> Vec<String>,
) -> Findings {
    let signals = &snap.demand;
    let mut evidence = Vec::new();
    let mut covered = BTreeSet::new();
    let all: BTreeSet<u32> = candidates.iter().map(|w| w.tid).collect();

    for l in signals.listeners.iter().filter(|l| l.queued > 0) {
        evidence.push(Evidence::QueuedConnections {
            listener: l.local.clone(),
            queued: l.queued,
        });
    }
    let mut unread: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for u in signals.unread.iter().filter(|u| u.bytes > 0) {
        let e = unread.entry(&u.listener).or_default();
        e.0 += 1;
        e.1 += u.bytes;
    }
    for (listener, (connections, bytes)) in unread {
        evidence.push(Evidence::UnreadRequests {
            listener: listener.to_string(),
            connections,
            bytes,
        });
    }
    if !evidence.is_empty() {
        covered.extend(&all);
    }

    let frame = |w: &InFlightWait| w.stack.and_then(|id| frame_below_lock(&stack_names(id)));
    let cycle = lock_cycle(candidates, &signals.lock_owners);
    if let Some(tids) = &cycle {
        covered.extend(tids);
        evidence.push(Evidence::LockCycle { tids: tids.clone() });
    }
    let mut blocked_owners = BTreeSet::new();
    let mut futex_groups: BTreeMap<u64, Vec<&InFlightWait>> = BTreeMap::new();
    let mut peers: BTreeMap<&str, usize> = BTreeMap::new();
    for w in candidates {
        match &w.on {
            WaitOn::Futex { addr } => futex_groups.entry(*addr).or_default().push(w),
            WaitOn::Socket { peer, .. } if !signals.inbound_peers.contains(peer) => {
                *peers.entry(peer).or_default() += 1;
                covered.insert(w.tid);
            }
            _ => {}
        }
    }
    for (addr, waiters) in futex_groups {
        let on = WaitOn::Futex { addr }.describe();
        if let Some(&owner) = signals.lock_owners.get(&addr) {
            let in_cycle = cycle.as_ref().is_some_and(|c| c.contains(&owner));
            covered.extend(waiters.iter().map(|w| w.tid));
            if !in_cycle {
                let owner_waits = snap.in_flight.iter().find(|w| w.tid == owner);
                if owner_waits.is_some_and(|w| !woken(snap, w)) {
                    blocked_owners.insert(owner);
                }
                evidence.push(Evidence::LockHeld {
                    on,
                    owner,
                    waiters: waiters.len(),
                    owner_waits: owner_waits.map(|w| OwnerWait {
                        on: match &w.on {
                            WaitOn::Sleep { syscall } => syscall.clone(),
                            other => other.describe(),
                        },
                        sleeping: w.on.is_sleep(),
                        frame: frame(w),
                        blocked_at_least_ns: snap.blocked_at_least(w),
                    }),
                });
            }
            continue;
        }
        // A pile-up: the queue on this futex kept growing while nobody was served.
        // Waits whose start the probes saw began in the watch; they must be spread over
        // at least half the threshold, so a pool going back to sleep at once after a
        // burst (or starting up) is not one. Wakes are counted for the window: any wake
        // on this futex rules it out.
        let arrivals: Vec<u64> = snap
            .in_flight
            .iter()
            .filter(|w| w.on == WaitOn::Futex { addr })
            .filter_map(|w| w.blocked_ns)
            .collect();
        let over_ns = arrivals.iter().max().unwrap_or(&0) - arrivals.iter().min().unwrap_or(&0);
        if arrivals.len() >= 2
            && over_ns >= threshold_ns / 2
            && snap.futex_wakes.get(&addr).copied().unwrap_or(0) == 0
        {
            covered.extend(waiters.iter().map(|w| w.tid));
            evidence.push(Evidence::PileUp {
                on,
                arrived: arrivals.len(),
                over_ns,
            });
        }
    }
    for (peer, threads) in peers {
        evidence.push(Evidence::AwaitingPeer {
            peer: peer.to_string(),
            threads,
        });
    }
    covered.extend(&blocked_owners);
    // A thread joining a stuck thread waits as long as it does (chains included).
    loop {
        let joining: Vec<u32> = candidates
            .iter()
            .filter(|w| !covered.contains(&w.tid))
            .filter(|w| match w.on {
                WaitOn::Futex { addr } => signals
                    .joins
                    .get(&addr)
                    .is_some_and(|t| covered.contains(t)),
                _ => false,
            })
            .map(|w| w.tid)
            .collect();
        if joining.is_empty() {
            break;
        }
        covered.extend(joining);
    }
    let cycle = cycle.map(|tids| {
        tids.iter()
            .filter_map(|&tid| {
                let w = candidates.iter().find(|w| w.tid == tid)?;
                let WaitOn::Futex { addr } = w.on else {
                    return None;
                };
                Some(CycleStep {
                    tid,
                    on: w.on.describe(),
                    owner: *signals.lock_owners.get(&addr)?,
                    frame: frame(w),
                })
            })
            .collect()
    });
    Findings {
        evidence,
        covered,
        cycle,
        blocked_owners,
    }
}

/// Whether something woke `w` in the window: a wake call on its futex. Other waits
/// (a sleep, a socket read) are not woken by the process's own calls.
fn woken(snap: &ThreadSnapshot, w: &InFlightWait) -> bool {
    match w.on {
        WaitOn::Futex { addr } => snap.futex_wakes.get(&addr).copied().unwrap_or(0) > 0,
        _ => false,
    }
}

/// A cycle in the wait-for graph of lock waiters (thread → the owner of the lock it
/// waits on), as the TIDs in order, smallest first; `None` without one.
fn lock_cycle(candidates: &[&InFlightWait], owners: &BTreeMap<u64, u32>) -> Option<Vec<u32>> {
    let waits_for: BTreeMap<u32, u32> = candidates
        .iter()
        .filter_map(|w| match w.on {
            WaitOn::Futex { addr } => Some((w.tid, *owners.get(&addr)?)),
            _ => None,
        })
        .collect();
    for &start in waits_for.keys() {
        let mut path = vec![start];
        let mut at = start;
        while let Some(&next) = waits_for.get(&at) {
            if let Some(pos) = path.iter().position(|&t| t == next) {
                let mut cycle = path[pos..].to_vec();
                let min = cycle.iter().enumerate().min_by_key(|(_, t)| **t)?.0;
                cycle.rotate_left(min);
                return Some(cycle);
            }
            path.push(next);
            at = next;
        }
    }
    None
}

/// The thread that holds a lock, from the first 12 bytes at the futex address a thread
/// waits on (`word`, then `owner_field` 8 bytes in), given the process's `tids`.
///
/// - PI futexes and musl's recursive/error-checking mutexes keep the owner's TID in the
///   word itself, with the high bit (`FUTEX_WAITERS`) set once someone waits.
/// - glibc's `pthread_mutex_t` keeps 1 (locked) or 2 (locked, contended) in the word and
///   the owner's TID in `__owner`, 8 bytes in.
///
/// Anything else (a condition variable, a join on a thread's TID word, Rust's own
/// futex mutex) names no owner.
pub fn lock_owner(word: u32, owner_field: u32, tids: &[u32]) -> Option<u32> {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    let live = |t: u32| t != 0 && tids.contains(&t);
    if word & FUTEX_WAITERS != 0 && live(word & FUTEX_TID_MASK) {
        return Some(word & FUTEX_TID_MASK);
    }
    (matches!(word, 1 | 2) && live(owner_field)).then_some(owner_field)
}

/// The thread a join waits for: glibc's and musl's `pthread_join` wait on the joined
/// thread's TID word while it still holds that TID (no waiters bit).
pub fn joined_thread(word: u32, tids: &[u32]) -> Option<u32> {
    (word != 0 && tids.contains(&word)).then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the owner is read from PI/musl words and from glibc's `__owner`, and
    /// that condvar words, join words and dead TIDs name nobody.
    #[test]
    fn reads_lock_owners() {
        let tids = [100, 101, 102];
        assert_eq!(lock_owner(0x8000_0000 | 101, 0, &tids), Some(101));
        assert_eq!(lock_owner(2, 102, &tids), Some(102));
        assert_eq!(lock_owner(1, 100, &tids), Some(100));
        // A join waits on the thread's TID word, without the waiters bit.
        assert_eq!(lock_owner(101, 0, &tids), None);
        // A condition variable's sequence word with a stray value after it.
        assert_eq!(lock_owner(4, 101, &tids), None);
        assert_eq!(lock_owner(2, 999, &tids), None);
        assert_eq!(lock_owner(0x8000_0000 | 999, 0, &tids), None);
        assert_eq!(lock_owner(0, 0, &tids), None);
        assert_eq!(joined_thread(101, &tids), Some(101));
        assert_eq!(joined_thread(2, &tids), None);
        assert_eq!(joined_thread(0x8000_0000 | 101, &tids), None);
    }

    fn futex(tid: u32, addr: u64) -> InFlightWait {
        InFlightWait {
            tid,
            syscall: crate::events::WaitSyscall::Futex,
            on: WaitOn::Futex { addr },
            blocked_ns: None,
            stack: None,
        }
    }

    /// Check that two threads each waiting for the lock the other holds form a cycle,
    /// named smallest TID first, and that a chain without a cycle is not one.
    #[test]
    fn finds_lock_cycles() {
        let a = futex(20, 0xa);
        let b = futex(10, 0xb);
        let owners = BTreeMap::from([(0xa, 10), (0xb, 20)]);
        assert_eq!(lock_cycle(&[&a, &b], &owners), Some(vec![10, 20]));
        let chain = BTreeMap::from([(0xa, 10), (0xb, 30)]);
        assert_eq!(lock_cycle(&[&a, &b], &chain), None);
        assert_eq!(lock_cycle(&[], &owners), None);
    }

    fn tcp(local: &str, remote: Option<&str>, state: u8, rx_queue: u64) -> SocketInfo {
        SocketInfo {
            inode: 0,
            proto: "tcp",
            local: Some(local.parse().unwrap()),
            remote: remote.map(|r| r.parse().unwrap()),
            state,
            rx_queue,
            path: None,
        }
    }

    /// Check that listeners carry their accept queue, that accepted connections are told
    /// from outbound ones by the listener's address, and that unread bytes count only on
    /// accepted connections.
    #[test]
    fn reads_listeners_and_inbound_connections() {
        let sockets = [
            tcp("0.0.0.0:8080", Some("0.0.0.0:0"), 10, 3),
            tcp("127.0.0.1:9090", Some("0.0.0.0:0"), 10, 0),
            // Accepted on :8080 with 40 unread bytes.
            tcp("127.0.0.1:8080", Some("127.0.0.1:50000"), 1, 40),
            // Accepted on :9090, all read.
            tcp("127.0.0.1:9090", Some("127.0.0.1:50001"), 1, 0),
            // Outbound to a database, with an answer not read yet: not a request.
            tcp("127.0.0.1:50002", Some("127.0.0.1:5432"), 1, 17),
        ];
        let s = DemandSignals::from_sockets(&sockets);
        assert_eq!(
            s.listeners,
            vec![
                ListenerQueue {
                    local: "0.0.0.0:8080".into(),
                    queued: 3
                },
                ListenerQueue {
                    local: "127.0.0.1:9090".into(),
                    queued: 0
                },
            ]
        );
        assert_eq!(
            s.unread,
            vec![UnreadConnection {
                listener: "0.0.0.0:8080".into(),
                peer: "127.0.0.1:50000".into(),
                bytes: 40
            }]
        );
        assert_eq!(
            s.inbound_peers,
            BTreeSet::from(["127.0.0.1:50000".to_string(), "127.0.0.1:50001".to_string()])
        );
    }
}
