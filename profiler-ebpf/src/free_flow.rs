//! Frees of blocks the allocator probes did not see allocated.
//!
//! Only sampled blocks are tracked from allocation to free, so a `free` of any other
//! block (allocated before the probes attached, or not picked by the sampler) used to
//! be invisible: a cache that replaced its old entries looked like pure growth. Such a
//! free is now sized from the allocator's own header next to the block and passed
//! through the same unbiased byte sampler as allocations; the sampled bytes are summed
//! per process in a per-CPU map ([`FREE_FLOW`]), so no record is sent per free.
//!
//! `realloc` frees its old block too. It is counted at `realloc`'s entry (its size is
//! read before the block moves); musl's `realloc` then calls `free` itself, and glibc's
//! `realloc(p, 0)` does, so a `free` of the very block a `realloc` of the same thread is
//! moving is not counted twice ([`REALLOC_OLD`]).
use aya_ebpf::helpers::bpf_probe_read_user;
use profiler_common::{heap_layout, Config, FreeFlow, MUSL_SIZE_CLASSES};

use crate::{
    maps::{FREE_FLOW, HEAP_LAYOUT, REALLOC_OLD},
    record::sample_weight,
};

/// Largest block size believed from a header: a bigger value is not a header.
const MAX_BLOCK: u64 = 1 << 40;
/// No size from the header (above [`MAX_BLOCK`], so never a real one).
const UNKNOWN_SIZE: u64 = u64::MAX;

/// A free of a block of `tgid` that was not sampled live: count it, and its bytes when
/// the allocator's header gives them.
#[inline(always)]
pub fn count_unseen_free(tgid: u32, ptr: u64, cfg: &Config) {
    // A plain value, not an `Option` kept across the map calls: its payload would be
    // spilled uninitialized on the `None` path and read back, which 5.10's verifier
    // refuses ("invalid read from stack"); newer kernels allow it for root.
    let size = block_size(tgid, ptr).unwrap_or(UNKNOWN_SIZE);
    let flow = match FREE_FLOW.get_ptr_mut(tgid) {
        Some(f) => f,
        None => {
            let _ = FREE_FLOW.insert(tgid, FreeFlow::default(), 0);
            match FREE_FLOW.get_ptr_mut(tgid) {
                Some(f) => f,
                None => return,
            }
        }
    };
    // SAFETY: `flow` points into this CPU's value of the per-CPU map; this program runs
    // with migration disabled, so nothing else writes it meanwhile.
    unsafe {
        let f = &mut *flow;
        f.frees += 1;
        match size {
            UNKNOWN_SIZE => f.unsized_frees += 1,
            size => {
                f.sized_bytes += size;
                let weight = sample_weight(size, cfg.alloc_sample_bytes);
                if weight > 0 {
                    f.sampled += 1;
                    f.weight += weight;
                    f.variance += weight * (weight - size);
                }
            }
        }
    }
}

/// The size of the block at `ptr` as the allocator of `tgid` records it, if it has a
/// header the probes can read.
#[inline(always)]
pub fn block_size(tgid: u32, ptr: u64) -> Option<u64> {
    // SAFETY: the value is copied.
    let layout = unsafe { HEAP_LAYOUT.get(tgid) }.copied()?;
    match layout {
        heap_layout::GLIBC => glibc_usable_size(ptr),
        heap_layout::MUSL_MALLOCNG => musl_nominal_size(ptr),
        _ => None,
    }
}

/// glibc: the chunk header's size word sits 8 bytes before the block; its low three bits
/// are flags (bit 1: the chunk was mapped with mmap). What the caller may use is the
/// chunk less its 8-byte size word, or less 16 bytes for a mapped chunk (glibc's
/// `malloc_usable_size`).
#[inline(always)]
fn glibc_usable_size(ptr: u64) -> Option<u64> {
    // SAFETY: user memory is read with the helper, which fails cleanly.
    let word: u64 = unsafe { bpf_probe_read_user((ptr - 8) as *const u64) }.ok()?;
    let chunk = word & !7;
    if !(32..=MAX_BLOCK).contains(&chunk) {
        return None;
    }
    Some(chunk - if word & 2 != 0 { 16 } else { 8 })
}

