//! Plain-Rust events, as `collect` hands them to the rest of the pipeline.
//!
//! Nothing after `collect` sees kernel types or raw ring-buffer bytes: the ledger,
//! unwinder and renderers work on these, which makes them testable without root.

/// Registers and a copy of user stack memory, enough to unwind a user stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Address of `bytes[0]` in the sampled thread's address space.
    pub base: u64,
    pub bytes: Vec<u8>,
    /// A return address a pending uretprobe may have replaced (see [`RetFix`]).
    pub ret_fix: Option<RetFix>,
    /// `ip` is a return address: the registers were taken as a call returned (the
    /// allocator's return probe), so the first frame is the call at `ip - 1`.
    pub ip_is_return: bool,
}

/// The allocator's return probe replaces the return address of each call in flight with
/// the kernel's trampoline. A stack sampled inside such calls (malloc's own brk or mmap,
/// or musl's malloc inside calloc) carries each call's slot and original value, recorded
/// at the call's entry; the unwinder uses one only when its slot really holds the
/// trampoline (an entry may be stale, from a call that has returned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetFix {
    /// `(slot, original return address)`, outermost call first; unused ones are `(0, 0)`.
    pub slots: [(u64, u64); profiler_common::RET_SLOTS_MAX],
}

impl RetFix {
    /// The return address the call whose return address lived at `slot` had, if any.
    pub fn original(&self, slot: u64) -> Option<u64> {
        self.slots
            .iter()
            .find(|&&(s, a)| s == slot && s != 0 && a != 0)
            .map(|&(_, a)| a)
    }
}

impl StackSample {
    /// Read a little-endian u64 at `addr`, if the copied window covers it.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = off.checked_add(8)?;
        let b = self.bytes.get(off..end)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// A change to a process's address space, after the syscall succeeded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemOp {
    Mmap {
        addr: u64,
        len: u64,
        prot: u32,
        flags: u64,
        fd: i32,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_addr: u64,
        new_len: u64,
        flags: u64,
    },
    /// The program break is now `new_brk` (the syscall's return value).
    Brk {
        new_brk: u64,
    },
    Mprotect {
        addr: u64,
        len: u64,
        prot: u32,
    },
    /// execve replaced the address space.
    Exec,
    /// The process exited.
    Exit,
}

/// One memory event of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemRecord {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    pub op: MemOp,
    /// Present when the byte sampler picked this event.
    pub sample: Option<MemSample>,
    /// brk and exit: the moves of the break the kernel folded instead of sending.
    pub folded: Option<FoldedBreak>,
}

/// The program break's moves since the process's previous brk record that the kernel
/// did not send, because the byte sampler did not pick them
/// ([`profiler_common::BrkState`]). Replayed as two unsampled moves, to `low` and then
/// to `before`, they leave the ledger where a replay of every move would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldedBreak {
    /// The lowest break since the previous brk record.
    pub low: u64,
    /// The break when this record's call was made (exit: the last break).
    pub before: u64,
}

impl FoldedBreak {
    /// The two unsampled moves that stand for the folded ones.
    pub fn moves(&self) -> [MemOp; 2] {
        [
            MemOp::Brk { new_brk: self.low },
            MemOp::Brk {
                new_brk: self.before,
            },
        ]
    }
}

/// A sampled memory event: its stack and the bytes it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemSample {
    /// Bytes the sampling decision was made on (new bytes the call may commit).
    pub sampled_bytes: u64,
    /// Bytes this sample stands for: `max(sampled_bytes, rate)` (unbiased estimator).
    pub weight: u64,
    pub stack: StackSample,
}

impl MemSample {
    /// Scale factor from bytes actually changed by this event to estimated bytes.
    pub fn scale(&self) -> f64 {
        if self.sampled_bytes == 0 {
            1.0
        } else {
            self.weight as f64 / self.sampled_bytes as f64
        }
    }
}

/// An allocator event of one process: a sampled block was allocated, or freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocRecord {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    pub op: AllocOp,
}

/// What happened to a sampled block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocOp {
    /// A sampled allocation of `size` bytes at `addr`, standing for `weight` bytes.
    Alloc {
        addr: u64,
        size: u64,
        /// The size the allocator's header gives (see `profiler_common::heap_layout`),
        /// 0 when it has none the probes can read.
        usable_size: u32,
        weight: u64,
        stack: Option<StackSample>,
    },
    /// The sampled block at `addr` was freed (or moved away by realloc).
    Free { addr: u64 },
}

