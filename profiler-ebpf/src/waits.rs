//! Wait probes: futex waits and blocking socket / poll waits.
//!
//! Enter saves when and on what a thread starts waiting (map `WAITING`, which userspace
//! also reads to time waits that have not ended; `start_ns` 0 means not waiting). Exit measures the blocked time; waits
//! shorter than the threshold are only counted, longer ones are sent with the thread's
//! stack, captured in its own context (its user stack did not change while blocked).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use profiler_common::{futex_op, nr, Counter, EventKind, FutexKey, WaitEvent, WaitStart};

use crate::{
    maps::{FUTEX_WAITS, FUTEX_WAKES, WAITING},
    record::{config, count, emit, is_target, scratch},
    stack, tp,
};

macro_rules! wait_probe {
    ($enter:ident, $exit:ident) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            match wait_enter(&ctx) {
                Ok(r) | Err(r) => r,
            }
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            match wait_exit(&ctx) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

wait_probe!(sys_enter_futex, sys_exit_futex);
wait_probe!(sys_enter_futex_waitv, sys_exit_futex_waitv);
wait_probe!(sys_enter_read, sys_exit_read);
wait_probe!(sys_enter_readv, sys_exit_readv);
wait_probe!(sys_enter_recvfrom, sys_exit_recvfrom);
wait_probe!(sys_enter_recvmsg, sys_exit_recvmsg);
wait_probe!(sys_enter_accept, sys_exit_accept);
wait_probe!(sys_enter_accept4, sys_exit_accept4);
wait_probe!(sys_enter_connect, sys_exit_connect);
wait_probe!(sys_enter_poll, sys_exit_poll);
wait_probe!(sys_enter_ppoll, sys_exit_ppoll);
wait_probe!(sys_enter_select, sys_exit_select);
wait_probe!(sys_enter_pselect6, sys_exit_pselect6);
wait_probe!(sys_enter_epoll_wait, sys_exit_epoll_wait);
wait_probe!(sys_enter_epoll_pwait, sys_exit_epoll_pwait);
wait_probe!(sys_enter_epoll_pwait2, sys_exit_epoll_pwait2);

#[inline(always)]
fn bump(map: &aya_ebpf::maps::LruHashMap<FutexKey, u64>, key: &FutexKey) {
    // SAFETY: the pointer is to this key's value in the map.
    match map.get_ptr_mut(key) {
        Some(v) => unsafe { *v += 1 },
        None => {
            let _ = map.insert(key, 1, 0);
        }
    }
}

#[inline(always)]
fn wait_enter(ctx: &TracePointContext) -> Result<u32, u32> {
    let cfg = config().ok_or(0u32)?;
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid, cfg) {
        return Ok(0);
    }
    let syscall_nr = tp::syscall_nr(ctx);
    let a0 = tp::syscall_arg(ctx, 0);
    let mut start = WaitStart {
        syscall_nr,
        fd: -1,
        ..Default::default()
    };
    match syscall_nr {
        nr::FUTEX => {
            let op = tp::syscall_arg(ctx, 1) as u32 & futex_op::FUTEX_CMD_MASK;
            let key = FutexKey {
                tgid,
                _pad: 0,
                uaddr: a0,
            };
            if futex_op::is_wake(op) {
                count(Counter::FutexWakes);
                bump(&FUTEX_WAKES, &key);
                return Ok(0);
            }
            if !futex_op::is_wait(op) {
                return Ok(0);
            }
            bump(&FUTEX_WAITS, &key);
            start.futex_addr = a0;
            start.futex_op = op;
        }
        nr::FUTEX_WAITV => {
            // struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 reserved; }[]
            // SAFETY: user memory read through the helper.
            start.futex_addr = unsafe { bpf_probe_read_user((a0 + 8) as *const u64) }.unwrap_or(0);
            let key = FutexKey {
                tgid,
                _pad: 0,
                uaddr: start.futex_addr,
            };
            bump(&FUTEX_WAITS, &key);
        }
        nr::POLL | nr::PPOLL => {
            // struct pollfd { int fd; short events; short revents; }[]: the first fd.
            // SAFETY: user memory read through the helper.
            start.fd = unsafe { bpf_probe_read_user(a0 as *const i32) }.unwrap_or(-1);
        }
        nr::SELECT | nr::PSELECT6 => {}
        _ => start.fd = a0 as i32,
    }
    // SAFETY: helper without arguments.
    start.start_ns = unsafe { bpf_ktime_get_ns() };
    stack::user_regs(&mut start.regs);
    // A thread's entry stays in the map between its waits (exit zeroes start_ns): an
    // update in place costs no LRU allocation, hash insert and delete per wait.
    match WAITING.get_ptr_mut(id) {
        // SAFETY: the pointer is to this thread's value in the map.
        Some(slot) => unsafe { *slot = start },
        None => WAITING.insert(id, start, 0).map_err(|_| 0u32)?,
    }
    Ok(0)
}

/// Shared by every wait probe's exit, the sleeps' too ([`crate::sleeps`]).
#[inline(always)]
pub(crate) fn wait_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    end_wait(ctx);
    Ok(0)
}

/// End the current thread's wait, if the probes saw it start: count it, or send it
/// when it lasted the threshold. Returns the clock read to time it (0 when there was
/// no wait to time), which a socket probe at the same exit uses too.
#[inline(always)]
pub(crate) fn end_wait(ctx: &TracePointContext) -> u64 {
    let id = bpf_get_current_pid_tgid();
    let Some(slot) = WAITING.get_ptr_mut(id) else {
        return 0;
    };
    // SAFETY: the pointer is to this thread's value in the map. Only the start is read
    // and cleared (not waiting) here; the rest is copied for a wait that is sent.
    let start_ns = unsafe { core::mem::replace(&mut (*slot).start_ns, 0) };
    if start_ns == 0 {
        return 0; // not in a wait the probes saw start
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let blocked_ns = now.saturating_sub(start_ns);
    let Some(cfg) = config() else {
        return now;
    };
    if blocked_ns < cfg.wait_threshold_ns {
        count(Counter::ShortWaits);
        return now;
    }
    // SAFETY: as above.
    let start = unsafe { *slot };
    let _ = send_wait(ctx, &start, blocked_ns, cfg);
    now
}

/// Send a wait that lasted the threshold, with the thread's stack.
#[inline(always)]
fn send_wait(
    ctx: &TracePointContext,
    start: &WaitStart,
    blocked_ns: u64,
    cfg: &profiler_common::Config,
) -> Result<u32, u32> {
    let ret = tp::syscall_ret(ctx);
    let kind = if start.syscall_nr == nr::FUTEX || start.syscall_nr == nr::FUTEX_WAITV {
        EventKind::FutexWait
    } else {
        EventKind::SocketWait
    };
    count(Counter::Seen);
    let buf = scratch(kind as u32).ok_or(0u32)?;
    let ev = WaitEvent {
        blocked_ns,
        futex_addr: start.futex_addr,
        syscall_nr: start.syscall_nr,
        fd: start.fd,
        futex_op: start.futex_op,
        ret: ret as i32,
    };
    // SAFETY: `buf` is this CPU's scratch slot and WaitEvent fits in the body.
    unsafe {
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut WaitEvent, ev);
        count(Counter::Sampled);
        (*buf).header.weight = 1;
        stack::capture(buf, cfg.stack_pages);
    }
    emit(buf);
    Ok(0)
}
