//! User stack capture: registers plus a copy of the stack memory above `sp`.
//!
//! This is the one interface the userspace unwinder depends on. We copy from `sp`
//! (rounded down to 64 bytes) up, a page at a time, and stop at the first page that
//! cannot be read, which is the top of the stack mapping, or at the main thread's
//! first stack pointer (`mm->start_stack`): nothing above it is a frame, only the
//! program's arguments and environment. Copying the stack is most of a sample's cost
//! (the bytes are read, then written into the ring), and a main thread's stack is
//! often a few hundred bytes deep under pages of environment.
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_probe_read_user,
};
use profiler_common::{
    Counter, UserRegs, MAX_STACK_BYTES, MAX_STACK_PAGES, RET_SLOTS_MAX, STACK_PAGE_SIZE,
};

use crate::{
    maps::RET_SLOTS,
    record::{count, RecordBuf},
    regs,
};

/// Byte offset of `mm` in `struct task_struct`, and of `start_stack` in `struct
/// mm_struct`, read from the kernel's BTF by userspace before loading; 0: unknown,
/// and copies are bounded by the stack mapping and the page count only.
#[unsafe(no_mangle)]
static TASK_MM_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static MM_START_STACK_OFFSET: u32 = 0;

/// Bytes above `start_stack` still copied: the kernel's initial stack pointer points at
/// `argc`, and an unwinder may look at the words just above its last frame.
const START_STACK_SLACK: u64 = 64;

/// The current process's first user stack pointer (`mm->start_stack`), or 0.
#[inline(always)]
fn start_stack() -> u64 {
    // SAFETY: the globals are plain reads of frozen read-only data; kernel memory is
    // read with the probe-read helper only.
    unsafe {
        let mm_offset = core::ptr::read_volatile(&TASK_MM_OFFSET) as u64;
        let start_offset = core::ptr::read_volatile(&MM_START_STACK_OFFSET) as u64;
        if mm_offset == 0 || start_offset == 0 {
            return 0;
        }
        let task = bpf_get_current_task();
        let Ok(mm) = bpf_probe_read_kernel((task + mm_offset) as *const u64) else {
            return 0;
        };
        if mm == 0 {
            return 0;
        }
        bpf_probe_read_kernel((mm + start_offset) as *const u64).unwrap_or(0)
    }
}

/// Copy `size` bytes of user memory at `from` to `at` bytes into the record's stack
/// area; nonzero when they cannot be read (or the bounds do not hold).
///
/// A function of its own, not inlined, and the bounds read back opaque: they are
/// checked right before the helper call, with nothing else live, so that no verifier
/// loses them. Otherwise the compiler, which can prove them, drops the checks, or adds
/// the offset to the pointer in pieces, or spills the values in between, and 5.10's
/// verifier forgets the bounds of a spilled value ("R2 min value is negative").
#[inline(never)]
fn read_chunk(stack: *mut u8, at: u64, size: u64, from: u64) -> i64 {
    // SAFETY: reads of this function's own arguments.
    let (at, size) = unsafe {
        (
            core::ptr::read_volatile(&at),
            core::ptr::read_volatile(&size),
        )
    };
    if at > (MAX_STACK_BYTES - STACK_PAGE_SIZE) as u64 || size > STACK_PAGE_SIZE as u64 {
        return -1;
    }
    // SAFETY: `stack` is the record's stack area of MAX_STACK_BYTES bytes, and the
    // bounds above keep the copy inside it; user memory is read with the helper only.
    unsafe {
        bpf_probe_read_user(
            stack.add(at as usize) as *mut core::ffi::c_void,
            size as u32,
            from as *const core::ffi::c_void,
        )
    }
}

/// The current task's user registers (ip, sp, bp) at syscall entry; left zero when
/// this kernel offers no way to find them.
#[inline(always)]
pub fn user_regs(out: &mut UserRegs) {
    if let Some(regs) = regs::current() {
        *out = regs.stack_regs();
    }
}

/// Fill `header.regs`, `header.stack_base`, `header.stack_len` and the stack bytes of
/// `buf` from the current task's user registers and stack.
#[inline(always)]
pub fn capture(buf: *mut RecordBuf, pages: u32) {
    let mut user = UserRegs::default();
    user_regs(&mut user);
    capture_from(buf, user, pages);
}

/// Like [`capture`], from registers the caller already has (a uprobe's context).
#[inline(always)]
pub fn capture_from(buf: *mut RecordBuf, user: UserRegs, pages: u32) {
    if user.sp == 0 {
        return;
    }
    // SAFETY: `buf` is this CPU's scratch slot; user memory is read with the helper only.
    unsafe {
        (*buf).header.regs = user;
        let page = STACK_PAGE_SIZE as u64;
        let base = user.sp & !(page - 1);
        // The copy starts at sp, rounded down to 64 bytes: below it is no frame.
        let skip = (user.sp - base) & (page - 1) & !63;
        (*buf).header.stack_base = base + skip;
        // Where the copy ends: `pages` pages from sp's, or just above the main thread's
        // first stack pointer when the stack is the main thread's and ends below that.
        let mut end = base + pages as u64 * page;
        let top = start_stack();
        if top > user.sp && top + START_STACK_SLACK < end {
            end = top + START_STACK_SLACK;
        }
        let dst = core::ptr::addr_of_mut!((*buf).stack) as *mut u8;
        let mut copied: u32 = 0;
        let mut i: usize = 0;
        while i < MAX_STACK_PAGES {
            let page_start = base + i as u64 * page;
            if i as u32 >= pages || page_start >= end {
                break;
            }
            // Page i of the stack from sp's page: the part above sp of the first, whole
            // pages after it, and the part below `end` of the last. Each lands right
            // after the one before; the bounds keep every read inside the record.
            let (from, at, room) = if i == 0 {
                (base + skip, 0, page - skip)
            } else {
                (page_start, i as u64 * page - skip, page)
            };
            let left = end - from;
            let size = if left < room { left } else { room };
            let ret = read_chunk(dst, at, size, from);
            if ret != 0 {
                break;
            }
            copied += size as u32;
            if size != room {
                break;
            }
            i += 1;
        }
        if copied == 0 {
            count(Counter::StackReadFailed);
        }
        let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
        if let Some(calls) = RET_SLOTS.get(id) {
            for i in 0..RET_SLOTS_MAX {
                let live = (i as u64) < calls.depth;
                (*buf).header.ret_slots[i] = if live { calls.slots[i] } else { 0 };
                (*buf).header.ret_addrs[i] = if live { calls.addrs[i] } else { 0 };
            }
        }
        (*buf).header.stack_len = copied;
    }
}
