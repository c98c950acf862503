//! Types shared between the eBPF programs (`profiler-ebpf`) and userspace (`profiler`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the byte layout is the
//! same on both sides and a `Pod` impl is sound: there are no `bool`s and no implicit
//! holes. Userspace never redefines these types; it parses ring-buffer records with
//! [`EventHeader::parse`]-style helpers in `profiler::collect`.
#![no_std]

mod sockets;
pub use sockets::*;

/// Maximum number of stack bytes one event may carry. The eBPF side copies from the
/// user stack pointer (rounded down to 64 bytes) to the end of the configured number
/// of pages counted from the one that holds it, so a sample carries at most
/// `MAX_STACK_BYTES` bytes, and less at the top of a stack or on a main thread (see
/// `profiler-ebpf/src/stack.rs`).
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
    /// Any other wait ended (socket, poll, sleep); see [`WaitEvent`].
    SocketWait = 9,
    /// A sampled allocation returned `addr`; see [`AllocEvent`]. Carries a stack.
    Alloc = 10,
    /// A sampled allocation at `addr` was freed (or moved by realloc); no stack.
    Free = 11,
    /// The OOM killer chose a target as its victim (`oom:mark_victim`); see
    /// [`OomEvent`]. The header's tgid/tid are the task that ran the OOM killer (often
    /// the victim itself, then the record carries its stack).
    OomVictim = 12,
    /// A socket of a target was accepted, connected, read, written or closed; see
    /// [`SockEvent`]. Followed by `SockEvent::captured` bytes of the transfer (a
    /// prefix), not by a stack.
    Sock = 13,
    /// A target wrote a PostgreSQL `BEGIN` or `START TRANSACTION` (simple Query) on a
    /// socket: [`SockEvent`] with its fd, followed by the writing thread's stack, so
    /// that a transaction left open names the code that began it. Sent right after
    /// that write's [`EventKind::Sock`] record, at most once per connection per
    /// [`TX_STACK_INTERVAL_NS`].
    TxBegin = 14,
}

/// The least time between two stacks of transaction begins on one connection: a busy
/// pool beginning thousands of transactions a second pays for a few stacks only.
pub const TX_STACK_INTERVAL_NS: u64 = 100_000_000;

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
            10 => Self::Alloc,
            11 => Self::Free,
            12 => Self::OomVictim,
            13 => Self::Sock,
            14 => Self::TxBegin,
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
    /// Stack slots whose return addresses pending uretprobes may have replaced with the
    /// kernel's trampoline, and the return addresses they held (0 when unused), outermost
    /// call first: the allocator's return probe hijacks the return address of every call
    /// in flight, so a stack sampled inside `malloc` (its brk or mmap) needs them to
    /// reach the caller, and musl's `calloc` calling `malloc` leaves two in flight.
    pub ret_slots: [u64; RET_SLOTS_MAX],
    pub ret_addrs: [u64; RET_SLOTS_MAX],
}

/// Nested allocator calls whose hijacked return addresses a sample can restore: an
/// outer call (`calloc`, `realloc`, `posix_memalign`), one it makes (`aligned_alloc`)
/// and the innermost `malloc`.
pub const RET_SLOTS_MAX: usize = 3;

/// Body of the memory-mapping events (`Mmap` … `Exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemEvent {
    /// Resulting address (mmap/mremap return value, new break for brk).
    pub addr: u64,
    /// Resulting length (mmap len, mremap new_len). brk and exit: the lowest break
    /// since the process's previous brk record (see [`BrkState`]), 0 if unknown.
    pub len: u64,
    /// Input address (munmap/mprotect/mremap old address, brk request).
    pub old_addr: u64,
    /// Input length (munmap/mprotect/mremap old length). brk: the break before the
    /// call; exit: the last break. 0 if unknown.
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
    /// The syscall's return value (truncated): e.g. -ETIMEDOUT, -EAGAIN, bytes read.
    pub ret: i32,
}

/// Body of the allocator events (`Alloc`, `Free`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocEvent {
    /// The block's address.
    pub addr: u64,
    /// Requested size in bytes (`Alloc`), or 0 (`Free`).
    pub size: u64,
    /// Which allocator entry point made the block: an [`alloc_fn`] value.
    pub function: u32,
    /// `Alloc`: the block's size as the allocator's own header gives it (glibc's usable
    /// size, musl's nominal size; see [`heap_layout`]), capped at `u32::MAX`; 0 when the
    /// process's allocator has no header the probes can read.
    pub usable_size: u32,
}

/// Allocator entry points, as carried in [`AllocEvent::function`] and [`AllocPending`].
pub mod alloc_fn {
    pub const MALLOC: u32 = 1;
    pub const CALLOC: u32 = 2;
    pub const REALLOC: u32 = 3;
    /// `memalign`, `aligned_alloc`: size is the second argument.
    pub const MEMALIGN: u32 = 4;
    /// `posix_memalign(&ptr, align, size)`: the block is written through the pointer.
    pub const POSIX_MEMALIGN: u32 = 5;
}

