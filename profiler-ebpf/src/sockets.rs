//! The connection ledger's probes: accept, connect, transfers and close of the
//! targets' sockets, with a bounded prefix of each transfer's bytes.
//!
//! The programs run at the calls' exits only: a call's descriptor and buffer are its
//! arguments, still in the task's saved user registers then. Only descriptors in
//! `SOCK_FDS` are followed: userspace seeds it with the sockets a
//! target holds when it is added, and the exit of `accept`/`connect` adds the new ones,
//! so a `read` of a regular file costs one hash lookup and sends nothing. Transfers that
//! moved no bytes (`EAGAIN` on a non-blocking socket, end of file) send nothing either.
//! The record carries at most the fd's capture length (`SOCK_FDS` value) of the bytes,
//! from the start of the transfer: the framers in userspace count what they could not
//! frame. Sockets userspace could not frame (TLS, unknown bytes) are count-only
//! ([`SOCK_CAPTURE_NONE`]): their transfers only add to `SOCK_COUNTED`. Plain HTTP/1
//! connections, once userspace has framed a few exchanges, have their exchanges counted
//! here ([`SOCK_CAPTURE_EXCHANGES_IN`], `SOCK_EXCHANGES`): a request and its answer
//! then cost two map updates, not two records.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use profiler_common::{
    sock_op, Counter, EventKind, ExchangeClose, SockCounted, SockEvent, SockExchanges, SockKey,
    EXCHANGE_ROUTE_BYTES, SOCK_CAPTURE_DEFAULT, SOCK_CAPTURE_EXCHANGES_IN,
    SOCK_CAPTURE_EXCHANGES_OUT, SOCK_CAPTURE_MAX, SOCK_CAPTURE_NONE, TX_STACK_INTERVAL_NS,
};

use crate::{
    maps::{SOCK_COUNTED, SOCK_EXCHANGES, SOCK_FDS, TX_STACKS},
    record::{config, count, emit, is_target, scratch, RecordBuf},
    regs, stack, tp,
};

/// `-EINPROGRESS`: a non-blocking connect under way (how event loops connect).
const EINPROGRESS: i64 = -115;
/// `BPF_NOEXIST`: an fd already watched keeps its capture length.
const NOEXIST: u64 = 1;

/// How a syscall passes its bytes.
#[derive(Clone, Copy)]
pub(crate) enum Buffer {
    /// `(fd, buf, len, …)`: read, write, recvfrom, sendto.
    Flat,
    /// `(fd, iov, iovcnt)`: readv, writev.
    Vector,
    /// `(fd, msghdr, flags)`: recvmsg, sendmsg.
    Message,
}

/// One transfer on a followed socket, as its exit program found it.
#[derive(Clone, Copy)]
struct Transfer {
    /// [`sock_op::READ`] or [`sock_op::WRITE`].
    op: u32,
    fd: i32,
    /// The first buffer's user address and length (`u64::MAX`: the call's whole length).
    buf: u64,
    buf_len: u64,
    /// The socket's capture length (`SOCK_FDS` value).
    capture: u32,
}

