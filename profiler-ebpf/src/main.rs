//! eBPF programs of the profiler.
//!
//! Entry points are thin: each tracepoint calls a `try_*` function that returns
//! `Result`. The syscall enter probes remember their arguments per thread; the exit
//! probes drop failed calls, decide whether to sample a stack (by bytes, unbiased) and
//! emit one ring-buffer record. Stacks are copied as raw user memory plus registers so
//! that userspace can unwind through code without frame pointers (DWARF CFI).
#![no_std]
#![no_main]

mod alloc;
mod floor;
mod free_flow;
mod maps;
mod memory;
mod oom;
mod record;
mod regs;
mod sleeps;
mod sockets;
mod stack;
mod targets;
mod tp;
mod wait_socket_exits;
mod waits;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