/// A sampled allocation call in flight, saved at entry (map `ALLOC_PENDING`, keyed by
/// pid_tgid) and completed by the return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocPending {
    pub size: u64,
    /// Bytes the sample stands for (see the byte sampler).
    pub weight: u64,
    /// `posix_memalign`'s output pointer, else 0.
    pub out_ptr: u64,
    pub function: u32,
    pub _pad: u32,
}

/// How the allocator of a process stores a block's size next to the block, so that a
/// `free` of a block the probes did not see allocated can still be sized (map
/// `HEAP_LAYOUT`, by tgid, written by userspace when it attaches the allocator probes).
pub mod heap_layout {
    /// No readable header (jemalloc, tcmalloc, mimalloc, unknown): frees are counted,
    /// not sized.
    pub const NONE: u32 = 0;
    /// glibc (ptmalloc): the chunk's size word, with three flag bits, sits 8 bytes
    /// before the block.
    pub const GLIBC: u32 = 1;
    /// musl >= 1.2.1 (mallocng): a 4-byte in-band header before the block gives the slot
    /// index and the offset to its group, whose `meta` gives the size class; the bytes
    /// reserved at the slot's end give the nominal (requested) size.
    pub const MUSL_MALLOCNG: u32 = 2;
}

/// musl mallocng's `size_classes` (in 16-byte units), unchanged since mallocng came in
/// musl 1.2.1; userspace checks that a process's musl holds this very table before it
/// declares [`heap_layout::MUSL_MALLOCNG`].
pub const MUSL_SIZE_CLASSES: [u16; 48] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 31, 36, 42, 50, 63, 72, 84, 102, 127, 146,
    170, 204, 255, 292, 340, 409, 511, 584, 682, 818, 1023, 1169, 1364, 1637, 2047, 2340, 2730,
    3276, 4095, 4680, 5460, 6552, 8191,
];

/// Frees of blocks the allocator probes did not see allocated (blocks allocated before
/// the probes attached, or not sampled), per process and per CPU (map `FREE_FLOW`).
/// Their sizes, read from the allocator's header, are summed in the kernel (no record
/// per free); they also pass through the same unbiased byte sampler as allocations, an
/// estimate userspace checks against the exact sum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeFlow {
    /// Frees of blocks that were not sampled live.
    pub frees: u64,
    /// Of those, frees whose size could not be read (no header layout, or a header
    /// that did not check out).
    pub unsized_frees: u64,
    /// Frees the byte sampler picked, and the bytes they stand for (sum of weights).
    pub sampled: u64,
    pub weight: u64,
    /// Sum of `weight * (weight - size)` over the sampled frees: the unbiased estimate
    /// of the variance of `weight` as an estimate of the bytes freed.
    pub variance: u64,
    /// Sum of the sizes read: the exact bytes of every sized free.
    pub sized_bytes: u64,
}

/// Key of the sampled live allocations (`LIVE_ALLOCS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub tgid: u32,
    pub _pad: u32,
    pub addr: u64,
}

/// The program break of one process as the brk probe last saw it (map `BRK_LAST`).
///
/// A brk call is sent to userspace only when the byte sampler picks it (or the break
/// was unknown); the moves in between are folded here. The record then says how low
/// the break went since the previous record and where it stood before the call, which
/// is all the ledger needs to end where a replay of every move would: pages below
/// `low` were untouched, pages from `low` up to the break before the call were grown
/// again by unsampled calls. Userspace reads this state at a window's end in the same
/// way, and the process's exit record carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrkState {
    /// The current break.
    pub last: u64,
    /// The lowest break since the last brk record was sent (or since userspace set it).
    pub low: u64,
}

impl BrkState {
    /// A break known to stand at `brk`, with nothing folded yet.
    pub const fn at(brk: u64) -> Self {
        Self {
            last: brk,
            low: brk,
        }
    }
}

/// Resident memory of one process as `kmem:rss_stat` reports it (map `RSS_TRACK`), in
/// bytes, indexed by the kernel's mm counter (`rss_member`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssTrack {
    /// Latest value per counter.
    pub now: [i64; 4],
    /// Highest value per counter seen in the window.
    pub peak: [i64; 4],
    /// Highest resident total (file + anon + shmem) seen in the window.
    pub peak_total: i64,
    /// Number of updates seen.
    pub updates: u64,
}

/// Indices of the kernel's mm counters (`enum { MM_FILEPAGES, MM_ANONPAGES,
/// MM_SWAPENTS, MM_SHMEMPAGES }`), as `kmem:rss_stat` reports them in `member`.
pub mod rss_member {
    pub const FILE: usize = 0;
    pub const ANON: usize = 1;
    pub const SWAP: usize = 2;
    pub const SHMEM: usize = 3;
}

