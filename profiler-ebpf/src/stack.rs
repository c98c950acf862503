//! User stack capture: registers plus a copy of the stack memory above `sp`.
//!
//! This is the one interface the userspace unwinder depends on. We copy whole pages
//! starting at the page that holds `sp`: every read has a constant size (which keeps
//! the verifier simple) and the copy stops at the first page that cannot be read,
//! which is the top of the stack mapping.
use aya_ebpf::helpers::generated::bpf_probe_read_user;
use profiler_common::{Counter, UserRegs, MAX_STACK_PAGES, RET_SLOTS_MAX, STACK_PAGE_SIZE};

use crate::{
    maps::RET_SLOTS,
    record::{count, RecordBuf},
    regs,
};

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
        let base = user.sp & !(STACK_PAGE_SIZE as u64 - 1);
        (*buf).header.stack_base = base;
        let dst = core::ptr::addr_of_mut!((*buf).stack) as *mut u8;
        let mut copied: u32 = 0;
        let mut i: usize = 0;
        while i < MAX_STACK_PAGES {
            if i as u32 >= pages {
                break;
            }
            let ret = bpf_probe_read_user(
                dst.add(i * STACK_PAGE_SIZE) as *mut core::ffi::c_void,
                STACK_PAGE_SIZE as u32,
                (base + (i * STACK_PAGE_SIZE) as u64) as *const core::ffi::c_void,
            );
            if ret != 0 {
                break;
            }
            copied += 1;
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
        (*buf).header.stack_len = copied * STACK_PAGE_SIZE as u32;
    }
}
