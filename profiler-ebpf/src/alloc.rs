//! Allocator probes: uprobes on the target's `malloc` family and `free`, and the
//! `kmem:rss_stat` tracepoint.
//!
//! Every allocator call is a uprobe hit, so the common path is kept to a target check,
//! a random number and (for `free`) one hash lookup. An allocation is sampled by bytes
//! with the same unbiased sampler as the mapping probes; only then is the call remembered
//! per thread, and its return probe records the block's address in `LIVE_ALLOCS` and
//! sends the address, size and the caller's stack. `free` of a sampled block removes it
//! and sends a small record without a stack; `free` of any other block is sized from the
//! allocator's header and counted in the kernel (`free_flow`).
//! An allocator called by an allocator (musl's `calloc` and `realloc` call `malloc`) is
//! never sampled itself: the outermost call counts the bytes once, when it returns to
//! the application.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use profiler_common::{
    alloc_fn, AllocEvent, AllocKey, AllocPending, Counter, EventKind, RssTrack, UserRegs,
};

use crate::{
    free_flow,
    maps::{InFlight, ALLOC_PENDING, LIVE_ALLOCS, RET_SLOTS, RSS_TRACK},
    record::{config, count, emit, is_target, sample_weight, scratch},
    stack,
};

/// `malloc(size)`.
#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    let size: u64 = ctx.arg(0).unwrap_or(0);
    enter(&ctx, size, alloc_fn::MALLOC, 0)
}

/// `calloc(n, size)`.
#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    let n: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    // No 128-bit overflow check in eBPF: a product that overflows is a call that fails.
    let total = if n > (u32::MAX as u64) || size > (u32::MAX as u64) {
        0
    } else {
        n * size
    };
    enter(&ctx, total, alloc_fn::CALLOC, 0)
}

/// `realloc(ptr, size)`: the old block (if sampled) is freed, the new one may be sampled.
#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if ptr != 0 {
        if let Some(cfg) = config() {
            if is_target(tgid, cfg) {
                if !forget(tgid, ptr) {
                    free_flow::count_unseen_free(tgid, ptr, cfg);
                }
                // SAFETY: `ctx.regs` is the probe's pt_regs.
                free_flow::realloc_started(id, ptr, unsafe { (*ctx.regs).rsp });
            }
        }
    }
    enter(&ctx, size, alloc_fn::REALLOC, 0)
}

/// `memalign(align, size)` and `aligned_alloc(align, size)`.
#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    let size: u64 = ctx.arg(1).unwrap_or(0);
    enter(&ctx, size, alloc_fn::MEMALIGN, 0)
}

/// `posix_memalign(&ptr, align, size)`.
#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    let out: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    enter(&ctx, size, alloc_fn::POSIX_MEMALIGN, out)
}

/// `free(ptr)`.
#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    if ptr == 0 {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid, cfg) {
        return 0;
    }
    count(Counter::AllocCalls);
    if free_flow::freed_by_realloc(id, ptr) {
        return 0;
    }
    if !forget(tgid, ptr) {
        free_flow::count_unseen_free(tgid, ptr, cfg);
    }
    0
}

/// Return of every allocating function: complete a sampled call.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match try_alloc_return(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, size: u64, function: u32, out_ptr: u64) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32, cfg) {
        return 0;
    }
    count(Counter::AllocCalls);
    // At entry `sp` points at the return address; the return probe replaces it after
    // this program runs. Keep the original for stacks sampled inside this call.
    // SAFETY: `ctx.regs` is the probe's pt_regs; user memory is read with the helper.
    let sp = unsafe { (*ctx.regs).rsp };
    let ret = unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0);
    // SAFETY: the value is copied out of the map.
    let mut calls = unsafe { RET_SLOTS.get(id) }
        .copied()
        .unwrap_or(InFlight::EMPTY);
    calls.drop_below(sp + 1);
    let nested = calls.depth > 0;
    calls.push(sp, ret);
    let _ = RET_SLOTS.insert(id, calls, 0);
    if nested {
        // An allocator calling an allocator (musl's calloc and realloc call malloc):
        // the outer call samples these bytes, with its caller on the stack.
        return 0;
    }
    let weight = sample_weight(size, cfg.alloc_sample_bytes);
    if weight == 0 {
        return 0;
    }
    let pending = AllocPending {
        size,
        weight,
        out_ptr,
        function,
        _pad: 0,
    };
    let _ = ALLOC_PENDING.insert(id, pending, 0);
    0
}

