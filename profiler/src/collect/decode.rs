//! Decoding ring-buffer records into plain [`crate::events`] types.
//!
//! Pure: takes the bytes of one record, so it is unit-tested without a kernel.
use profiler_common::{
    AllocEvent, EventHeader, EventKind, MemEvent, OomEvent, SockEvent, WaitEvent, BODY_SIZE,
    STACK_OFFSET,
};

use super::decode_sock::decode_sock;
pub use super::decode_sock::sockaddr;
use crate::events::{
    AllocOp, AllocRecord, FoldedBreak, MemOp, MemRecord, MemSample, OomRecord, RetFix, SockRecord,
    StackSample, TxBeginRecord, WaitRecord, WaitSyscall,
};

/// A record that could not be decoded (a bug on one side, or a truncated record).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header and body")]
    Short(usize),
    #[error("record declares {declared} stack bytes but carries {present}")]
    StackLength { declared: usize, present: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("wait record for syscall {0}, which is not a wait")]
    NotAWait(u32),
    #[error("socket record with unknown operation {0}")]
    UnknownSockOp(u32),
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Mem(MemRecord),
    Wait(WaitRecord),
    Alloc(AllocRecord),
    Oom(OomRecord),
    Sock(SockRecord),
    TxBegin(TxBeginRecord),
}

fn read_pod<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: length checked; T is a plain repr(C) integer struct from profiler-common,
    // valid for any bit pattern; read_unaligned tolerates the ring buffer's alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < STACK_OFFSET {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: EventHeader = read_pod(bytes);
    let body = &bytes[std::mem::size_of::<EventHeader>()..][..BODY_SIZE];
    let stack_len = header.stack_len as usize;
    let present = bytes.len() - STACK_OFFSET;
    if stack_len > present {
        return Err(DecodeError::StackLength {
            declared: stack_len,
            present,
        });
    }
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    if kind == EventKind::Sock {
        // The trailing bytes are a prefix of the transfer, not a stack.
        let ev: SockEvent = read_pod(body);
        return decode_sock(&header, &ev, &bytes[STACK_OFFSET..STACK_OFFSET + stack_len])
            .map(Record::Sock);
    }
    let stack = (stack_len > 0).then(|| StackSample {
        ip: header.regs.ip,
        sp: header.regs.sp,
        bp: header.regs.bp,
        base: header.stack_base,
        bytes: bytes[STACK_OFFSET..STACK_OFFSET + stack_len].to_vec(),
        ret_fix: (header.ret_slots[0] != 0).then(|| RetFix {
            slots: std::array::from_fn(|i| (header.ret_slots[i], header.ret_addrs[i])),
        }),
        // An allocation is sampled in the allocator's return probe, at the return address.
        ip_is_return: kind == EventKind::Alloc,
    });
    if kind == EventKind::TxBegin {
        let ev: SockEvent = read_pod(body);
        return Ok(Record::TxBegin(TxBeginRecord {
            pid: header.tgid,
            tid: header.tid,
            time_ns: header.ktime_ns,
            fd: ev.fd,
            stack,
        }));
    }
    if matches!(kind, EventKind::FutexWait | EventKind::SocketWait) {
        let ev: WaitEvent = read_pod(body);
        let syscall = WaitSyscall::from_nr(u64::from(ev.syscall_nr))
            .ok_or(DecodeError::NotAWait(ev.syscall_nr))?;
        return Ok(Record::Wait(WaitRecord {
            pid: header.tgid,
            tid: header.tid,
            end_ns: header.ktime_ns,
            syscall,
            blocked_ns: ev.blocked_ns,
            futex_addr: ev.futex_addr,
            fd: ev.fd,
            ret: ev.ret,
            stack,
        }));
    }
    if kind == EventKind::OomVictim {
        let ev: OomEvent = read_pod(body);
        return Ok(Record::Oom(OomRecord {
            victim_pid: ev.victim_pid,
            by_pid: header.tgid,
            time_ns: header.ktime_ns,
            total_vm_kb: ev.total_vm_kb,
            anon_rss_kb: ev.anon_rss_kb,
            file_rss_kb: ev.file_rss_kb,
            shmem_rss_kb: ev.shmem_rss_kb,
            cgroup_id: ev.cgroup_id,
            stack,
        }));
    }
    if matches!(kind, EventKind::Alloc | EventKind::Free) {
        let ev: AllocEvent = read_pod(body);
        let op = match kind {
            EventKind::Alloc => AllocOp::Alloc {
                addr: ev.addr,
                size: ev.size,
                usable_size: ev.usable_size,
                weight: header.weight,
                stack,
            },
            _ => AllocOp::Free { addr: ev.addr },
        };
        return Ok(Record::Alloc(AllocRecord {
            pid: header.tgid,
            tid: header.tid,
            time_ns: header.ktime_ns,
            op,
        }));
    }
    let ev: MemEvent = read_pod(body);
    let op = match kind {
        EventKind::Mmap => MemOp::Mmap {
            addr: ev.addr,
            len: ev.len,
            prot: ev.prot,
            flags: ev.flags,
            fd: ev.fd,
        },
        EventKind::Munmap => MemOp::Munmap {
            addr: ev.old_addr,
            len: ev.old_len,
        },
        EventKind::Mremap => MemOp::Mremap {
            old_addr: ev.old_addr,
            old_len: ev.old_len,
            new_addr: ev.addr,
            new_len: ev.len,
            flags: ev.flags,
        },
        EventKind::Brk => MemOp::Brk { new_brk: ev.addr },
        EventKind::Mprotect => MemOp::Mprotect {
            addr: ev.old_addr,
            len: ev.old_len,
            prot: ev.prot,
        },
        EventKind::Exec => MemOp::Exec,
        EventKind::Exit => MemOp::Exit,
        EventKind::FutexWait
        | EventKind::SocketWait
        | EventKind::Alloc
        | EventKind::Free
        | EventKind::OomVictim
        | EventKind::Sock
        | EventKind::TxBegin => {
            unreachable!("handled above")
        }
    };
    let sample = match (header.weight, stack) {
        (weight, Some(stack)) if weight > 0 => Some(MemSample {
            sampled_bytes: ev.sampled_bytes,
            weight,
            stack,
        }),
        _ => None,
    };
    // The kernel leaves these fields 0 when it did not know the break.
    let folded = match kind {
        EventKind::Brk | EventKind::Exit if ev.old_len != 0 => Some(FoldedBreak {
            low: if ev.len != 0 { ev.len } else { ev.old_len },
            before: ev.old_len,
        }),
        _ => None,
    };
    Ok(Record::Mem(MemRecord {
        pid: header.tgid,
        tid: header.tid,
        time_ns: header.ktime_ns,
        op,
        sample,
        folded,
    }))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
pub(crate) mod tests;
