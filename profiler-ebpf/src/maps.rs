//! Maps shared with userspace. Names are part of the userspace contract
//! (`profiler::collect` looks them up by these names). The types of their values are
//! defined here too, so every program module depends on `maps` and `maps` on none.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use profiler_common::{
    Config, EventHeader, BODY_SIZE, COUNTER_SLOTS, MAX_STACK_BYTES, RET_SLOTS_MAX,
};

/// A record as it is sent: header, fixed-size body, then `header.stack_len` bytes.
#[repr(C)]
pub struct RecordBuf {
    pub header: EventHeader,
    pub body: [u8; BODY_SIZE],
    pub stack: [u8; MAX_STACK_BYTES],
}

/// Arguments of a syscall in flight, saved at enter.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub kind: u32,
    pub _pad: u32,
    pub args: [u64; 5],
}

/// Process ids (tgid) to trace; value unused. Ignored when `Config::all_processes`.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(8192, 0);

/// One [`Config`] written by userspace before attach.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Per-CPU event counters, indexed by `profiler_common::Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Bytes of the `EVENTS` ring: a constant, so that a record's wakeup check does not
/// ask the kernel for it.
pub const EVENTS_BYTES: u32 = 32 << 20;

/// Records to userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Syscall arguments saved at enter, keyed by pid_tgid, consumed at exit.
/// LRU so that threads killed inside a syscall cannot fill it.
#[map]
pub static PENDING: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

/// Program break per tgid, seeded by userspace from /proc, so that a brk exit knows
/// how many bytes it added, and the lowest break since the last brk record (the moves
/// not sent are folded here; see [`profiler_common::BrkState`]).
#[map]
pub static BRK_LAST: LruHashMap<u32, profiler_common::BrkState> =
    LruHashMap::with_max_entries(8192, 0);

/// Record scratch space, one slot per CPU (too large for a per-CPU map value).
/// Userspace sets max_entries to the number of possible CPUs.
#[map]
pub static SCRATCH: Array<RecordBuf> = Array::with_max_entries(256, 0);

/// Threads currently inside a wait syscall, keyed by pid_tgid (see `WaitStart`).
#[map]
pub static WAITING: LruHashMap<u64, profiler_common::WaitStart> =
    LruHashMap::with_max_entries(32768, 0);

/// Futex waits started per (tgid, futex address) during the window.
#[map]
pub static FUTEX_WAITS: LruHashMap<profiler_common::FutexKey, u64> =
    LruHashMap::with_max_entries(16384, 0);

/// Futex wake calls per (tgid, futex address) during the window.
#[map]
pub static FUTEX_WAKES: LruHashMap<profiler_common::FutexKey, u64> =
    LruHashMap::with_max_entries(16384, 0);

/// Sampled allocation calls between entry and return, keyed by pid_tgid.
#[map]
pub static ALLOC_PENDING: LruHashMap<u64, profiler_common::AllocPending> =
    LruHashMap::with_max_entries(16384, 0);

/// Sampled blocks not freed yet, by (tgid, address); value: bytes the sample stands for.
/// A plain hash (not LRU): a full table is counted (`AllocTableFull`), never evicts a
/// block whose free we still need to see.
#[map]
pub static LIVE_ALLOCS: HashMap<profiler_common::AllocKey, u64> =
    HashMap::with_max_entries(262144, 0);

/// Resident memory per target tgid, from `kmem:rss_stat`.
#[map]
pub static RSS_TRACK: HashMap<u32, profiler_common::RssTrack> = HashMap::with_max_entries(8192, 0);

/// The allocator calls in flight on each thread, keyed by pid_tgid (see [`InFlight`]).
#[map]
pub static RET_SLOTS: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// One thread's allocator calls between entry and return, outermost first: each call's
/// return-address slot and the address it held, read at entry before the return probe
/// replaced it. Stack samples carry them so userspace can undo every replacement; the
/// depth tells a nested call (musl's `calloc` calling `malloc`) from an outer one.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct InFlight {
    pub slots: [u64; RET_SLOTS_MAX],
    pub addrs: [u64; RET_SLOTS_MAX],
    pub depth: u64,
}

