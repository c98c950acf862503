//! Unit tests of the record decoder on records encoded as the probes write them.

use super::*;
use crate::events::SockOp;
use profiler_common::{sock_op, UserRegs};

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: test-only view of a repr(C) integer struct.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Build a record as the eBPF side lays it out.
pub(crate) fn encode<B>(header: EventHeader, ev: B, stack: &[u8]) -> Vec<u8> {
    let mut out = bytes_of(&header).to_vec();
    let mut body = bytes_of(&ev).to_vec();
    body.resize(BODY_SIZE, 0);
    out.extend_from_slice(&body);
    out.extend_from_slice(stack);
    out
}

/// Check that a transaction begin decodes with its socket and the stack.
#[test]
fn decodes_transaction_begin_with_its_stack() {
    let header = EventHeader {
        kind: EventKind::TxBegin as u32,
        tgid: 5,
        tid: 6,
        stack_len: 8,
        ktime_ns: 77,
        stack_base: 0x7000,
        regs: UserRegs {
            ip: 1,
            sp: 0x7000,
            bp: 2,
        },
        ..Default::default()
    };
    let ev = SockEvent {
        fd: 9,
        op: sock_op::WRITE,
        ..Default::default()
    };
    let Record::TxBegin(t) = decode(&encode(header, ev, &[3u8; 8])).unwrap() else {
        panic!("expected a transaction begin")
    };
    assert_eq!((t.pid, t.tid, t.time_ns, t.fd), (5, 6, 77, 9));
    let stack = t.stack.expect("a stack");
    assert_eq!((stack.ip, stack.sp, stack.bytes.len()), (1, 0x7000, 8));
}

/// Check that a sampled mmap record decodes with its stack and weight.
#[test]
fn decodes_sampled_mmap() {
    let header = EventHeader {
        kind: EventKind::Mmap as u32,
        tgid: 10,
        tid: 11,
        stack_len: 16,
        ktime_ns: 5,
        stack_base: 0x7000,
        regs: UserRegs {
            ip: 1,
            sp: 0x7008,
            bp: 3,
        },
        weight: 262144,
        ..Default::default()
    };
    let ev = MemEvent {
        addr: 0x1000,
        len: 65536,
        prot: 3,
        flags: 0x22,
        fd: -1,
        sampled_bytes: 65536,
        ..Default::default()
    };
    let rec = decode(&encode(header, ev, &[7u8; 16])).unwrap();
    let Record::Mem(m) = rec else {
        panic!("expected a memory record")
    };
    assert_eq!((m.pid, m.tid), (10, 11));
    assert_eq!(
        m.op,
        MemOp::Mmap {
            addr: 0x1000,
            len: 65536,
            prot: 3,
            flags: 0x22,
            fd: -1
        }
    );
    let s = m.sample.unwrap();
    assert_eq!(s.scale(), 4.0);
    assert_eq!(s.stack.base, 0x7000);
    assert_eq!(s.stack.bytes.len(), 16);
}

/// Check that brk and exit records carry the break's folded moves, and that a brk
/// whose break was unknown to the kernel carries none.
#[test]
fn decodes_folded_break_moves() {
    let record = |kind: EventKind, ev: MemEvent| {
        let header = EventHeader {
            kind: kind as u32,
            tgid: 10,
            tid: 10,
            ..Default::default()
        };
        match decode(&encode(header, ev, &[])).unwrap() {
            Record::Mem(m) => (m.op, m.folded),
            other => panic!("expected a memory record, got {other:?}"),
        }
    };
    let brk = MemEvent {
        addr: 0x9000,
        old_addr: 0x9000,
        old_len: 0x7000,
        len: 0x5000,
        ..Default::default()
    };
    assert_eq!(
        record(EventKind::Brk, brk),
        (
            MemOp::Brk { new_brk: 0x9000 },
            Some(FoldedBreak {
                low: 0x5000,
                before: 0x7000
            })
        )
    );
    let unknown = MemEvent {
        addr: 0x9000,
        ..Default::default()
    };
    assert_eq!(
        record(EventKind::Brk, unknown),
        (MemOp::Brk { new_brk: 0x9000 }, None)
    );
    let exit = MemEvent {
        addr: 0x8000,
        old_len: 0x8000,
        len: 0x6000,
        ..Default::default()
    };
    assert_eq!(
        record(EventKind::Exit, exit),
        (
            MemOp::Exit,
            Some(FoldedBreak {
                low: 0x6000,
                before: 0x8000
            })
        )
    );
}

