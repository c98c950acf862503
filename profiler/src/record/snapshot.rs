//! The snapshot of waits that have not ended: every target thread currently inside a
//! wait syscall, with how long it has been blocked and its user stack.
//!
//! A hung thread emits no exit event, and a thread blocked before the probes attached
//! emits nothing at all, so the end of a window (and `profiler stalls`) reads the
//! threads' state from /proc: `/proc/PID/task/TID/syscall` (syscall, arguments, sp, pc)
//! and the stack memory from `/proc/PID/mem`, unwound with the same unwinder as events.
use profiler_common::{futex_op, MAX_STACK_BYTES, STACK_PAGE_SIZE};

use super::Session;
use crate::{
    collect::{monotonic_now_ns, Collector},
    events::{StackSample, WaitSyscall},
    offcpu::{
        demand::{self, DemandSignals},
        InFlightWait, ThreadSnapshot, WaitOn,
    },
    procfs::{self, ThreadSyscall},
    sockets,
};

/// Take the snapshot of process `pid`. `observed_ns` is how long the probes have been
/// attached (a wait without a recorded start has lasted at least that long).
pub fn take(
    session: &mut Session,
    collector: &Collector,
    pid: u32,
    observed_ns: u64,
) -> Option<ThreadSnapshot> {
    let tids = procfs::read_tids(pid).ok()?;
    let started = collector.waiting_threads(pid);
    let (futex_waits, futex_wakes) = collector.futex_counts(pid);
    let now = monotonic_now_ns();
    let mut in_flight = Vec::new();
    for &tid in &tids {
        let Some(ThreadSyscall::InSyscall { nr, args, sp, pc }) =
            procfs::read_task_syscall(pid, tid)
        else {
            continue;
        };
        let Some(syscall) = WaitSyscall::from_nr(nr) else {
            continue;
        };
        if syscall == WaitSyscall::Futex
            && !futex_op::is_wait(args[1] as u32 & futex_op::FUTEX_CMD_MASK)
        {
            continue;
        }
        let start = started.get(&tid);
        let bp = start.map_or(0, |s| s.regs.bp);
        let base = sp & !(STACK_PAGE_SIZE as u64 - 1);
        let stack = procfs::read_memory(pid, base, MAX_STACK_BYTES)
            .ok()
            .filter(|b| !b.is_empty())
            .and_then(|bytes| {
                session.stack_of(
                    pid,
                    &StackSample {
                        ip: pc,
                        sp,
                        bp,
                        base,
                        bytes,
                        ret_fix: None,
                    },
                )
            });
        let fd = if syscall.fd_arg() {
            args[0] as i32
        } else if syscall == WaitSyscall::Poll {
            first_pollfd(pid, args[0])
        } else {
            -1
        };
        let futex_addr = match syscall {
            WaitSyscall::Futex => args[0],
            WaitSyscall::FutexWaitv => procfs::read_memory(pid, args[0] + 8, 8)
                .ok()
                .and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)))
                .unwrap_or(0),
            _ => 0,
        };
        let target = session.targets.get_mut(&pid)?;
        let on = target.classifier.classify(syscall, fd, futex_addr);
        in_flight.push(InFlightWait {
            tid,
            syscall,
            on,
            blocked_ns: start.map(|s| now.saturating_sub(s.start_ns)),
            stack,
        });
    }
    let demand = demand_signals(pid, &tids, &in_flight);
    let comm = session
        .targets
        .get(&pid)
        .map(|t| t.comm.clone())
        .unwrap_or_default();
    Some(ThreadSnapshot {
        pid,
        comm,
        threads: tids.len(),
        in_flight,
        futex_wakes,
        futex_waits,
        observed_ns,
        demand,
    })
}

/// What /proc shows of unmet demand: the process's listeners with their accept queues
/// and unread requests, and the owner of each lock a thread waits on (read from the
/// lock word in the process's memory).
fn demand_signals(pid: u32, tids: &[u32], in_flight: &[InFlightWait]) -> DemandSignals {
    let own = sockets::socket_inodes(pid);
    let table = sockets::read_sockets(pid);
    let mut signals = DemandSignals::from_sockets(own.iter().filter_map(|i| table.get(i)));
    for w in in_flight {
        let WaitOn::Futex { addr } = w.on else {
            continue;
        };
        if signals.lock_owners.contains_key(&addr) || signals.joins.contains_key(&addr) {
            continue;
        }
        let Ok(bytes) = procfs::read_memory(pid, addr, 12) else {
            continue;
        };
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let other = |t: &u32| *t != w.tid;
        if let Some(owner) = demand::lock_owner(word(0), word(8), tids).filter(other) {
            signals.lock_owners.insert(addr, owner);
        } else if let Some(joined) = demand::joined_thread(word(0), tids).filter(other) {
            signals.joins.insert(addr, joined);
        }
    }
    signals
}

fn first_pollfd(pid: u32, addr: u64) -> i32 {
    procfs::read_memory(pid, addr, 4)
        .ok()
        .and_then(|b| Some(i32::from_le_bytes(b.try_into().ok()?)))
        .unwrap_or(-1)
}
