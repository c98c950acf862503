//! Memory-mapping probes: mmap, munmap, mremap, brk, mprotect (exit, and enter where
//! needed), exec and exit. The exit program drops failed calls and emits the record,
//! with a stack when the byte sampler picks it.
//!
//! The call's arguments are still in the task's saved user registers at the exit
//! tracepoint (the kernel reads them from there and does not write them back), so on
//! every kernel where [`regs::current`] finds those registers the exit program reads
//! them there and userspace attaches no enter program: half the tracepoint hits and no
//! `PENDING` insert, lookup and delete per call. Only where the registers cannot be
//! found does the enter program save the arguments for the exit.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use profiler_common::{BrkState, Counter, EventKind, MemEvent, UserRegs};

use crate::{
    maps::{PendingCall, BRK_LAST, PENDING},
    record::{config, count, emit, emit_plain, is_target, sample_weight, scratch},
    regs, stack,
};

/// Nonzero: the exit programs take the arguments from the saved user registers and
/// the enter programs are not attached. Written by userspace before loading.
#[unsafe(no_mangle)]
static ARGS_FROM_REGS: u32 = 0;

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record, and of
/// `ret` in a `syscalls:sys_exit_*` record (stable tracepoint ABI).
const SYSCALL_ARG0: usize = 16;

const PROT_WRITE: u64 = 0x2;

