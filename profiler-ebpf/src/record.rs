//! Building and emitting ring-buffer records, sampling and counters.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::bpf_get_prandom_u32,
    },
};
use profiler_common::{Config, Counter, EventHeader, BODY_SIZE, MAX_STACK_BYTES, RET_SLOTS_MAX};

pub use crate::maps::RecordBuf;
use crate::maps::{CONFIG, COUNTERS, EVENTS, SCRATCH, TARGETS};

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// Whether the current process is traced.
#[inline(always)]
pub fn is_target(tgid: u32, cfg: &Config) -> bool {
    // SAFETY: the values are not kept.
    unsafe {
        if cfg.all_processes != 0 {
            return tgid != cfg.profiler_tgid;
        }
        (cfg.main_target != 0 && tgid == cfg.main_target) || TARGETS.get(tgid).is_some()
    }
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, this program runs with migration disabled.
        unsafe { *slot += 1 };
    }
}

/// Unbiased byte sampling: an event of `len` bytes is sampled with probability
/// `min(1, len / rate)` and then stands for `max(len, rate)` bytes. Returns that
/// weight, or 0 when not sampled.
#[inline(always)]
pub fn sample_weight(len: u64, rate: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    if rate <= 1 || len >= rate {
        return len;
    }
    // One random word when the rate fits in it (the default 256 KiB does), two else.
    // SAFETY: helper calls without pointer arguments.
    let r = unsafe {
        if rate <= u32::MAX as u64 {
            bpf_get_prandom_u32() as u64
        } else {
            ((bpf_get_prandom_u32() as u64) << 32) | bpf_get_prandom_u32() as u64
        }
    };
    if r % rate < len {
        rate
    } else {
        0
    }
}

/// A header for a record of `kind` by the current task, without stack.
#[inline(always)]
fn header(kind: u32) -> EventHeader {
    let id = bpf_get_current_pid_tgid();
    EventHeader {
        kind,
        tgid: (id >> 32) as u32,
        tid: id as u32,
        stack_len: 0,
        // SAFETY: helper without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        stack_base: 0,
        regs: Default::default(),
        weight: 0,
        ret_slots: [0; RET_SLOTS_MAX],
        ret_addrs: [0; RET_SLOTS_MAX],
    }
}

/// The per-CPU scratch record, header filled with the current task's ids.
#[inline(always)]
pub fn scratch(kind: u32) -> Option<*mut RecordBuf> {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let buf = SCRATCH.get_ptr_mut(cpu)?;
    // SAFETY: `buf` points into the map value for this CPU.
    unsafe { (*buf).header = header(kind) };
    Some(buf)
}

/// A record without stack bytes, as it is reserved in the ring.
#[repr(C)]
struct PlainRecord {
    header: EventHeader,
    body: [u8; BODY_SIZE],
}

/// Send a record of `kind` with `body` and no stack, written straight into the ring
/// (no scratch record, no copy); count it as lost if the ring is full.
#[inline(always)]
pub fn emit_plain<T>(kind: u32, body: T) {
    let Some(mut entry) = EVENTS.reserve::<PlainRecord>(0) else {
        count(Counter::Lost);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is the reserved entry, large enough for the header and a body of
    // `BODY_SIZE` bytes, which every body type fits (checked in profiler-common).
    unsafe {
        core::ptr::addr_of_mut!((*rec).header).write(header(kind));
        let body_ptr = core::ptr::addr_of_mut!((*rec).body);
        body_ptr.write([0; BODY_SIZE]);
        core::ptr::write_unaligned(body_ptr as *mut T, body);
    }
    entry.submit(wakeup_flags());
}

/// The reader is woken only once this fraction (1/N) of the ring holds unread data.
const WAKEUP_FRACTION: u64 = 8;

/// Ring-buffer flags for one record: no wakeup, unless enough data waits. Userspace
/// drains the ring on its own timer too, so a storm of events costs the traced threads
/// no wakeup (irq_work + context switch of the reader) per event, and the reader reads
/// in batches.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if waiting >= crate::maps::EVENTS_BYTES as u64 / WAKEUP_FRACTION {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Send the scratch record with its stack bytes; count it as lost if the ring is full.
#[inline(always)]
pub fn emit(buf: *mut RecordBuf) {
    // SAFETY: `buf` is the CPU's scratch slot; the size is bounded by the value size.
    unsafe {
        let mut stack_len = (*buf).header.stack_len as u64;
        if stack_len > MAX_STACK_BYTES as u64 {
            stack_len = MAX_STACK_BYTES as u64;
        }
        let size = core::mem::size_of::<EventHeader>() as u64 + BODY_SIZE as u64 + stack_len;
        let bytes = core::slice::from_raw_parts(buf as *const u8, size as usize);
        if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
            count(Counter::Lost);
        }
    }
}
