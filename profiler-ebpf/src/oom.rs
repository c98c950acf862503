//! OOM kills: `oom:mark_victim` fires when the OOM killer has chosen its victim, before
//! the victim's memory is torn down. Userspace then writes a snapshot of the victim's
//! ledger as it was, so the record must reach it whatever the ring's other traffic.
//!
//! The tracepoint runs in the task that hit the limit; in a memory cgroup that is
//! usually the victim itself, and then its user stack is the allocation that tipped it
//! over, so the record carries it.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id},
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use profiler_common::{oom_field, Counter, EventKind, OomEvent};

use crate::{
    record::{config, count, emit, is_target, scratch},
    stack,
};

/// Offset of `pid`, the first field of `oom:mark_victim` on every kernel that has it.
const VICTIM_PID: usize = 8;
/// Field offsets beyond this are not trusted (the record is far smaller).
const MAX_FIELD_OFFSET: u32 = 256;

/// Offsets of the optional `oom:mark_victim` fields (see `profiler_common::oom_field`),
/// read by userspace from the tracepoint's format; 0 when the kernel lacks the field.
#[map]
pub static OOM_FIELDS: Array<u32> = Array::with_max_entries(oom_field::SLOTS, 0);

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match try_mark_victim(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn field(ctx: &TracePointContext, slot: u32) -> u64 {
    let Some(&offset) = OOM_FIELDS.get(slot) else {
        return 0;
    };
    if offset == 0 || offset > MAX_FIELD_OFFSET {
        return 0;
    }
    // SAFETY: reads the tracepoint record at an offset from its format file.
    unsafe { ctx.read_at::<u64>(offset as usize) }.unwrap_or(0)
}

#[inline(always)]
fn try_mark_victim(ctx: &TracePointContext) -> Result<u32, u32> {
    let cfg = config().ok_or(0u32)?;
    // SAFETY: reads the tracepoint record at a fixed offset.
    let victim = unsafe { ctx.read_at::<i32>(VICTIM_PID) }.map_err(|_| 0u32)? as u32;
    if !is_target(victim, cfg) {
        return Ok(0);
    }
    count(Counter::Seen);
    let ev = OomEvent {
        victim_pid: victim,
        _pad: 0,
        total_vm_kb: field(ctx, oom_field::TOTAL_VM),
        anon_rss_kb: field(ctx, oom_field::ANON_RSS),
        file_rss_kb: field(ctx, oom_field::FILE_RSS),
        shmem_rss_kb: field(ctx, oom_field::SHMEM_RSS),
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    let buf = scratch(EventKind::OomVictim as u32).ok_or(0u32)?;
    let current = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: `buf` is this CPU's scratch slot and OomEvent fits in the body.
    unsafe {
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut OomEvent, ev);
        if current == victim {
            (*buf).header.weight = 1;
            stack::capture(buf, cfg.stack_pages);
        }
    }
    emit(buf);
    Ok(0)
}