/// Index of an interned, unwound stack (see `aggregate::StackTable`).
pub type StackId = u32;

/// Linux mmap/mprotect constants used by the pipeline (x86_64 values).
pub mod linux {
    pub const PROT_NONE: u32 = 0;
    pub const PROT_READ: u32 = 0x1;
    pub const PROT_WRITE: u32 = 0x2;
    pub const PROT_EXEC: u32 = 0x4;
    pub const MAP_SHARED: u64 = 0x01;
    pub const MAP_PRIVATE: u64 = 0x02;
    pub const MAP_FIXED: u64 = 0x10;
    pub const MAP_ANONYMOUS: u64 = 0x20;
    pub const MAP_GROWSDOWN: u64 = 0x0100;
    pub const MAP_STACK: u64 = 0x20000;
    pub const MREMAP_MAYMOVE: u64 = 1;
    pub const MREMAP_FIXED: u64 = 2;
    pub const MREMAP_DONTUNMAP: u64 = 4;
}

/// What a thread was blocked in.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WaitSyscall {
    Futex,
    FutexWaitv,
    Read,
    Readv,
    Recvfrom,
    Recvmsg,
    Accept,
    Connect,
    Poll,
    Select,
    EpollWait,
    /// `nanosleep` and `clock_nanosleep` (what `sleep`, `usleep` and
    /// `std::thread::sleep` call).
    Nanosleep,
    ClockNanosleep,
}

impl WaitSyscall {
    /// Map an x86_64 syscall number to a wait syscall, if it is one we treat as a wait.
    pub fn from_nr(nr: u64) -> Option<Self> {
        use profiler_common::nr;
        let nr = u32::try_from(nr).ok()?;
        Some(match nr {
            nr::FUTEX => Self::Futex,
            nr::FUTEX_WAITV => Self::FutexWaitv,
            nr::READ => Self::Read,
            nr::READV => Self::Readv,
            nr::RECVFROM => Self::Recvfrom,
            nr::RECVMSG => Self::Recvmsg,
            nr::ACCEPT | nr::ACCEPT4 => Self::Accept,
            nr::CONNECT => Self::Connect,
            nr::POLL | nr::PPOLL => Self::Poll,
            nr::SELECT | nr::PSELECT6 => Self::Select,
            nr::EPOLL_WAIT | nr::EPOLL_PWAIT | nr::EPOLL_PWAIT2 => Self::EpollWait,
            nr::NANOSLEEP => Self::Nanosleep,
            nr::CLOCK_NANOSLEEP => Self::ClockNanosleep,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Futex => "futex",
            Self::FutexWaitv => "futex_waitv",
            Self::Read => "read",
            Self::Readv => "readv",
            Self::Recvfrom => "recvfrom",
            Self::Recvmsg => "recvmsg",
            Self::Accept => "accept",
            Self::Connect => "connect",
            Self::Poll => "poll",
            Self::Select => "select",
            Self::EpollWait => "epoll_wait",
            Self::Nanosleep => "nanosleep",
            Self::ClockNanosleep => "clock_nanosleep",
        }
    }

    /// A sleep: it ends by itself, nothing has to wake it.
    pub fn is_sleep(self) -> bool {
        matches!(self, Self::Nanosleep | Self::ClockNanosleep)
    }

    pub fn is_futex(self) -> bool {
        matches!(self, Self::Futex | Self::FutexWaitv)
    }

    /// The first argument is the file descriptor waited on.
    pub fn fd_arg(self) -> bool {
        matches!(
            self,
            Self::Read
                | Self::Readv
                | Self::Recvfrom
                | Self::Recvmsg
                | Self::Accept
                | Self::Connect
                | Self::EpollWait
        )
    }
}

/// A wait that ended during the window and lasted at least the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitRecord {
    pub pid: u32,
    pub tid: u32,
    /// When the wait ended (monotonic ns, `bpf_ktime_get_ns`).
    pub end_ns: u64,
    pub syscall: WaitSyscall,
    pub blocked_ns: u64,
    /// Futex address for futex waits, else 0.
    pub futex_addr: u64,
    /// Socket / epoll / first poll fd, or -1.
    pub fd: i32,
    /// The syscall's return value.
    pub ret: i32,
    pub stack: Option<StackSample>,
}