/// musl mallocng (`src/malloc/mallocng/meta.h`): the 4 bytes before the block hold a
/// flag byte (non-zero: a 32-bit group offset is at `p - 8`), the slot index (low 5
/// bits) with the reserved-size code (high 3 bits), and the 16-bit offset of the
/// block from its group in 16-byte units. The group's first word points at its `meta`,
/// whose bit field gives the size class (or the mapping length of a single-slot group),
/// hence the slot's stride and end. The nominal size is the slot's end less the bytes
/// reserved there (stored at `end - 4` when the code is 5), less the block's start:
/// exactly what the program asked `malloc` for. `meta.mem` must point back at the
/// group, as musl itself checks.
#[inline(always)]
fn musl_nominal_size(p: u64) -> Option<u64> {
    const UNIT: u64 = 16;
    const IB: u64 = 4;
    // SAFETY (all reads below): user memory is read with the helper, which fails cleanly.
    let hdr: [u8; 4] = unsafe { bpf_probe_read_user((p - 4) as *const [u8; 4]) }.ok()?;
    let index = (hdr[1] & 31) as u64;
    let reserved_code = (hdr[1] >> 5) as u64;
    let mut offset = u16::from_le_bytes([hdr[2], hdr[3]]) as u64;
    if hdr[0] != 0 {
        offset = unsafe { bpf_probe_read_user((p - 8) as *const u32) }.ok()? as u64;
    }
    let base = p.checked_sub(UNIT * offset + UNIT)?;
    let meta: u64 = unsafe { bpf_probe_read_user(base as *const u64) }.ok()?;
    // struct meta { prev, next, mem, avail_mask:i32, freed_mask:i32, bit field }
    let m: [u64; 5] = unsafe { bpf_probe_read_user(meta as *const [u64; 5]) }.ok()?;
    if m[2] != base {
        return None;
    }
    let bits = m[4];
    let last_idx = bits & 31;
    let sizeclass = ((bits >> 6) & 63) as usize;
    let maplen = bits >> 12;
    if index > last_idx {
        return None;
    }
    let stride = if last_idx == 0 && maplen != 0 {
        maplen * 4096 - UNIT
    } else if sizeclass < MUSL_SIZE_CLASSES.len() {
        MUSL_SIZE_CLASSES[sizeclass] as u64 * UNIT
    } else {
        return None;
    };
    let end = base + UNIT + stride * index + stride - IB;
    let reserved = if reserved_code >= 5 {
        unsafe { bpf_probe_read_user((end - 4) as *const u32) }.ok()? as u64
    } else {
        reserved_code
    };
    if p + reserved > end || end - p > MAX_BLOCK {
        return None;
    }
    Some(end - reserved - p)
}

/// `realloc(ptr, …)` entered on thread `id` with stack pointer `sp`: its old block is
/// accounted for now, so a `free(ptr)` it makes itself must not count again.
#[inline(always)]
pub fn realloc_started(id: u64, ptr: u64, sp: u64) {
    let _ = REALLOC_OLD.insert(id, [ptr, sp], 0);
}

/// Whether a `free(ptr)` on thread `id` is made by a `realloc` that already counted
/// `ptr` (and forget it).
#[inline(always)]
pub fn freed_by_realloc(id: u64, ptr: u64) -> bool {
    // SAFETY: the value is copied.
    match unsafe { REALLOC_OLD.get(id) } {
        Some(m) if m[0] == ptr => {
            let _ = REALLOC_OLD.remove(id);
            true
        }
        _ => false,
    }
}

/// An allocator function returned on thread `id` with stack pointer `sp` (the caller's,
/// after the return). The `realloc` that entered with a lower stack pointer has itself
/// returned: forget its old block, so a later block at that address is counted again.
/// A `malloc` that `realloc` calls returns deeper in the stack and keeps the mark.
#[inline(always)]
pub fn allocator_returned(id: u64, sp: u64) {
    // SAFETY: the value is copied.
    if let Some(m) = unsafe { REALLOC_OLD.get(id) } {
        if sp > m[1] {
            let _ = REALLOC_OLD.remove(id);
        }
    }
}
