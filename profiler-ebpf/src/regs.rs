//! The current task's user registers, as the kernel saved them on entry, on every
//! kernel from 5.10.
//!
//! From 5.15 `bpf_task_pt_regs(bpf_get_current_task_btf())` returns them as a BTF
//! pointer: the verifier turns plain loads through it into fault-safe loads, so each
//! register is one instruction, not a helper call copying the whole 168-byte frame.
//! 5.10 has neither helper (they arrived in 5.11 and 5.15) and refuses any program that
//! calls them. There we find the registers where x86_64 keeps them, at the top of the
//! task's kernel stack: `task->stack + THREAD_SIZE - sizeof(struct pt_regs)`, read
//! through `bpf_get_current_task` (4.8). Userspace probes the helpers and reads the
//! offset of `stack` in `struct task_struct` (and whether KASAN doubles THREAD_SIZE)
//! from the kernel's BTF, and writes the result into these read-only globals before
//! loading: the verifier then sees constants and never visits the branch this kernel
//! cannot verify.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
    },
};
use profiler_common::UserRegs;

/// Nonzero: this kernel has `bpf_task_pt_regs` and `bpf_get_current_task_btf`.
#[unsafe(no_mangle)]
static REGS_HELPER: u32 = 1;

/// Byte offset of `stack` (the kernel stack page pointer) in `struct task_struct`;
/// 0 when unknown, which turns the fallback off.
#[unsafe(no_mangle)]
static TASK_STACK_OFFSET: u32 = 0;

/// The kernel's THREAD_SIZE (16 KiB on x86_64, 32 KiB with KASAN).
#[unsafe(no_mangle)]
static KERNEL_THREAD_SIZE: u32 = 16384;

/// The code segment selector's privilege bits of a user-mode context (CPL 3).
const USER_RPL: u64 = 3;

/// The saved user registers the probes use: where the thread is (ip, sp, bp, for its
/// stack) and the system call with its arguments (x86_64: rdi, rsi, rdx, r10, r8).
#[derive(Clone, Copy)]
pub struct UserFrame {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub orig_ax: u64,
    pub di: u64,
    pub si: u64,
    pub dx: u64,
    pub r10: u64,
    pub r8: u64,
}

impl UserFrame {
    /// The registers a stack walk starts from.
    #[inline(always)]
    pub fn stack_regs(&self) -> UserRegs {
        UserRegs {
            ip: self.ip,
            sp: self.sp,
            bp: self.bp,
        }
    }
}

/// The current task's saved user registers, or `None` when this kernel offers no way
/// to find them (or they do not look like a user context).
#[inline(always)]
pub fn current() -> Option<UserFrame> {
    // SAFETY: the globals are plain reads of frozen read-only data. The helper's result
    // is a BTF pointer to the task's `pt_regs`: the verifier checks each load against
    // the type and makes it fault-safe. Elsewhere kernel memory is read with the
    // probe-read helper only, into a copy on this program's stack.
    unsafe {
        if core::ptr::read_volatile(&REGS_HELPER) != 0 {
            let p = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
            if p.is_null() {
                return None;
            }
            return frame_at(p);
        }
        let offset = core::ptr::read_volatile(&TASK_STACK_OFFSET) as u64;
        if offset == 0 {
            return None;
        }
        let task = bpf_get_current_task();
        let stack: u64 = bpf_probe_read_kernel((task + offset) as *const u64).ok()?;
        if stack == 0 {
            return None;
        }
        let top = stack + core::ptr::read_volatile(&KERNEL_THREAD_SIZE) as u64;
        let regs: pt_regs =
            bpf_probe_read_kernel((top - core::mem::size_of::<pt_regs>() as u64) as *const pt_regs)
                .ok()?;
        // A wrong offset or THREAD_SIZE would read another part of the stack page: the
        // user-context check below refuses it.
        frame_at(&regs)
    }
}

/// The registers saved at `p`, if they are a user context: only a frame saved from
/// user mode has CPL 3 in its code segment selector.
///
/// # Safety
/// `p` is the BTF pointer `bpf_task_pt_regs` returned, or points to a copy on the
/// program's stack.
#[inline(always)]
unsafe fn frame_at(p: *const pt_regs) -> Option<UserFrame> {
    // Plain loads: the compiler drops those of registers a caller never uses.
    // SAFETY: as the caller promises.
    unsafe {
        let load = |field: *const u64| core::ptr::read(field);
        if load(core::ptr::addr_of!((*p).cs)) & USER_RPL != USER_RPL {
            return None;
        }
        Some(UserFrame {
            ip: load(core::ptr::addr_of!((*p).rip)),
            sp: load(core::ptr::addr_of!((*p).rsp)),
            bp: load(core::ptr::addr_of!((*p).rbp)),
            orig_ax: load(core::ptr::addr_of!((*p).orig_rax)),
            di: load(core::ptr::addr_of!((*p).rdi)),
            si: load(core::ptr::addr_of!((*p).rsi)),
            dx: load(core::ptr::addr_of!((*p).rdx)),
            r10: load(core::ptr::addr_of!((*p).r10)),
            r8: load(core::ptr::addr_of!((*p).r8)),
        })
    }
}
