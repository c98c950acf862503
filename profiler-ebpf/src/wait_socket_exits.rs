//! The exits where a wait probe and a socket probe both run (`read`, `readv`,
//! `recvfrom`, `recvmsg`, `accept`, `accept4`, `connect`): with the connection ledger
//! on, userspace attaches one program that does both, so a call runs one program at
//! its exit, not two (each program run has its own dispatch and its own loads of the
//! config and the task's ids). Without the ledger, the wait exits of [`crate::waits`]
//! are attached alone. If the socket probes are refused after these were attached,
//! the socket part here never runs past its arming check.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use profiler_common::sock_op;

use crate::sockets::{open_exit, transfer_exit, Buffer};
use crate::waits::{end_wait, wait_exit};

macro_rules! transfer_and_wait {
    ($exit:ident, $op:expr, $buffer:expr) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            let now = end_wait(&ctx);
            match transfer_exit(&ctx, $op, $buffer, now) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

transfer_and_wait!(wait_sock_exit_read, sock_op::READ, Buffer::Flat);
transfer_and_wait!(wait_sock_exit_recvfrom, sock_op::READ, Buffer::Flat);
transfer_and_wait!(wait_sock_exit_readv, sock_op::READ, Buffer::Vector);
transfer_and_wait!(wait_sock_exit_recvmsg, sock_op::READ, Buffer::Message);

macro_rules! open_and_wait {
    ($exit:ident, $op:expr) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            let _ = wait_exit(&ctx);
            match open_exit(&ctx, $op) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

open_and_wait!(wait_sock_exit_accept, sock_op::ACCEPT);
open_and_wait!(wait_sock_exit_accept4, sock_op::ACCEPT);
open_and_wait!(wait_sock_exit_connect, sock_op::CONNECT);
