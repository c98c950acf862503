//! The snapshot of waits that have not ended: every target thread currently inside a
//! wait syscall, with how long it has been blocked and its user stack.
//!
//! A hung thread emits no exit event, and a thread blocked before the probes attached
//! emits nothing at all, so the end of a window (and `profiler stalls`) reads the
//! threads' state from /proc: `/proc/PID/task/TID/syscall` (syscall, arguments, sp, pc)
//! and the stack memory from `/proc/PID/mem`, for the `stacks` stage to unwind like an
//! event's stack.
use std::collections::BTreeMap;

use profiler_common::{futex_op, MAX_STACK_BYTES, STACK_PAGE_SIZE};

use crate::{
    collect::{monotonic_now_ns, Collector},
    events::{StackSample, WaitSyscall},
    procfs::{self, ThreadSyscall},
    sockets::{self, SocketInfo},
};

/// A thread inside a wait syscall when the snapshot was taken, as /proc and the probes
/// saw it: what `analyze::waits` needs to name the wait and unwind its stack.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockedThread {
    pub tid: u32,
    pub syscall: WaitSyscall,
    /// The descriptor waited on (the first pollfd for poll); -1 when none or unknown.
    pub fd: i32,
    /// The futex word's address (futex, futex_waitv's first waiter); 0 otherwise.
    pub futex_addr: u64,
    /// When the probes saw the wait start (monotonic ns); None: it was already blocked
    /// when they attached.
    pub start_ns: Option<u64>,
    /// The thread's registers and stack memory, for the unwinder.
    pub stack: Option<StackSample>,
}

/// The blocked threads of one process, with the futex activity of the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InFlight {
    pub pid: u32,
    /// Threads of the process at the snapshot.
    pub threads: usize,
    pub blocked: Vec<BlockedThread>,
    /// Futex wake calls and waits started in the window, by futex address.
    pub futex_wakes: BTreeMap<u64, u64>,
    pub futex_waits: BTreeMap<u64, u64>,
    /// Monotonic time of the snapshot (ns).
    pub now_ns: u64,
    /// The process's threads at the snapshot.
    pub tids: Vec<u32>,
    /// The sockets the process holds open, as /proc/PID/net shows them: listeners with
    /// their accept queues, connections with their unread bytes.
    pub sockets: Vec<SocketInfo>,
    /// For each futex address a thread waits on, the 32-bit word there and the one 8
    /// bytes in (where glibc keeps a mutex's owner), to name who holds a lock.
    pub futex_words: BTreeMap<u64, (u32, u32)>,
}

/// Read the blocked threads of process `pid`; None when it is gone.
pub fn read(collector: &Collector, pid: u32) -> Option<InFlight> {
    let tids = procfs::read_tids(pid).ok()?;
    let started = collector.waiting_threads(pid);
    let (futex_waits, futex_wakes) = collector.futex_counts(pid);
    let now_ns = monotonic_now_ns();
    let mut blocked = Vec::new();
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
            .map(|bytes| StackSample {
                ip: pc,
                sp,
                bp,
                base,
                bytes,
                ret_fix: None,
                ip_is_return: false,
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
        blocked.push(BlockedThread {
            tid,
            syscall,
            fd,
            futex_addr,
            start_ns: start.map(|s| s.start_ns),
            stack,
        });
    }
    let futex_words = blocked
        .iter()
        .filter(|b| b.syscall.is_futex() && b.futex_addr != 0)
        .filter_map(|b| Some((b.futex_addr, read_futex_words(pid, b.futex_addr)?)))
        .collect();
    let table = sockets::read_sockets(pid);
    let sockets = sockets::socket_inodes(pid)
        .iter()
        .filter_map(|inode| table.get(inode).cloned())
        .collect();
    Some(InFlight {
        pid,
        threads: tids.len(),
        blocked,
        futex_wakes,
        futex_waits,
        now_ns,
        tids,
        sockets,
        futex_words,
    })
}

/// The futex word at `addr` and the word 8 bytes in, from the process's memory.
fn read_futex_words(pid: u32, addr: u64) -> Option<(u32, u32)> {
    let bytes = procfs::read_memory(pid, addr, 12).ok()?;
    let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((word(0)?, word(8)?))
}

fn first_pollfd(pid: u32, addr: u64) -> i32 {
    procfs::read_memory(pid, addr, 4)
        .ok()
        .and_then(|b| Some(i32::from_le_bytes(b.try_into().ok()?)))
        .unwrap_or(-1)
}