/// Check that a stack sampled inside nested allocator calls carries every hijacked
/// return slot, and that only a recorded slot maps back to its return address.
#[test]
fn decodes_every_pending_return_slot() {
    let header = EventHeader {
        kind: EventKind::Mmap as u32,
        stack_len: 16,
        stack_base: 0x7000,
        regs: UserRegs {
            ip: 1,
            sp: 0x7008,
            bp: 3,
        },
        weight: 1,
        ret_slots: [0x7ff8, 0x7f00, 0],
        ret_addrs: [0x401234, 0x7f11_0000_5678, 0],
        ..Default::default()
    };
    let rec = decode(&encode(header, MemEvent::default(), &[0u8; 16])).unwrap();
    let Record::Mem(m) = rec else {
        panic!("expected a memory record")
    };
    let fix = m.sample.unwrap().stack.ret_fix.unwrap();
    assert_eq!(fix.original(0x7ff8), Some(0x401234));
    assert_eq!(fix.original(0x7f00), Some(0x7f11_0000_5678));
    assert_eq!(fix.original(0x7e00), None);
    assert_eq!(fix.original(0), None);
}

/// Check that a futex wait record decodes with its syscall, address and time.
#[test]
fn decodes_futex_wait() {
    let header = EventHeader {
        kind: EventKind::FutexWait as u32,
        tgid: 3,
        tid: 4,
        ktime_ns: 99,
        weight: 1,
        ..Default::default()
    };
    let ev = WaitEvent {
        blocked_ns: 5_000_000,
        futex_addr: 0x1234,
        syscall_nr: 202,
        fd: -1,
        futex_op: 0,
        ret: -110,
    };
    let bytes = encode(header, ev, &[]);
    let Record::Wait(w) = decode(&bytes).unwrap() else {
        panic!("expected a wait record")
    };
    assert_eq!((w.pid, w.tid, w.end_ns), (3, 4, 99));
    assert_eq!(w.syscall, WaitSyscall::Futex);
    assert_eq!(
        (w.blocked_ns, w.futex_addr, w.ret),
        (5_000_000, 0x1234, -110)
    );
    assert!(w.stack.is_none());
}

/// Check that an OOM record decodes with the victim, sizes and the allocating stack.
#[test]
fn decodes_oom_victim() {
    let header = EventHeader {
        kind: EventKind::OomVictim as u32,
        tgid: 42,
        tid: 43,
        stack_len: 8,
        ktime_ns: 7,
        stack_base: 0x9000,
        weight: 1,
        ..Default::default()
    };
    let ev = OomEvent {
        victim_pid: 42,
        anon_rss_kb: 65536,
        total_vm_kb: 70000,
        cgroup_id: 99,
        ..Default::default()
    };
    let Record::Oom(o) = decode(&encode(header, ev, &[1u8; 8])).unwrap() else {
        panic!("expected an OOM record")
    };
    assert_eq!((o.victim_pid, o.by_pid, o.time_ns), (42, 42, 7));
    assert_eq!(
        (o.anon_rss_kb, o.total_vm_kb, o.cgroup_id),
        (65536, 70000, 99)
    );
    assert_eq!(o.stack.unwrap().base, 0x9000);
}

/// Check that a sampled allocation decodes with address, size, weight and stack, and
/// a free with its address only.
#[test]
fn decodes_alloc_and_free() {
    let header = EventHeader {
        kind: EventKind::Alloc as u32,
        tgid: 7,
        tid: 8,
        stack_len: 8,
        ktime_ns: 42,
        stack_base: 0x9000,
        regs: UserRegs {
            ip: 0x401000,
            sp: 0x9000,
            bp: 0,
        },
        weight: 262144,
        ..Default::default()
    };
    let ev = AllocEvent {
        addr: 0x5555_0000,
        size: 32768,
        function: profiler_common::alloc_fn::MALLOC,
        usable_size: 32776,
    };
    let Record::Alloc(a) = decode(&encode(header, ev, &[1u8; 8])).unwrap() else {
        panic!("expected an allocation record")
    };
    assert_eq!((a.pid, a.tid, a.time_ns), (7, 8, 42));
    let AllocOp::Alloc {
        addr,
        size,
        usable_size,
        weight,
        stack,
    } = a.op
    else {
        panic!("expected an allocation")
    };
    assert_eq!((addr, size, weight), (0x5555_0000, 32768, 262144));
    assert_eq!(usable_size, 32776);
    assert_eq!(stack.unwrap().ip, 0x401000);

    let header = EventHeader {
        kind: EventKind::Free as u32,
        tgid: 7,
        ..Default::default()
    };
    let ev = AllocEvent {
        addr: 0x5555_0000,
        ..Default::default()
    };
    let Record::Alloc(f) = decode(&encode(header, ev, &[])).unwrap() else {
        panic!("expected an allocation record")
    };
    assert_eq!(f.op, AllocOp::Free { addr: 0x5555_0000 });
}

