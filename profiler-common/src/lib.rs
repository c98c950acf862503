//! Types shared between the eBPF programs (`profiler-ebpf`) and userspace (`profiler`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the byte layout is the
//! same on both sides and a `Pod` impl is sound: there are no `bool`s and no implicit
//! holes. Userspace never redefines these types; it parses ring-buffer records with
//! [`EventHeader::parse`]-style helpers in `profiler::collect`.
#![no_std]

/// Maximum number of stack bytes one event may carry. The eBPF side copies whole
/// pages starting at the page that holds the user stack pointer, so a sample carries
/// between `MAX_STACK_BYTES - 4095` and `MAX_STACK_BYTES` bytes above `sp`.
pub const STACK_PAGE_SIZE: usize = 4096;
/// Upper bound of pages copied per sample (configurable below this at run time).
pub const MAX_STACK_PAGES: usize = 8;
pub const MAX_STACK_BYTES: usize = STACK_PAGE_SIZE * MAX_STACK_PAGES;

/// What a ring-buffer record describes. Stored as `u32` in [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `mmap` returned `addr`; `len`, `prot`, `flags`, `fd` are the arguments.
    Mmap = 1,
    /// `munmap(old_addr, old_len)` succeeded.
    Munmap = 2,
    /// `mremap(old_addr, old_len, len, flags)` returned `addr`.
    Mremap = 3,
    /// `brk(requested)` returned the new break in `addr`; `old_addr` is the request.
    Brk = 4,
    /// `mprotect(old_addr, old_len, prot)` succeeded.
    Mprotect = 5,
    /// The process called `execve`: its address space was replaced.
    Exec = 6,
    /// The last thread of the process exited.
    Exit = 7,
    /// A futex wait ended (or a wake was issued); see [`WaitEvent`].
    FutexWait = 8,
    /// A blocking socket or poll wait ended; see [`WaitEvent`].
    SocketWait = 9,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Mmap,
            2 => Self::Munmap,
            3 => Self::Mremap,
            4 => Self::Brk,
            5 => Self::Mprotect,
            6 => Self::Exec,
            7 => Self::Exit,
            8 => Self::FutexWait,
            9 => Self::SocketWait,
            _ => return None,
        })
    }
}

/// User registers needed to unwind a stack: instruction, stack and frame pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Every ring-buffer record starts with this header.
///
/// It is followed by a kind-specific body ([`MemEvent`] or [`WaitEvent`]) and then by
/// `stack_len` bytes of user stack memory copied from address `stack_base`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Process id (kernel tgid).
    pub tgid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    /// Number of stack bytes that follow the body; 0 when no stack was sampled.
    pub stack_len: u32,
    /// `bpf_ktime_get_ns()` when the event was emitted.
    pub ktime_ns: u64,
    /// Address of the first stack byte that follows the body.
    pub stack_base: u64,
    /// Registers at the syscall, valid when `stack_len > 0`.
    pub regs: UserRegs,
    /// Estimated bytes (memory) or 1 (waits) this sample stands for; 0 if unsampled.
    pub weight: u64,
}

/// Body of the memory-mapping events (`Mmap` … `Exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemEvent {
    /// Resulting address (mmap/mremap return value, new break for brk).
    pub addr: u64,
    /// Resulting length (mmap len, mremap new_len).
    pub len: u64,
    /// Input address (munmap/mprotect/mremap old address, brk request).
    pub old_addr: u64,
    /// Input length (munmap/mprotect/mremap old length).
    pub old_len: u64,
    /// mmap/mremap flags.
    pub flags: u64,
    /// mmap/mprotect protection bits.
    pub prot: u32,
    /// mmap file descriptor (-1 for anonymous).
    pub fd: i32,
    /// The length the sampling decision was made on (new bytes this call may commit);
    /// the sample stands for `EventHeader::weight` of them.
    pub sampled_bytes: u64,
}

/// Every record body is padded to this size, so the stack always starts at
/// [`STACK_OFFSET`] whatever the kind.
pub const BODY_SIZE: usize = 56;
/// Offset of the first stack byte in a ring-buffer record.
pub const STACK_OFFSET: usize = core::mem::size_of::<EventHeader>() + BODY_SIZE;

/// Body of the wait events (`FutexWait`, `SocketWait`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitEvent {
    /// Nanoseconds the thread spent in the syscall.
    pub blocked_ns: u64,
    /// Futex user address, or 0.
    pub futex_addr: u64,
    /// The syscall number that blocked.
    pub syscall_nr: u32,
    /// Socket / poll fd (-1 when not applicable).
    pub fd: i32,
    /// Futex operation (masked with FUTEX_CMD_MASK) or 0.
    pub futex_op: u32,
    pub _pad: u32,
}

/// Run-time configuration written by userspace into the `CONFIG` array before attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Mean bytes between two stack samples (1 = sample every event).
    pub sample_bytes: u64,
    /// Waits shorter than this are only counted, not reported with a stack.
    pub wait_threshold_ns: u64,
    /// Pages of user stack copied per sample (1..=MAX_STACK_PAGES).
    pub stack_pages: u32,
    /// Non-zero: trace every process (no TARGETS filter).
    pub all_processes: u32,
}

/// Indices into the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Events that matched the target filter.
    Seen = 0,
    /// Events that carried a stack sample.
    Sampled = 1,
    /// Events dropped because the ring buffer was full.
    Lost = 2,
    /// Stack copies that failed to read any user memory.
    StackReadFailed = 3,
    /// Waits shorter than the threshold (counted only).
    ShortWaits = 4,
    /// Futex wake calls by targets.
    FutexWakes = 5,
}
pub const COUNTER_SLOTS: u32 = 8;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and have explicit padding.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::MemEvent {}
    unsafe impl aya::Pod for super::WaitEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// Check that the shared structs have no implicit padding (sizes are sums of fields).
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<UserRegs>(), 24);
        assert_eq!(size_of::<EventHeader>(), 4 * 4 + 8 + 8 + 24 + 8);
        assert_eq!(size_of::<MemEvent>(), 5 * 8 + 4 + 4 + 8);
        assert!(size_of::<MemEvent>() <= BODY_SIZE);
        assert!(size_of::<WaitEvent>() <= BODY_SIZE);
        assert_eq!(size_of::<WaitEvent>(), 8 + 8 + 4 * 4);
        assert_eq!(size_of::<Config>(), 8 + 8 + 4 + 4);
    }
}