/// Body of an [`EventKind::OomVictim`] record: the `oom:mark_victim` fields. Sizes are
/// in kB, as the tracepoint reports them; 0 when the kernel's tracepoint lacks a field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomEvent {
    /// The victim's process id (the task the OOM killer chose).
    pub victim_pid: u32,
    pub _pad: u32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    /// `bpf_get_current_cgroup_id()` of the task that ran the OOM killer.
    pub cgroup_id: u64,
}

/// Indices into the `OOM_FIELDS` array: offsets of `oom:mark_victim` fields in the
/// tracepoint record, written by userspace from the tracepoint's format file (0 when
/// this kernel's tracepoint has no such field).
pub mod oom_field {
    pub const TOTAL_VM: u32 = 0;
    pub const ANON_RSS: u32 = 1;
    pub const FILE_RSS: u32 = 2;
    pub const SHMEM_RSS: u32 = 3;
    pub const SLOTS: u32 = 4;
}

/// A thread inside a wait syscall, as the enter probe saw it (map `WAITING`, keyed by
/// pid_tgid). Userspace reads it to know how long in-flight waits have lasted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitStart {
    pub start_ns: u64,
    /// Futex user address (futex, futex_waitv's first waiter), or 0.
    pub futex_addr: u64,
    /// Registers at syscall entry: the thread's user stack stays as it was while blocked.
    pub regs: UserRegs,
    pub syscall_nr: u32,
    /// File descriptor waited on (socket, epoll fd, first pollfd), or -1.
    pub fd: i32,
    pub futex_op: u32,
    pub _pad: u32,
}

/// Key of the per-futex counters (`FUTEX_WAITS`, `FUTEX_WAKES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FutexKey {
    pub tgid: u32,
    pub _pad: u32,
    pub uaddr: u64,
}

/// Run-time configuration written by userspace into the `CONFIG` array before attach
/// (`sockets_armed` after).
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
    /// Mean bytes between two sampled allocations (allocator probes). Separate from
    /// `sample_bytes` because allocations are far more frequent than mappings.
    pub alloc_sample_bytes: u64,
    /// Non-zero once every socket program is attached. Until then the transfer probes
    /// save nothing: programs attach one by one, and a request read while the write
    /// probes were not there yet would stay in flight forever, its answer never seen.
    /// The transfer probes run at the calls' exits: every transfer that ended after
    /// this is seen, in both directions.
    pub sockets_armed: u32,
    /// The profiler's own process id, never traced, not even with `all_processes`
    /// (tracing its own reads of the ring buffer would feed on itself). A compare in
    /// the value every program already loads, not a hash lookup per event.
    pub profiler_tgid: u32,
    /// The first target still traced (0: none), checked by a compare before the
    /// `TARGETS` lookup: with `--pid`, every event of the target then skips the hash.
    /// Userspace clears it when that process exits, as it drops it from `TARGETS`.
    pub main_target: u32,
    pub _pad: u32,
}

/// x86_64 syscall numbers of the wait probes.
pub mod nr {
    pub const READ: u32 = 0;
    pub const POLL: u32 = 7;
    pub const READV: u32 = 19;
    pub const SELECT: u32 = 23;
    pub const CONNECT: u32 = 42;
    pub const ACCEPT: u32 = 43;
    pub const RECVFROM: u32 = 45;
    pub const RECVMSG: u32 = 47;
    pub const NANOSLEEP: u32 = 35;
    pub const FUTEX: u32 = 202;
    pub const CLOCK_NANOSLEEP: u32 = 230;
    pub const EPOLL_WAIT: u32 = 232;
    pub const PSELECT6: u32 = 270;
    pub const PPOLL: u32 = 271;
    pub const EPOLL_PWAIT: u32 = 281;
    pub const ACCEPT4: u32 = 288;
    pub const EPOLL_PWAIT2: u32 = 441;
    pub const FUTEX_WAITV: u32 = 449;
}

/// futex(2) operations (after masking with [`FUTEX_CMD_MASK`]).
pub mod futex_op {
    pub const WAIT: u32 = 0;
    pub const WAKE: u32 = 1;
    pub const REQUEUE: u32 = 3;
    pub const CMP_REQUEUE: u32 = 4;
    pub const WAKE_OP: u32 = 5;
    pub const LOCK_PI: u32 = 6;
    pub const UNLOCK_PI: u32 = 7;
    pub const WAIT_BITSET: u32 = 9;
    pub const WAKE_BITSET: u32 = 10;
    pub const WAIT_REQUEUE_PI: u32 = 11;
    pub const LOCK_PI2: u32 = 13;
    /// Clears FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
    pub const FUTEX_CMD_MASK: u32 = !(128 | 256);

