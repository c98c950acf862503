//! Fields of a tracepoint's record, read in place.
//!
//! The verifier lets a tracepoint program load its context directly at a constant,
//! aligned offset. `TracePointContext::read_at` instead calls `bpf_probe_read_kernel`,
//! a helper call per field: on the futex and socket storms, where every syscall runs
//! an enter and an exit program, those calls were a measurable share of each run.
//! Offsets computed at run time (from a tracepoint's format) still need `read_at`.
use aya_ebpf::{programs::TracePointContext, EbpfContext as _};

/// `syscalls:sys_enter_*`: `int __syscall_nr` after the 8-byte common header.
const SYSCALL_NR: usize = 8;
/// `syscalls:sys_enter_*`: the first of the `unsigned long` arguments.
const SYSCALL_ARG0: usize = 16;
/// `syscalls:sys_exit_*`: `long ret`.
const SYSCALL_RET: usize = 16;

/// The field of type `T` at `offset` of the record. `offset` must be a constant after
/// inlining and a multiple of `T`'s size, or the verifier refuses the program.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: a load from the tracepoint's record; the verifier checks the offset.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// A syscall enter tracepoint's syscall number.
#[inline(always)]
pub fn syscall_nr(ctx: &TracePointContext) -> u32 {
    field::<i32>(ctx, SYSCALL_NR) as u32
}

/// A syscall enter tracepoint's argument `i` (a constant).
#[inline(always)]
pub fn syscall_arg(ctx: &TracePointContext, i: usize) -> u64 {
    field::<u64>(ctx, SYSCALL_ARG0 + 8 * i)
}

/// A syscall exit tracepoint's return value.
#[inline(always)]
pub fn syscall_ret(ctx: &TracePointContext) -> i64 {
    field::<i64>(ctx, SYSCALL_RET)
}