/// Check that socket records decode: a read with its prefix and full length, an
/// accept naming the new fd and its listener, a close with and without a count-only
/// socket's totals, a connect's IPv4 and IPv6 peers.
#[test]
fn decodes_socket_records() {
    let header = EventHeader {
        kind: EventKind::Sock as u32,
        tgid: 5,
        tid: 6,
        stack_len: 4,
        ktime_ns: 77,
        ..Default::default()
    };
    let read = SockEvent {
        fd: 9,
        op: sock_op::READ,
        ret: 1000,
        captured: 4,
        ..Default::default()
    };
    let Record::Sock(s) = decode(&encode(header, read, b"GET ")).unwrap() else {
        panic!("expected a socket record")
    };
    assert_eq!((s.pid, s.tid, s.time_ns, s.fd), (5, 6, 77, 9));
    assert_eq!(
        s.op,
        SockOp::Read {
            len: 1000,
            prefix: b"GET ".to_vec()
        }
    );
    let header = EventHeader {
        stack_len: 0,
        ..header
    };
    let accept = SockEvent {
        fd: 3,
        op: sock_op::ACCEPT,
        ret: 12,
        ..Default::default()
    };
    let Record::Sock(s) = decode(&encode(header, accept, &[])).unwrap() else {
        panic!("expected a socket record")
    };
    assert_eq!((s.fd, s.op), (12, SockOp::Accept { listener_fd: 3 }));
    let counted = profiler_common::SockCounted {
        read: 640,
        written: 6400,
        last_ns: 99,
    };
    for (addr, expected) in [
        ([0u8; 24], None),
        (
            counted.to_addr(),
            Some(crate::events::CountedBytes {
                read: 640,
                written: 6400,
                last_ns: 99,
            }),
        ),
    ] {
        let close = SockEvent {
            fd: 12,
            op: sock_op::CLOSE,
            addr,
            ..Default::default()
        };
        let Record::Sock(s) = decode(&encode(header, close, &[])).unwrap() else {
            panic!("expected a socket record")
        };
        assert_eq!(
            s.op,
            SockOp::Close {
                counted: expected,
                exchanges: None
            }
        );
    }
    let totals = profiler_common::ExchangeClose {
        requests: 9,
        answers: 8,
        last_answer_ns: 77,
    };
    let close = SockEvent {
        fd: 12,
        op: sock_op::CLOSE_EXCHANGES,
        addr: totals.to_addr(),
        ..Default::default()
    };
    let Record::Sock(s) = decode(&encode(header, close, &[])).unwrap() else {
        panic!("expected a socket record")
    };
    assert_eq!(
        s.op,
        SockOp::Close {
            counted: None,
            exchanges: Some(crate::events::ExchangeTotals {
                requests: 9,
                answers: 8,
                last_answer_ns: 77
            })
        }
    );
    let mut v4 = [0u8; 24];
    v4[..8].copy_from_slice(&[2, 0, 0x15, 0x38, 127, 0, 0, 1]);
    assert_eq!(sockaddr(&v4), Some("127.0.0.1:5432".parse().unwrap()));
    let mut v6 = [0u8; 24];
    v6[..4].copy_from_slice(&[10, 0, 0x1f, 0x90]);
    v6[23] = 1;
    assert_eq!(sockaddr(&v6), Some("[::1]:8080".parse().unwrap()));
    assert_eq!(sockaddr(&[1u8; 24]), None);
    let bad = SockEvent {
        op: 99,
        ..Default::default()
    };
    assert_eq!(
        decode(&encode(header, bad, &[])),
        Err(DecodeError::UnknownSockOp(99))
    );
}

/// Check that truncated records are errors, not panics.
#[test]
fn rejects_short_and_inconsistent_records() {
    assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
    let header = EventHeader {
        kind: EventKind::Munmap as u32,
        stack_len: 64,
        ..Default::default()
    };
    let bytes = encode(header, MemEvent::default(), &[0u8; 8]);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::StackLength {
            declared: 64,
            present: 8
        })
    );
    let header = EventHeader {
        kind: 99,
        ..Default::default()
    };
    assert_eq!(
        decode(&encode(header, MemEvent::default(), &[])),
        Err(DecodeError::UnknownKind(99))
    );
}