    /// Operations that block the caller.
    pub fn is_wait(op: u32) -> bool {
        matches!(
            op,
            WAIT | WAIT_BITSET | LOCK_PI | LOCK_PI2 | WAIT_REQUEUE_PI
        )
    }

    /// Operations that wake waiters.
    pub fn is_wake(op: u32) -> bool {
        matches!(
            op,
            WAKE | WAKE_BITSET | WAKE_OP | REQUEUE | CMP_REQUEUE | UNLOCK_PI
        )
    }
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
    /// Allocator calls (malloc, free, …) by targets.
    AllocCalls = 6,
    /// Sampled allocations not tracked because `LIVE_ALLOCS` was full.
    AllocTableFull = 7,
    /// Child processes of targets that became targets at their fork.
    ForksFollowed = 8,
    /// Socket records (accept, connect, transfers, close) sent by the connection ledger.
    SockRecords = 9,
    /// Sockets not watched because `SOCK_FDS` was full.
    SockTableFull = 10,
    /// Transfers whose bytes could not be read (the record still carries the length).
    SockCopyFailed = 11,
}
pub const COUNTER_SLOTS: u32 = 16;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and have explicit padding.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::MemEvent {}
    unsafe impl aya::Pod for super::WaitEvent {}
    unsafe impl aya::Pod for super::WaitStart {}
    unsafe impl aya::Pod for super::FutexKey {}
    unsafe impl aya::Pod for super::AllocEvent {}
    unsafe impl aya::Pod for super::AllocPending {}
    unsafe impl aya::Pod for super::AllocKey {}
    unsafe impl aya::Pod for super::RssTrack {}
    unsafe impl aya::Pod for super::BrkState {}
    unsafe impl aya::Pod for super::OomEvent {}
    unsafe impl aya::Pod for super::FreeFlow {}
    unsafe impl aya::Pod for super::SockEvent {}
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SockCounted {}
    unsafe impl aya::Pod for super::SockExchanges {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// Check that the shared structs have no implicit padding (sizes are sums of fields).
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<UserRegs>(), 24);
        assert_eq!(
            size_of::<EventHeader>(),
            4 * 4 + 8 + 8 + 24 + 8 + 2 * 8 * RET_SLOTS_MAX
        );
        assert_eq!(size_of::<MemEvent>(), 5 * 8 + 4 + 4 + 8);
        assert!(size_of::<MemEvent>() <= BODY_SIZE);
        assert!(size_of::<WaitEvent>() <= BODY_SIZE);
        assert_eq!(size_of::<WaitEvent>(), 8 + 8 + 4 * 4);
        assert_eq!(size_of::<Config>(), 8 + 8 + 4 + 4 + 8 + 4 + 4 + 4 + 4);
        assert_eq!(size_of::<WaitStart>(), 8 + 8 + 24 + 4 * 4);
        assert_eq!(size_of::<FutexKey>(), 16);
        assert_eq!(size_of::<AllocEvent>(), 8 + 8 + 4 + 4);
        assert!(size_of::<AllocEvent>() <= BODY_SIZE);
        assert_eq!(size_of::<AllocPending>(), 3 * 8 + 4 + 4);
        assert_eq!(size_of::<AllocKey>(), 16);
        assert_eq!(size_of::<RssTrack>(), 4 * 8 * 2 + 8 + 8);
        assert_eq!(size_of::<OomEvent>(), 8 + 5 * 8);
        assert_eq!(size_of::<FreeFlow>(), 6 * 8);
        assert!(size_of::<OomEvent>() <= BODY_SIZE);
        assert_eq!(size_of::<SockEvent>(), 4 + 4 + 8 + 4 + 4 + 24);
        assert!(size_of::<SockEvent>() <= BODY_SIZE);
        assert_eq!(size_of::<SockKey>(), 8);
        assert!(SOCK_CAPTURE_MAX as usize <= MAX_STACK_BYTES);
        assert!(SOCK_CAPTURE_MAX.is_power_of_two());
        assert_eq!(size_of::<SockCounted>(), 24);
        assert_eq!(
            size_of::<SockExchanges>(),
            7 * 8 + 4 * 4 + EXCHANGE_ROUTE_BYTES
        );
    }

    /// Check that the close records' totals survive the trip through `addr`.
    #[test]
    fn close_totals_round_trip() {
        let c = SockCounted {
            read: 1,
            written: u64::MAX,
            last_ns: 3,
        };
        assert_eq!(SockCounted::from_addr(&c.to_addr()), c);
        let e = ExchangeClose {
            requests: 7,
            answers: 6,
            last_answer_ns: 1 << 40,
        };
        assert_eq!(ExchangeClose::from_addr(&e.to_addr()), e);
    }
}