#[inline(always)]
fn try_alloc_return(ctx: &RetProbeContext) -> Result<u32, u32> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: `ctx.regs` is the probe's pt_regs.
    let sp = unsafe { (*ctx.regs).rsp };
    free_flow::allocator_returned(id, sp);
    // SAFETY: the value is copied out of the map.
    if let Some(mut calls) = unsafe { RET_SLOTS.get(id) }.copied() {
        // `sp` is just above the returning call's slot, and every call still in flight
        // has its slot above it.
        calls.drop_below(sp);
        if calls.depth > 0 {
            let _ = RET_SLOTS.insert(id, calls, 0);
            return Ok(0); // a nested call: the outer one completes the sample
        }
        let _ = RET_SLOTS.remove(id);
    }
    // SAFETY: the value is copied out before the entry is removed.
    let pending = match unsafe { ALLOC_PENDING.get(id) } {
        Some(p) => *p,
        None => return Ok(0),
    };
    let _ = ALLOC_PENDING.remove(id);
    let ret: u64 = ctx.ret();
    let addr = if pending.function == alloc_fn::POSIX_MEMALIGN {
        if ret != 0 || pending.out_ptr == 0 {
            return Ok(0);
        }
        // SAFETY: reads the caller's output pointer with the user-memory helper.
        unsafe { bpf_probe_read_user(pending.out_ptr as *const u64) }.map_err(|_| 0u32)?
    } else {
        ret
    };
    if addr == 0 {
        return Ok(0);
    }
    let tgid = (id >> 32) as u32;
    let key = AllocKey {
        tgid,
        _pad: 0,
        addr,
    };
    if LIVE_ALLOCS.insert(key, pending.weight, 0).is_err() {
        count(Counter::AllocTableFull);
        return Ok(0);
    }
    let cfg = config().ok_or(0u32)?;
    count(Counter::Sampled);
    let buf = scratch(EventKind::Alloc as u32).ok_or(0u32)?;
    let ev = AllocEvent {
        addr,
        size: pending.size,
        function: pending.function,
        usable_size: free_flow::block_size(tgid, addr).map_or(0, |s| s.min(u32::MAX as u64) as u32),
    };
    // SAFETY: `ctx.regs` is the probe's pt_regs (readable context); `buf` is this CPU's
    // scratch slot and AllocEvent fits in the body.
    unsafe {
        let regs = &*ctx.regs;
        // The kernel has already pointed the ip back at the caller's return address, so
        // these are the caller's registers right after the call returned.
        let user = UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        };
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut AllocEvent, ev);
        (*buf).header.weight = pending.weight;
        stack::capture_from(buf, user, cfg.stack_pages);
    }
    emit(buf);
    Ok(0)
}

/// Forget a block of `tgid` if it was sampled, and tell userspace. Returns whether it
/// was.
#[inline(always)]
fn forget(tgid: u32, addr: u64) -> bool {
    let key = AllocKey {
        tgid,
        _pad: 0,
        addr,
    };
    // SAFETY: only presence is used.
    if unsafe { LIVE_ALLOCS.get(key) }.is_none() {
        return false;
    }
    let _ = LIVE_ALLOCS.remove(key);
    if let Some(buf) = scratch(EventKind::Free as u32) {
        let ev = AllocEvent {
            addr,
            ..Default::default()
        };
        // SAFETY: `buf` is this CPU's scratch slot and AllocEvent fits in the body.
        unsafe {
            core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut AllocEvent, ev)
        };
        emit(buf);
    }
    true
}

/// Offsets in the `kmem:rss_stat` record (see its tracefs `format`).
const RSS_CURR: usize = 12;
const RSS_MEMBER: usize = 16;
const RSS_SIZE: usize = 24;

/// `kmem:rss_stat`: a process's resident counters changed. Kept per target in
/// `RSS_TRACK` (latest and peak), never sent as events: page faults are too frequent.
#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match try_rss_stat(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn try_rss_stat(ctx: &TracePointContext) -> Result<u32, u32> {
    let curr: u32 = crate::tp::field(ctx, RSS_CURR);
    if curr == 0 {
        return Ok(0); // another task's mm (reclaim, exit): cannot name its process here
    }
    let cfg = config().ok_or(0u32)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid, cfg) {
        return Ok(0);
    }
    let member: i32 = crate::tp::field(ctx, RSS_MEMBER);
    let size: i64 = crate::tp::field(ctx, RSS_SIZE);
    let m = member as usize;
    if m >= 4 {
        return Ok(0);
    }
    let track = match RSS_TRACK.get_ptr_mut(tgid) {
        Some(t) => t,
        None => {
            let _ = RSS_TRACK.insert(tgid, RssTrack::default(), 0);
            RSS_TRACK.get_ptr_mut(tgid).ok_or(0u32)?
        }
    };
    // SAFETY: `track` points into the map value; concurrent updates from two CPUs can
    // lose one update of a counter that the next fault corrects.
    unsafe {
        let t = &mut *track;
        t.now[m] = size;
        if size > t.peak[m] {
            t.peak[m] = size;
        }
        let total = t.now[0] + t.now[1] + t.now[3];
        if total > t.peak_total {
            t.peak_total = total;
        }
        t.updates += 1;
    }
    Ok(0)
}