macro_rules! syscall_probe {
    ($enter:ident, $exit:ident, $kind:expr, $nargs:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            match save_args(&ctx, $kind, $nargs) {
                Ok(r) | Err(r) => r,
            }
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            match finish_call(&ctx, $kind) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

syscall_probe!(sys_enter_mmap, sys_exit_mmap, EventKind::Mmap, 5);
syscall_probe!(sys_enter_munmap, sys_exit_munmap, EventKind::Munmap, 2);
syscall_probe!(sys_enter_mremap, sys_exit_mremap, EventKind::Mremap, 4);
syscall_probe!(sys_enter_brk, sys_exit_brk, EventKind::Brk, 1);
syscall_probe!(
    sys_enter_mprotect,
    sys_exit_mprotect,
    EventKind::Mprotect,
    3
);

#[inline(always)]
fn save_args(ctx: &TracePointContext, kind: EventKind, nargs: usize) -> Result<u32, u32> {
    let cfg = config().ok_or(0u32)?;
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32, cfg) {
        return Ok(0);
    }
    let mut call = PendingCall {
        kind: kind as u32,
        _pad: 0,
        args: [0; 5],
    };
    let mut i = 0;
    while i < 5 {
        if i >= nargs {
            break;
        }
        // SAFETY: reads the tracepoint record at a fixed offset.
        call.args[i] = unsafe { ctx.read_at::<u64>(SYSCALL_ARG0 + 8 * i) }.map_err(|_| 0u32)?;
        i += 1;
    }
    PENDING.insert(id, call, 0).map_err(|_| 0u32)?;
    Ok(0)
}

/// The arguments of the current call, and the user registers when they came from
/// there; `None` when the call is not traced.
#[inline(always)]
fn call_args(
    id: u64,
    kind: EventKind,
    cfg: &profiler_common::Config,
) -> Option<(u32, [u64; 5], Option<UserRegs>)> {
    // SAFETY: a plain read of frozen read-only data.
    if unsafe { core::ptr::read_volatile(&ARGS_FROM_REGS) } != 0 {
        if !is_target((id >> 32) as u32, cfg) {
            return None;
        }
        let Some(r) = regs::current() else {
            // Should not happen where userspace chose this path; never silently.
            count(Counter::Lost);
            return None;
        };
        // x86_64 system call arguments: rdi, rsi, rdx, r10, r8.
        return Some((
            kind as u32,
            [r.di, r.si, r.dx, r.r10, r.r8],
            Some(r.stack_regs()),
        ));
    }
    // SAFETY: the value is copied out before the entry is removed.
    let call = unsafe { PENDING.get(id) }.copied()?;
    let _ = PENDING.remove(id);
    Some((call.kind, call.args, None))
}

#[inline(always)]
fn finish_call(ctx: &TracePointContext, kind: EventKind) -> Result<u32, u32> {
    let ret = crate::tp::syscall_ret(ctx);
    let id = bpf_get_current_pid_tgid();
    let cfg = config().ok_or(0u32)?;
    let Some((call_kind, a, user)) = call_args(id, kind, cfg) else {
        return Ok(0);
    };
    if ret < 0 && ret > -4096 {
        return Ok(0); // failed call: nothing changed
    }
    let mut ev = MemEvent {
        fd: -1,
        ..Default::default()
    };
    match call_kind {
        k if k == EventKind::Mmap as u32 => {
            ev.addr = ret as u64;
            ev.len = a[1];
            ev.prot = a[2] as u32;
            ev.flags = a[3];
            ev.fd = a[4] as i32;
            if a[2] != 0 {
                ev.sampled_bytes = a[1];
            }
        }
        k if k == EventKind::Munmap as u32 => {
            ev.old_addr = a[0];
            ev.old_len = a[1];
        }
        k if k == EventKind::Mremap as u32 => {
            ev.old_addr = a[0];
            ev.old_len = a[1];
            ev.len = a[2];
            ev.flags = a[3];
            ev.addr = ret as u64;
            if a[2] > a[1] {
                ev.sampled_bytes = a[2] - a[1];
            }
        }
        k if k == EventKind::Brk as u32 => {
            let tgid = (id >> 32) as u32;
            let new_brk = ret as u64;
            let Some(state) = BRK_LAST.get_ptr_mut(tgid) else {
                // The break was unknown: the record tells userspace where it is.
                let _ = BRK_LAST.insert(tgid, BrkState::at(new_brk), 0);
                ev.addr = new_brk;
                ev.old_addr = a[0];
                count(Counter::Seen);
                emit_plain(call_kind, ev);
                return Ok(0);
            };
            // Updated in place: an LRU insert per brk costs more than the rest of the
            // program. A racing brk of another thread of the process is no worse than
            // with a lookup and an insert.
            // SAFETY: the map value of this tgid.
            let (prev, low) = unsafe { ((*state).last, (*state).low) };
            ev.addr = new_brk;
            ev.old_addr = a[0];
            ev.old_len = prev;
            ev.len = if low < prev { low } else { prev };
            if new_brk > prev {
                ev.sampled_bytes = new_brk - prev;
            }
            count(Counter::Seen);
            let weight = sample_weight(ev.sampled_bytes, cfg.sample_bytes);
            // SAFETY: as above.
            unsafe {
                (*state).last = new_brk;
                if weight == 0 {
                    // Not sampled: folded into the next record (or the window's end).
                    if new_brk < ev.len {
                        (*state).low = new_brk;
                    } else {
                        (*state).low = ev.len;
                    }
                    return Ok(0);
                }
                (*state).low = new_brk;
            }
            return sampled(call_kind, ev, weight, user, cfg);
        }
        k if k == EventKind::Mprotect as u32 => {
            ev.old_addr = a[0];
            ev.old_len = a[1];
            ev.prot = a[2] as u32;
            if a[2] & PROT_WRITE != 0 {
                ev.sampled_bytes = a[1];
            }
        }
        _ => return Ok(0),
    }
    count(Counter::Seen);
    let weight = sample_weight(ev.sampled_bytes, cfg.sample_bytes);
    if weight == 0 {
        emit_plain(call_kind, ev);
        return Ok(0);
    }
    sampled(call_kind, ev, weight, user, cfg)
}

/// Send a sampled call's record with the thread's stack.
#[inline(always)]
fn sampled(
    kind: u32,
    ev: MemEvent,
    weight: u64,
    user: Option<UserRegs>,
    cfg: &profiler_common::Config,
) -> Result<u32, u32> {
    count(Counter::Sampled);
    // Built in this CPU's scratch record, then copied into the ring at its used size
    // (header, body, the stack bytes read). Reading the stack straight into a ring
    // record reserved at full size (33 KiB) cost more here: 0.88–0.91 µs per brk exit
    // against 0.63–0.82 (bench/results.md).
    let buf = scratch(kind).ok_or(0u32)?;
    // SAFETY: `buf` is this CPU's scratch slot and MemEvent fits in the body.
    unsafe {
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut MemEvent, ev);
        (*buf).header.weight = weight;
    }
    match user {
        Some(user) => stack::capture_from(buf, user, cfg.stack_pages),
        None => stack::capture(buf, cfg.stack_pages),
    }
    emit(buf);
    Ok(0)
}

/// `sched:sched_process_exec`: the address space of a target was replaced.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    process_event(EventKind::Exec, false)
}

/// `sched:sched_process_exit`: emitted for the thread-group leader only.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    process_event(EventKind::Exit, true)
}

#[inline(always)]
fn process_event(kind: EventKind, leader_only: bool) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if leader_only && tgid != id as u32 {
        return 0;
    }
    if !is_target(tgid, cfg) {
        return 0;
    }
    // The exit record carries the break's folded moves: the ledger keeps the final
    // state of an exited process for its report. After an exec they do not matter.
    let mut ev = MemEvent {
        fd: -1,
        ..Default::default()
    };
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(state) = unsafe { BRK_LAST.get(tgid) } {
        if kind == EventKind::Exit {
            ev.addr = state.last;
            ev.old_len = state.last;
            ev.len = state.low;
        }
        let _ = BRK_LAST.remove(tgid);
    }
    if let Some(buf) = scratch(kind as u32) {
        // SAFETY: `buf` is this CPU's scratch slot and MemEvent fits in the body.
        unsafe {
            core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut MemEvent, ev);
        }
        emit(buf);
    }
    0
}
