//! Following the targets' children: when a target forks a new process, its tgid joins
//! `TARGETS` at once, in the kernel, so the child's first mapping is already traced.
//!
//! `sched:sched_process_fork` fires in the parent for new threads too; a thread's id
//! must not become a "tgid" in `TARGETS` (it would fill the map and, once the id is
//! reused, trace an unrelated process). The tracepoint does not say which it is, so we
//! read the parent's own system call from its saved user registers: `fork` and
//! `vfork` make processes, `clone`/`clone3` make threads when `CLONE_THREAD` is set.
//! Anything else (io_uring workers, kernel-internal clones) is not followed.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};

use profiler_common::{BrkState, Counter};

use crate::{
    maps::{BRK_LAST, TARGETS},
    record::{config, count},
    regs,
};

/// Offset of `child_pid` in the `sched_process_fork` record, from its tracefs format,
/// written by userspace before loading: it moved when the comm fields became
/// `__data_loc` strings (44 on 5.10, 6.1 and 6.12; 20 on 6.18). 0: unknown, nothing is
/// followed.
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 0;
/// Offsets beyond this are not trusted (the record is far smaller).
const MAX_FIELD_OFFSET: u32 = 128;

/// x86_64 system call numbers that create tasks.
const NR_CLONE: u64 = 56;
const NR_FORK: u64 = 57;
const NR_VFORK: u64 = 58;
const NR_CLONE3: u64 = 435;
const CLONE_THREAD: u64 = 0x0001_0000;

/// `sched:sched_process_fork`: a target's new child process becomes a target.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match try_follow_fork(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn try_follow_fork(ctx: &TracePointContext) -> Result<u32, u32> {
    let cfg = config().ok_or(0u32)?;
    if cfg.all_processes != 0 {
        return Ok(0);
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is not kept.
    if unsafe { TARGETS.get(parent) }.is_none() || !creates_process() {
        return Ok(0);
    }
    // SAFETY: a plain read of frozen read-only data.
    let offset = unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) };
    if offset == 0 || offset > MAX_FIELD_OFFSET {
        return Ok(0);
    }
    // SAFETY: reads the tracepoint record at the offset its format file gives.
    let child = unsafe { ctx.read_at::<i32>(offset as usize) }.map_err(|_| 0u32)? as u32;
    TARGETS.insert(child, 1, 0).map_err(|_| 0u32)?;
    count(Counter::ForksFollowed);
    // The child's break is its parent's: its first brk then measures from there.
    // SAFETY: value copied out immediately.
    if let Some(brk) = unsafe { BRK_LAST.get(parent) }.map(|b| b.last) {
        let _ = BRK_LAST.insert(child, BrkState::at(brk), 0);
    }
    Ok(0)
}

/// Whether the current task's system call creates a process (not a thread).
#[inline(always)]
fn creates_process() -> bool {
    let Some(regs) = regs::current() else {
        return false;
    };
    match regs.orig_ax {
        NR_FORK | NR_VFORK => true,
        NR_CLONE => regs.di & CLONE_THREAD == 0,
        // struct clone_args starts with `u64 flags`.
        // SAFETY: user memory read with the user helper.
        NR_CLONE3 => unsafe { bpf_probe_read_user(regs.di as *const u64) }
            .is_ok_and(|flags| flags & CLONE_THREAD == 0),
        _ => false,
    }
}