/// The OOM killer chose process `victim_pid` (`oom:mark_victim`). Sizes in kB as the
/// kernel reports them (0 when its tracepoint lacks the field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomRecord {
    pub victim_pid: u32,
    /// The process whose allocation ran the OOM killer (often the victim).
    pub by_pid: u32,
    pub time_ns: u64,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    /// cgroup id of the task that ran the OOM killer.
    pub cgroup_id: u64,
    /// The allocating stack, when the victim itself ran the OOM killer.
    pub stack: Option<StackSample>,
}

/// A target began a PostgreSQL transaction on socket `fd` (an
/// [`EventKind::TxBegin`](profiler_common::EventKind) record): the stack of the thread
/// that wrote `BEGIN`, sent at most once per connection per
/// [`profiler_common::TX_STACK_INTERVAL_NS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBeginRecord {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    pub fd: i32,
    pub stack: Option<StackSample>,
}

/// What happened to a target's socket (an [`EventKind::Sock`](profiler_common::EventKind)
/// record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockOp {
    /// `accept` on listener `listener_fd` returned the connection `fd`.
    Accept { listener_fd: i32 },
    /// `connect` to `peer` succeeded or is in progress (None: not an IP address).
    Connect { peer: Option<std::net::SocketAddr> },
    /// `len` bytes were read; `prefix` holds the first of them (at most the capture).
    Read { len: u64, prefix: Vec<u8> },
    /// `len` bytes were written; `prefix` holds the first of them.
    Write { len: u64, prefix: Vec<u8> },
    /// The socket was closed; a count-only socket's totals come with it, and so do
    /// the exchange totals of a socket whose exchanges the kernel counted.
    Close {
        counted: Option<CountedBytes>,
        exchanges: Option<ExchangeTotals>,
    },
}

/// The request/answer exchanges of an HTTP/1 connection, counted in the kernel since
/// counting began (turns of direction: [`profiler_common::SOCK_CAPTURE_EXCHANGES_IN`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeTotals {
    pub requests: u64,
    pub answers: u64,
    /// Monotonic time of the last answer (0: none).
    pub last_answer_ns: u64,
}

/// A counted HTTP/1 connection as the kernel's map holds it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountedExchanges {
    pub bytes: CountedBytes,
    pub totals: ExchangeTotals,
    /// Monotonic time the request in flight began (0: none in flight).
    pub pending_since_ns: u64,
    /// The first bytes of the latest request: payload, framed into a route at once
    /// and never kept.
    pub request_prefix: Vec<u8>,
}

impl From<profiler_common::SockExchanges> for CountedExchanges {
    fn from(x: profiler_common::SockExchanges) -> Self {
        let n = (x.route_len as usize).min(x.route.len());
        CountedExchanges {
            bytes: CountedBytes {
                read: x.read,
                written: x.written,
                last_ns: x.last_ns,
            },
            totals: ExchangeTotals {
                requests: x.requests,
                answers: x.answers,
                last_answer_ns: x.last_answer_ns,
            },
            pending_since_ns: x.pending_since_ns,
            request_prefix: x.route[..n].to_vec(),
        }
    }
}

impl From<profiler_common::ExchangeClose> for ExchangeTotals {
    fn from(c: profiler_common::ExchangeClose) -> Self {
        ExchangeTotals {
            requests: c.requests,
            answers: c.answers,
            last_answer_ns: c.last_answer_ns,
        }
    }
}

/// The bytes a count-only socket moved, added up in the kernel (no record per
/// transfer): totals since it became count-only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountedBytes {
    pub read: u64,
    pub written: u64,
    /// Monotonic time of its last transfer.
    pub last_ns: u64,
}

impl From<profiler_common::SockCounted> for CountedBytes {
    fn from(c: profiler_common::SockCounted) -> Self {
        CountedBytes {
            read: c.read,
            written: c.written,
            last_ns: c.last_ns,
        }
    }
}

/// One socket record of a target: the connection's fd (the new one for an accept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockRecord {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    pub fd: i32,
    pub op: SockOp,
}