macro_rules! transfer_probe {
    ($exit:ident, $op:expr, $buffer:expr) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            match transfer_exit(&ctx, $op, $buffer, 0) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

transfer_probe!(sock_exit_read, sock_op::READ, Buffer::Flat);
transfer_probe!(sock_exit_recvfrom, sock_op::READ, Buffer::Flat);
transfer_probe!(sock_exit_readv, sock_op::READ, Buffer::Vector);
transfer_probe!(sock_exit_recvmsg, sock_op::READ, Buffer::Message);
transfer_probe!(sock_exit_write, sock_op::WRITE, Buffer::Flat);
transfer_probe!(sock_exit_sendto, sock_op::WRITE, Buffer::Flat);
transfer_probe!(sock_exit_writev, sock_op::WRITE, Buffer::Vector);
transfer_probe!(sock_exit_sendmsg, sock_op::WRITE, Buffer::Message);

macro_rules! open_probe {
    ($exit:ident, $op:expr) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if crate::floor::empty_programs() {
                return 0;
            }
            match open_exit(&ctx, $op) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

open_probe!(sock_exit_accept, sock_op::ACCEPT);
open_probe!(sock_exit_accept4, sock_op::ACCEPT);
open_probe!(sock_exit_connect, sock_op::CONNECT);

/// `close(fd)` of a watched socket: forget it and say so.
#[tracepoint]
pub fn sock_enter_close(ctx: TracePointContext) -> u32 {
    if crate::floor::empty_programs() {
        return 0;
    }
    match close_enter(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

/// The current task's tgid when it is a target.
#[inline(always)]
fn target() -> Option<u32> {
    let cfg = config()?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    is_target(tgid, cfg).then_some(tgid)
}

/// A read or write that moved bytes. Its descriptor and buffer are the call's
/// arguments, still in the task's saved user registers at exit (and the bytes read are
/// in the buffer by then), so no enter program and no per-thread map entry are needed.
#[inline(always)]
pub(crate) fn transfer_exit(
    ctx: &TracePointContext,
    op: u32,
    buffer: Buffer,
    now: u64,
) -> Result<u32, u32> {
    let ret = tp::syscall_ret(ctx);
    if ret <= 0 {
        return Ok(0); // EAGAIN, end of file, error: no bytes moved
    }
    let cfg = config().ok_or(0u32)?;
    // Until every socket program is attached, a request could be seen without its
    // answer: nothing is saved before userspace arms the probes.
    if cfg.sockets_armed == 0 {
        return Ok(0);
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(regs) = regs::current() else {
        count(Counter::Lost);
        return Ok(0);
    };
    let fd = regs.di as i32;
    let key = SockKey {
        tgid,
        fd: fd as u32,
    };
    // Only targets' sockets are in `SOCK_FDS` (userspace drops a target's entries when
    // it exits, as it drops the target): this lookup is the target check too.
    // SAFETY: the value is copied out at once.
    let capture = match unsafe { SOCK_FDS.get(key) } {
        Some(c) => *c,
        None => return Ok(0),
    };
    let (buf, buf_len) = match buffer {
        Buffer::Flat => (regs.si, u64::MAX),
        Buffer::Vector => first_iovec(regs.si),
        Buffer::Message => {
            // struct msghdr { void *name; int namelen; struct iovec *msg_iov; … }
            // SAFETY: user memory read through the helper.
            let iov = unsafe { bpf_probe_read_user((regs.si + 16) as *const u64) }.unwrap_or(0);
            first_iovec(iov)
        }
    };
    let transfer = Transfer {
        op,
        fd,
        buf,
        buf_len,
        capture,
    };
    moved(tgid, &transfer, ret as u64, now);
    Ok(0)
}

/// The first `struct iovec { void *base; size_t len; }` of an array in user memory.
#[inline(always)]
fn first_iovec(iov: u64) -> (u64, u64) {
    if iov == 0 {
        return (0, 0);
    }
    // SAFETY: user memory read through the helper.
    let base = unsafe { bpf_probe_read_user(iov as *const u64) }.unwrap_or(0);
    // SAFETY: as above.
    let len = unsafe { bpf_probe_read_user((iov + 8) as *const u64) }.unwrap_or(0);
    (base, len)
}

/// An accepted or connected socket: follow it and say so. The listening or connecting
/// descriptor and the peer's address are the call's arguments, read at exit.
#[inline(always)]
pub(crate) fn open_exit(ctx: &TracePointContext, op: u32) -> Result<u32, u32> {
    let ret = tp::syscall_ret(ctx);
    let failed = if op == sock_op::CONNECT {
        ret != 0 && ret != EINPROGRESS
    } else {
        ret < 0
    };
    if failed {
        return Ok(0);
    }
    let tgid = target().ok_or(0u32)?;
    let Some(regs) = regs::current() else {
        count(Counter::Lost);
        return Ok(0);
    };
    let fd = regs.di as i32;
    let mut ev = SockEvent {
        fd,
        op,
        ret,
        ..Default::default()
    };
    if op == sock_op::CONNECT {
        watch(tgid, fd as u32);
        if regs.si != 0 {
            // SAFETY: user memory read through the helper.
            ev.addr = unsafe { bpf_probe_read_user(regs.si as *const [u8; 24]) }.unwrap_or([0; 24]);
        }
    } else {
        watch(tgid, ret as u32);
    }
    let _ = send(ev, 0, 0);
    Ok(0)
}

#[inline(always)]
fn close_enter(ctx: &TracePointContext) -> Result<u32, u32> {
    let tgid = target().ok_or(0u32)?;
    let fd = tp::syscall_arg(ctx, 0) as i32;
    let key = SockKey {
        tgid,
        fd: fd as u32,
    };
    if SOCK_FDS.remove(key).is_err() {
        return Ok(0); // not a watched socket
    }
    let mut ev = SockEvent {
        fd,
        op: sock_op::CLOSE,
        ..Default::default()
    };
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(counted) = unsafe { SOCK_COUNTED.get(key) } {
        ev.addr = counted.to_addr();
        let _ = SOCK_COUNTED.remove(key);
    }
    // SAFETY: as above.
    if let Some(x) = unsafe { SOCK_EXCHANGES.get(key) } {
        if x.counting != 0 {
            ev.op = sock_op::CLOSE_EXCHANGES;
            ev.addr = ExchangeClose {
                requests: x.requests,
                answers: x.answers,
                last_answer_ns: x.last_answer_ns,
            }
            .to_addr();
        }
        let _ = SOCK_EXCHANGES.remove(key);
    }
    let _ = send(ev, 0, 0);
    Ok(0)
}

/// `bytes` moved by `t` on a followed socket: counted in the kernel, or sent with a
/// prefix of the bytes.
#[inline(always)]
fn moved(tgid: u32, t: &Transfer, bytes: u64, now: u64) {
    if t.capture == SOCK_CAPTURE_NONE {
        add_counted(tgid, t.fd as u32, t.op, bytes, now);
        return;
    }
    let mut capture = t.capture;
    if capture >= SOCK_CAPTURE_EXCHANGES_OUT {
        if count_exchange(tgid, t, bytes, now) {
            return;
        }
        capture = SOCK_CAPTURE_DEFAULT; // not counting yet: a record as before
    }
    let mut len = bytes;
    if len > t.buf_len {
        len = t.buf_len;
    }
    if len > capture as u64 {
        len = capture as u64;
    }
    let ev = SockEvent {
        fd: t.fd,
        op: t.op,
        ret: bytes as i64,
        ..Default::default()
    };
    let sent = send(ev, t.buf, len);
    if t.op == sock_op::WRITE {
        if let Some(buf) = sent {
            if begins_transaction(buf) {
                transaction_stack(tgid, t.fd);
            }
        }
    }
}

/// Whether the bytes just sent (in the scratch record `buf`) are a PostgreSQL simple
/// Query whose text starts with `BEGIN` or `START` (`START TRANSACTION`, as TypeORM
/// begins): 'Q', a 4-byte length, then the keyword in any case. A false match costs
/// one stack; userspace keeps it only for a connection it framed as PostgreSQL.
#[inline(always)]
fn begins_transaction(buf: *mut RecordBuf) -> bool {
    // SAFETY: `buf` is this CPU's scratch slot, just filled by `send`.
    unsafe {
        if (*buf).header.stack_len < 10 {
            return false;
        }
        let b = core::ptr::addr_of!((*buf).stack) as *const u8;
        if *b != b'Q' {
            return false;
        }
        let word = [
            *b.add(5) | 0x20,
            *b.add(6) | 0x20,
            *b.add(7) | 0x20,
            *b.add(8) | 0x20,
            *b.add(9) | 0x20,
        ];
        &word == b"begin" || &word == b"start"
    }
}

/// Send the current thread's stack as the begin of a transaction on `fd`, unless this
/// connection sent one less than [`TX_STACK_INTERVAL_NS`] ago.
#[inline(always)]
fn transaction_stack(tgid: u32, fd: i32) {
    let key = SockKey {
        tgid,
        fd: fd as u32,
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied out at once.
    if let Some(last) = unsafe { TX_STACKS.get(key) } {
        if now.saturating_sub(*last) < TX_STACK_INTERVAL_NS {
            return;
        }
    }
    let _ = TX_STACKS.insert(key, now, 0);
    let Some(cfg) = config() else {
        return;
    };
    let Some(buf) = scratch(EventKind::TxBegin as u32) else {
        return;
    };
    let ev = SockEvent {
        fd,
        op: sock_op::WRITE,
        ..Default::default()
    };
    // SAFETY: `buf` is this CPU's scratch slot and SockEvent fits in the body.
    unsafe {
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut SockEvent, ev);
        count(Counter::Sampled);
        (*buf).header.weight = 1;
        stack::capture(buf, cfg.stack_pages);
    }
    emit(buf);
}

/// Add one transfer of a count-only socket to its totals.
#[inline(always)]
fn add_counted(tgid: u32, fd: u32, op: u32, bytes: u64, now: u64) {
    let key = SockKey { tgid, fd };
    let now = clock(now);
    match SOCK_COUNTED.get_ptr_mut(key) {
        // SAFETY: the pointer is to this socket's value in the map; two threads of one
        // process writing one socket at once may lose an addition, as any shared
        // counter without atomics would; the totals are connection-level metadata.
        Some(c) => unsafe {
            if op == sock_op::READ {
                (*c).read += bytes;
            } else {
                (*c).written += bytes;
            }
            (*c).last_ns = now;
        },
        None => {
            let mut c = SockCounted {
                last_ns: now,
                ..Default::default()
            };
            if op == sock_op::READ {
                c.read = bytes;
            } else {
                c.written = bytes;
            }
            let _ = SOCK_COUNTED.insert(key, c, 0);
        }
    }
}

/// One transfer of `bytes` on a connection whose exchanges the kernel counts. Returns
/// false while counting has not begun: the transfer then goes to userspace as a record.
///
/// Counting begins at the first turn from answering to a request, so every transfer
/// before it was framed in userspace. From then on each turn of direction is one
/// request or one answer; several transfers in one direction (a body in pieces) are
/// one. A pipelining client's requests in one transfer count as one (userspace asks for
/// counting only on connections it saw answer each request before the next).
#[inline(always)]
fn count_exchange(tgid: u32, t: &Transfer, bytes: u64, now: u64) -> bool {
    let key = SockKey {
        tgid,
        fd: t.fd as u32,
    };
    let op = t.op;
    let request_op = if t.capture == SOCK_CAPTURE_EXCHANGES_IN {
        sock_op::READ
    } else {
        sock_op::WRITE
    };
    let Some(x) = SOCK_EXCHANGES.get_ptr_mut(key) else {
        // The first transfer since userspace asked: remember its direction only.
        let first = SockExchanges {
            last_op: op,
            ..Default::default()
        };
        let _ = SOCK_EXCHANGES.insert(key, first, 0);
        return false;
    };
    let now = clock(now);
    // SAFETY: the pointer is to this socket's value in the map; a socket's transfers
    // come from the thread that owns its turn (one request or answer at a time).
    unsafe {
        let turn = (*x).last_op != op;
        (*x).last_op = op;
        if (*x).counting == 0 {
            if !(turn && op == request_op) {
                return false;
            }
            (*x).counting = 1;
        }
        if op == sock_op::READ {
            (*x).read += bytes;
        } else {
            (*x).written += bytes;
        }
        (*x).last_ns = now;
        if !turn {
            return true;
        }
        if op == request_op {
            (*x).requests += 1;
            (*x).pending_since_ns = now;
            keep_route(x, t, bytes);
        } else {
            (*x).answers += 1;
            (*x).last_answer_ns = now;
            (*x).pending_since_ns = 0;
        }
    }
    true
}

/// `now` if the caller read the clock already (the wait probe at the same exit), else
/// the clock.
#[inline(always)]
fn clock(now: u64) -> u64 {
    if now != 0 {
        return now;
    }
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Keep the first bytes of a request (its request line) in the connection's entry.
#[inline(always)]
fn keep_route(x: *mut SockExchanges, t: &Transfer, bytes: u64) {
    let mut n = bytes;
    if n > t.buf_len {
        n = t.buf_len;
    }
    if n > EXCHANGE_ROUTE_BYTES as u64 {
        n = EXCHANGE_ROUTE_BYTES as u64;
    }
    // SAFETY: `x` is this socket's value in the map; the copy is 1 to
    // EXCHANGE_ROUTE_BYTES bytes into its `route`; user memory is read with the helper.
    unsafe {
        if n == 0 || t.buf == 0 {
            (*x).route_len = 0;
            return;
        }
        let size = ((n as u32 - 1) & (EXCHANGE_ROUTE_BYTES as u32 - 1)) + 1;
        let dst = core::ptr::addr_of_mut!((*x).route) as *mut core::ffi::c_void;
        let ok = generated::bpf_probe_read_user(dst, size, t.buf as *const core::ffi::c_void) == 0;
        (*x).route_len = if ok { size } else { 0 };
    }
}

/// Follow a new socket of `tgid` with the default capture length.
#[inline(always)]
fn watch(tgid: u32, fd: u32) {
    let key = SockKey { tgid, fd };
    if SOCK_FDS.insert(key, SOCK_CAPTURE_DEFAULT, NOEXIST).is_err()
        // SAFETY: the value is not kept.
        && unsafe { SOCK_FDS.get(key) }.is_none()
    {
        count(Counter::SockTableFull);
    }
}

/// Send one socket record with up to `len` bytes copied from user address `from`; the
/// scratch record it was built in, which still holds the bytes.
#[inline(always)]
fn send(mut ev: SockEvent, from: u64, len: u64) -> Option<*mut RecordBuf> {
    let buf = scratch(EventKind::Sock as u32)?;
    let mut n = len;
    if n > SOCK_CAPTURE_MAX as u64 {
        n = SOCK_CAPTURE_MAX as u64;
    }
    // SAFETY: `buf` is this CPU's scratch slot; the copy is bounded by SOCK_CAPTURE_MAX,
    // below the size of its stack area; user memory is read through the helper only.
    unsafe {
        if n > 0 && from != 0 {
            let dst = core::ptr::addr_of_mut!((*buf).stack) as *mut core::ffi::c_void;
            let size = (n as u32) & (2 * SOCK_CAPTURE_MAX - 1);
            if generated::bpf_probe_read_user(dst, size, from as *const core::ffi::c_void) == 0 {
                ev.captured = size;
            } else {
                count(Counter::SockCopyFailed);
            }
        }
        (*buf).header.stack_len = ev.captured;
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*buf).body) as *mut SockEvent, ev);
    }
    count(Counter::SockRecords);
    emit(buf);
    Some(buf)
}
