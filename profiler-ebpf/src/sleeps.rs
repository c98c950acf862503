//! Sleep probes: `nanosleep` and `clock_nanosleep` are recorded as waits.
//!
//! A thread that sleeps while holding a lock is the reason its waiters wait, so its
//! sleeps must show in the blocked-on view like any other wait. Enter saves the start in
//! `WAITING` (as the other wait probes do; userspace reads it to time a sleep that has not
//! ended); exit is the shared wait exit, which sends sleeps past the threshold with the
//! thread's stack.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use profiler_common::WaitStart;

use crate::{
    maps::WAITING,
    record::{config, is_target},
    stack, waits,
};

#[tracepoint]
pub fn sys_enter_nanosleep(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match sleep_enter(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[tracepoint]
pub fn sys_exit_nanosleep(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match waits::wait_exit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[tracepoint]
pub fn sys_enter_clock_nanosleep(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match sleep_enter(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[tracepoint]
pub fn sys_exit_clock_nanosleep(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match waits::wait_exit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

/// Remember when and where a target thread began to sleep; a sleep waits on no
/// descriptor and no futex.
#[inline(always)]
fn sleep_enter(ctx: &TracePointContext) -> Result<u32, u32> {
    let cfg = config().ok_or(0u32)?;
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32, cfg) {
        return Ok(0);
    }
    let syscall_nr = crate::tp::syscall_nr(ctx);
    let mut start = WaitStart {
        syscall_nr,
        fd: -1,
        ..Default::default()
    };
    // SAFETY: helper without arguments.
    start.start_ns = unsafe { bpf_ktime_get_ns() };
    stack::user_regs(&mut start.regs);
    match WAITING.get_ptr_mut(id) {
        // SAFETY: the pointer is to this thread's value in the map.
        Some(slot) => unsafe { *slot = start },
        None => WAITING.insert(id, start, 0).map_err(|_| 0u32)?,
    }
    Ok(0)
}