impl InFlight {
    pub const EMPTY: Self = Self {
        slots: [0; RET_SLOTS_MAX],
        addrs: [0; RET_SLOTS_MAX],
        depth: 0,
    };

    /// Forget the calls whose slot lies below `limit`: the stack grows down, so an
    /// outer call still in flight has its slot above every inner one, and a call that
    /// has returned left its slot below the current stack pointer.
    #[inline(always)]
    pub fn drop_below(&mut self, limit: u64) {
        for i in 0..RET_SLOTS_MAX {
            if (i as u64) < self.depth && self.slots[i] < limit {
                self.depth = i as u64;
                break;
            }
        }
    }

    /// Remember a call entered with its return address at `slot`. Calls nested deeper
    /// than [`RET_SLOTS_MAX`] are not remembered (their caller is an allocator anyway).
    #[inline(always)]
    pub fn push(&mut self, slot: u64, addr: u64) {
        for i in 0..RET_SLOTS_MAX {
            if i as u64 == self.depth {
                self.slots[i] = slot;
                self.addrs[i] = addr;
                self.depth += 1;
                break;
            }
        }
    }
}

/// Frees of blocks that were not sampled live, per target tgid and per CPU (see
/// `free_flow`).
#[map]
pub static FREE_FLOW: PerCpuHashMap<u32, profiler_common::FreeFlow> =
    PerCpuHashMap::with_max_entries(8192, 0);

/// How each target's allocator stores a block's size (`profiler_common::heap_layout`),
/// by tgid; written by userspace when it attaches the allocator probes.
#[map]
pub static HEAP_LAYOUT: HashMap<u32, u32> = HashMap::with_max_entries(8192, 0);

/// The block a thread's `realloc` in flight is moving, and the stack pointer at its
/// entry, keyed by pid_tgid: `[address, sp]` (see `free_flow`).
#[map]
pub static REALLOC_OLD: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(16384, 0);

/// The targets' sockets the connection ledger follows, by (tgid, fd); value: how many
/// bytes of each transfer to capture. Seeded by userspace, grown by accept and connect,
/// shrunk by close. A plain hash: a full table is counted (`SockTableFull`).
#[map]
pub static SOCK_FDS: HashMap<profiler_common::SockKey, u32> = HashMap::with_max_entries(65536, 0);

/// Bytes of count-only sockets (`SOCK_FDS` value `SOCK_CAPTURE_NONE`), added at each
/// transfer's exit, taken into the close record and read by userspace at the window's
/// end. LRU: entries of processes that exit without closing are evicted, not leaked.
#[map]
pub static SOCK_COUNTED: LruHashMap<profiler_common::SockKey, profiler_common::SockCounted> =
    LruHashMap::with_max_entries(65536, 0);

/// Exchanges of HTTP/1 connections the kernel counts (`SOCK_FDS` value
/// `SOCK_CAPTURE_EXCHANGES_IN`/`_OUT`), updated at each transfer's exit, taken into the
/// close record and read by userspace at the window's end and at each stall check.
/// LRU, as `SOCK_COUNTED`.
#[map]
pub static SOCK_EXCHANGES: LruHashMap<profiler_common::SockKey, profiler_common::SockExchanges> =
    LruHashMap::with_max_entries(16384, 0);

/// When each connection last sent the stack of a transaction begin
/// ([`profiler_common::EventKind::TxBegin`]), to send at most one per
/// [`profiler_common::TX_STACK_INTERVAL_NS`].
#[map]
pub static TX_STACKS: LruHashMap<profiler_common::SockKey, u64> =
    LruHashMap::with_max_entries(4096, 0);
