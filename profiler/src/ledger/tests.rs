//! Unit tests of the ledger rules, one syscall behaviour each, on injected events.

use super::*;
use crate::events::linux::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, MAP_STACK, PROT_READ,
    PROT_WRITE,
};
use crate::events::MemOp;
use crate::procfs::MapEntry;

pub(super) const P: u64 = PAGE_SIZE;
pub(super) const KIB: u64 = 1024;
pub(super) const RW: u32 = PROT_READ | PROT_WRITE;
pub(super) const ANON: u64 = MAP_PRIVATE | MAP_ANONYMOUS;
/// An unsampled event: exact bytes, no stack.
pub(super) const EXACT: Provenance = Provenance::Window {
    stack: None,
    scale: 1.0,
};

pub(super) fn win(stack: StackId) -> Provenance {
    Provenance::Window {
        stack: Some(stack),
        scale: 1.0,
    }
}

pub(super) fn mmap(addr: u64, len: u64, prot: u32, flags: u64, fd: i32) -> MemOp {
    MemOp::Mmap {
        addr,
        len,
        prot,
        flags,
        fd,
    }
}

pub(super) fn anon(addr: u64, len: u64) -> MemOp {
    mmap(addr, len, RW, ANON, -1)
}

pub(super) fn munmap(addr: u64, len: u64) -> MemOp {
    MemOp::Munmap { addr, len }
}

pub(super) fn mprotect(addr: u64, len: u64, prot: u32) -> MemOp {
    MemOp::Mprotect { addr, len, prot }
}

pub(super) fn mremap(
    old_addr: u64,
    old_len: u64,
    new_addr: u64,
    new_len: u64,
    flags: u64,
) -> MemOp {
    MemOp::Mremap {
        old_addr,
        old_len,
        new_addr,
        new_len,
        flags,
    }
}

pub(super) fn map_entry(start: u64, end: u64, perms: &str, path: &str) -> MapEntry {
    let p = perms.as_bytes();
    MapEntry {
        start,
        end,
        read: p[0] == b'r',
        write: p[1] == b'w',
        exec: p[2] == b'x',
        shared: p[3] == b's',
        offset: 0,
        inode: u64::from(path.starts_with('/')),
        path: path.to_string(),
    }
}

/// Stored ranges as `(start, end, kind, committed, provenance)`.
pub(super) fn pieces(ledger: &ProcessLedger) -> Vec<(u64, u64, RegionKind, bool, Provenance)> {
    ledger
        .ranges
        .iter()
        .map(|(s, e, r)| (s, e, r.kind, r.committed(), r.provenance))
        .collect()
}

pub(super) fn committed(ledger: &ProcessLedger, kind: RegionKind) -> u64 {
    ledger.committed_by_kind()[&kind]
}

/// Window growth as `(kind, stack) -> bytes`.
pub(super) fn growth(ledger: &ProcessLedger) -> BTreeMap<(RegionKind, Option<StackId>), f64> {
    ledger
        .window_growth()
        .into_iter()
        .map(|g| ((g.kind, g.stack), g.bytes))
        .collect()
}

/// Check that seeding classifies every maps line, skips pseudo mappings, tracks
/// `---p` as reserved and takes the break from `[heap]`.
#[test]
fn seed_classifies_maps() {
    let maps = [
        map_entry(0x10_000, 0x12_000, "r-xp", "/usr/bin/prog"),
        map_entry(0x20_000, 0x30_000, "rw-p", "[heap]"),
        map_entry(0x40_000, 0x44_000, "rw-p", ""),
        map_entry(0x44_000, 0x48_000, "---p", ""),
        map_entry(0x50_000, 0x51_000, "rw-s", "/dev/shm/seg"),
        map_entry(0x51_000, 0x53_000, "rw-s", "/SYSV00000000 (deleted)"),
        map_entry(0x60_000, 0x61_000, "r-xp", "[vdso]"),
        map_entry(0x61_000, 0x63_000, "r--p", "[vvar]"),
        map_entry(0x70_000, 0x78_000, "rw-p", "[stack]"),
        map_entry(0xff_000, 0x100_000, "--xp", "[vsyscall]"),
    ];
    let mut ledger = ProcessLedger::new();
    ledger.seed(&maps, Some(0x20_000));
    let expected: BTreeMap<RegionKind, u64> = [
        (RegionKind::Heap, 0x10_000),
        (RegionKind::Anon, 0x4_000),
        (RegionKind::File, 0x2_000),
        (RegionKind::ThreadStack, 0x8_000),
        (RegionKind::Shared, 0x3_000),
    ]
    .into();
    assert_eq!(ledger.committed_by_kind(), expected);
    assert_eq!(ledger.seeded_by_kind(), &expected);
    assert_eq!(ledger.reserved_bytes(), 0x4_000);
    assert!(ledger.window_growth().is_empty());
    assert!(pieces(&ledger)
        .iter()
        .all(|p| p.4 == Provenance::PreExisting));
    assert_eq!(ledger.brk, Some(0x30_000));
}

/// Check that without a `[heap]` line the break is `start_brk`, so the first brk
/// growth is counted from there.
#[test]
fn seed_without_heap_uses_start_brk() {
    let mut ledger = ProcessLedger::new();
    ledger.seed(&[], Some(0x100_000));
    ledger.apply(&MemOp::Brk { new_brk: 0x102_000 }, win(1));
    assert_eq!(committed(&ledger, RegionKind::Heap), 2 * P);
    assert_eq!(pieces(&ledger)[0].0, 0x100_000);
}

/// Check that mmap picks the kind from flags and fd for anon, file, shared and stacks.
#[test]
fn mmap_kinds() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x10_000, P), EXACT);
    ledger.apply(&mmap(0x20_000, 2 * P, RW, MAP_PRIVATE, 3), EXACT);
    ledger.apply(&mmap(0x30_000, 3 * P, RW, MAP_SHARED, 4), EXACT);
    ledger.apply(
        &mmap(0x40_000, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS, -1),
        EXACT,
    );
    ledger.apply(&mmap(0x50_000, 5 * P, RW, ANON | MAP_STACK, -1), EXACT);
    ledger.apply(&mmap(0x60_000, 6 * P, RW, ANON | MAP_GROWSDOWN, -1), EXACT);
    assert_eq!(committed(&ledger, RegionKind::Anon), P);
    assert_eq!(committed(&ledger, RegionKind::File), 2 * P);
    assert_eq!(committed(&ledger, RegionKind::Shared), 7 * P);
    assert_eq!(committed(&ledger, RegionKind::ThreadStack), 11 * P);
    assert_eq!(committed(&ledger, RegionKind::Heap), 0);
}

/// Check that a PROT_NONE mmap is reserved, not committed, and lengths round up.
#[test]
fn mmap_prot_none_reserved_and_lengths_page_aligned() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&mmap(0x100_000, 64 * P, PROT_NONE, ANON, -1), win(1));
    ledger.apply(&anon(0x200_000, 1), win(2));
    assert_eq!(ledger.reserved_bytes(), 64 * P);
    assert_eq!(committed(&ledger, RegionKind::Anon), P);
    assert_eq!(
        growth(&ledger),
        [((RegionKind::Anon, Some(2)), P as f64)].into()
    );
}

/// Check that unmapping the middle of a range leaves two pieces with the original
/// kind and provenance.
#[test]
fn munmap_middle_splits() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 10 * P), win(7));
    ledger.apply(&munmap(0x100_000 + 4 * P, 2 * P), EXACT);
    assert_eq!(
        pieces(&ledger),
        vec![
            (0x100_000, 0x100_000 + 4 * P, RegionKind::Anon, true, win(7)),
            (
                0x100_000 + 6 * P,
                0x100_000 + 10 * P,
                RegionKind::Anon,
                true,
                win(7)
            ),
        ]
    );
}

/// Check that one munmap over several ranges and holes removes exactly its span.
#[test]
fn munmap_spanning_ranges() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 4 * P), win(1));
    ledger.apply(&mmap(0x100_000 + 6 * P, 4 * P, RW, MAP_PRIVATE, 3), win(2));
    ledger.apply(&anon(0x100_000 + 12 * P, 4 * P), win(3));
    ledger.apply(&munmap(0x100_000 + 2 * P, 12 * P), EXACT);
    assert_eq!(
        pieces(&ledger),
        vec![
            (0x100_000, 0x100_000 + 2 * P, RegionKind::Anon, true, win(1)),
            (
                0x100_000 + 14 * P,
                0x100_000 + 16 * P,
                RegionKind::Anon,
                true,
                win(3)
            ),
        ]
    );
}

/// Check that unmapping addresses the ledger never saw changes nothing.
#[test]
fn munmap_unknown_is_noop() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 4 * P), win(1));
    let before = pieces(&ledger);
    ledger.apply(&munmap(0x900_000, 100 * P), EXACT);
    ledger.apply(&munmap(0x100_000 + 4 * P, P), EXACT);
    assert_eq!(pieces(&ledger), before);
}

/// Check that MAP_FIXED over existing ranges replaces only the overlapped parts.
#[test]
fn map_fixed_replaces_overlap() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 8 * P), win(1));
    ledger.apply(
        &mmap(
            0x100_000 + 2 * P,
            2 * P,
            PROT_READ,
            MAP_PRIVATE | MAP_FIXED,
            5,
        ),
        win(2),
    );
    assert_eq!(
        pieces(&ledger),
        vec![
            (0x100_000, 0x100_000 + 2 * P, RegionKind::Anon, true, win(1)),
            (
                0x100_000 + 2 * P,
                0x100_000 + 4 * P,
                RegionKind::File,
                true,
                win(2)
            ),
            (
                0x100_000 + 4 * P,
                0x100_000 + 8 * P,
                RegionKind::Anon,
                true,
                win(1)
            ),
        ]
    );
    assert_eq!(committed(&ledger, RegionKind::Anon), 6 * P);
}

/// Check that brk growth adds Heap pages blamed on the event and a shrink removes
/// pages from the top, pre-existing ones included.
#[test]
fn brk_grow_and_shrink() {
    let heap = 0x500_000;
    let mut ledger = ProcessLedger::new();
    ledger.seed(
        &[map_entry(heap, heap + 4 * P, "rw-p", "[heap]")],
        Some(heap),
    );
    // Unaligned break: the rounded top decides which pages exist.
    ledger.apply(
        &MemOp::Brk {
            new_brk: heap + 6 * P + 10,
        },
        win(1),
    );
    assert_eq!(committed(&ledger, RegionKind::Heap), 7 * P);
    assert_eq!(
        growth(&ledger),
        [((RegionKind::Heap, Some(1)), (3 * P) as f64)].into()
    );
    ledger.apply(
        &MemOp::Brk {
            new_brk: heap + 6 * P + 20,
        },
        win(2),
    );
    assert_eq!(committed(&ledger, RegionKind::Heap), 7 * P);
    ledger.apply(
        &MemOp::Brk {
            new_brk: heap + 2 * P,
        },
        EXACT,
    );
    assert_eq!(
        pieces(&ledger),
        vec![(
            heap,
            heap + 2 * P,
            RegionKind::Heap,
            true,
            Provenance::PreExisting
        )]
    );
    assert_eq!(
        ledger.net_growth_by_kind()[&RegionKind::Heap],
        -((2 * P) as i64)
    );
}

/// Check that with no known break the first Brk event (the brk(0) query) only sets
/// it, and later ones grow the heap from there.
#[test]
fn brk_unknown_then_known() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&MemOp::Brk { new_brk: 0x500_000 }, win(1));
    assert!(pieces(&ledger).is_empty());
    ledger.apply(&MemOp::Brk { new_brk: 0x521_000 }, win(2));
    assert_eq!(
        pieces(&ledger),
        vec![(0x500_000, 0x521_000, RegionKind::Heap, true, win(2))]
    );
}

/// Check that committing part of a PROT_NONE reservation (glibc arena growth) blames
/// the mprotect's stack, and already-committed pages keep their first owner.
#[test]
fn mprotect_commit_blames_mprotect_stack() {
    let arena = 0x7000_0000;
    let mut ledger = ProcessLedger::new();
    ledger.apply(&mmap(arena, 16 * P, PROT_NONE, ANON, -1), EXACT);
    ledger.apply(&mprotect(arena, 4 * P, RW), win(10));
    ledger.apply(&mprotect(arena, 8 * P, RW), win(20));
    assert_eq!(committed(&ledger, RegionKind::Anon), 8 * P);
    assert_eq!(ledger.reserved_bytes(), 8 * P);
    assert_eq!(
        growth(&ledger),
        [
            ((RegionKind::Anon, Some(10)), (4 * P) as f64),
            ((RegionKind::Anon, Some(20)), (4 * P) as f64),
        ]
        .into()
    );
}

/// Check that mprotect(PROT_NONE) uncommits, and a change between accessible
/// protections keeps provenance.
#[test]
fn mprotect_none_uncommits() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 8 * P), win(1));
    ledger.apply(&mprotect(0x100_000, P, PROT_NONE), win(2));
    ledger.apply(&mprotect(0x100_000 + 4 * P, 4 * P, PROT_READ), win(3));
    assert_eq!(committed(&ledger, RegionKind::Anon), 7 * P);
    assert_eq!(ledger.reserved_bytes(), P);
    assert_eq!(
        growth(&ledger),
        [((RegionKind::Anon, Some(1)), (7 * P) as f64)].into()
    );
    // mprotect over a hole touches only mapped pages.
    ledger.apply(&mprotect(0x0f0_000, 0x20 * P, RW), win(4));
    assert_eq!(committed(&ledger, RegionKind::Anon), 8 * P);
    assert_eq!(pieces(&ledger)[0].0, 0x100_000);
}

/// Check that exec forgets every range and the break but keeps the seed baseline.
#[test]
fn exec_resets() {
    let mut ledger = ProcessLedger::new();
    ledger.seed(
        &[
            map_entry(0x500_000, 0x510_000, "rw-p", "[heap]"),
            map_entry(0x600_000, 0x604_000, "rw-p", ""),
        ],
        None,
    );
    ledger.apply(&anon(0x700_000, P), win(1));
    ledger.apply(&MemOp::Exec, EXACT);
    assert!(pieces(&ledger).is_empty());
    assert_eq!(ledger.exec_count(), 1);
    assert_eq!(ledger.seeded_by_kind()[&RegionKind::Heap], 0x10_000);
    // The new image's brk(0) only sets the break.
    ledger.apply(&MemOp::Brk { new_brk: 0x900_000 }, EXACT);
    ledger.apply(&MemOp::Brk { new_brk: 0x901_000 }, win(5));
    assert_eq!(committed(&ledger, RegionKind::Heap), P);
    assert_eq!(
        ledger.net_growth_by_kind()[&RegionKind::Heap],
        P as i64 - 0x10_000
    );
}

/// Check that Exit marks the process exited and freezes its final state.
#[test]
fn exit_keeps_final_state() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 4 * P), win(1));
    assert!(!ledger.exited());
    ledger.apply(&MemOp::Exit, EXACT);
    ledger.apply(&munmap(0x100_000, 4 * P), EXACT);
    assert!(ledger.exited());
    assert_eq!(committed(&ledger, RegionKind::Anon), 4 * P);
    assert_eq!(
        growth(&ledger),
        [((RegionKind::Anon, Some(1)), (4 * P) as f64)].into()
    );
}

/// Check that a sampled 64 KiB mmap with scale 4 stands for 256 KiB, and half of it
/// after unmapping half.
#[test]
fn window_growth_scales() {
    let mut ledger = ProcessLedger::new();
    let sampled = Provenance::Window {
        stack: Some(3),
        scale: 4.0,
    };
    ledger.apply(&anon(0x100_000, 64 * KIB), sampled);
    assert_eq!(
        growth(&ledger),
        [((RegionKind::Anon, Some(3)), (256 * KIB) as f64)].into()
    );
    ledger.apply(&munmap(0x100_000, 32 * KIB), EXACT);
    assert_eq!(
        growth(&ledger),
        [((RegionKind::Anon, Some(3)), (128 * KIB) as f64)].into()
    );
}

/// Check that growth is split by (kind, stack), unsampled bytes go under `None`,
/// pre-existing and reserved bytes are left out, and entries are sorted by size.
#[test]
fn window_growth_sorted_and_split() {
    let mut ledger = ProcessLedger::new();
    ledger.seed(&[map_entry(0x10_000, 0x20_000, "rw-p", "")], None);
    ledger.apply(&anon(0x100_000, P), win(1));
    ledger.apply(&anon(0x200_000, 3 * P), EXACT);
    ledger.apply(&mmap(0x300_000, 2 * P, RW, MAP_SHARED, 3), win(1));
    ledger.apply(&mmap(0x400_000, 9 * P, PROT_NONE, ANON, -1), win(2));
    let got: Vec<_> = ledger
        .window_growth()
        .into_iter()
        .map(|g| (g.kind, g.stack, g.bytes))
        .collect();
    assert_eq!(
        got,
        vec![
            (RegionKind::Anon, None, (3 * P) as f64),
            (RegionKind::Shared, Some(1), (2 * P) as f64),
            (RegionKind::Anon, Some(1), P as f64),
        ]
    );
}

/// Check that net growth is committed-now minus seeded, per kind, in both directions.
#[test]
fn net_growth_by_kind() {
    let mut ledger = ProcessLedger::new();
    ledger.seed(
        &[
            map_entry(0x10_000, 0x20_000, "rw-p", ""),
            map_entry(0x30_000, 0x34_000, "r--p", "/lib/x.so"),
        ],
        None,
    );
    ledger.apply(&munmap(0x30_000, 0x4_000), EXACT);
    ledger.apply(&anon(0x100_000, 0x8_000), win(1));
    let net = ledger.net_growth_by_kind();
    assert_eq!(net.len(), 5);
    assert_eq!(net[&RegionKind::Anon], 0x8_000);
    assert_eq!(net[&RegionKind::File], -0x4_000);
    assert_eq!(net[&RegionKind::Heap], 0);
}

/// Check that without a seed the baseline is zero and net growth is committed bytes.
#[test]
fn net_growth_without_seed() {
    let mut ledger = ProcessLedger::new();
    assert!(ledger.seeded_by_kind().is_empty());
    ledger.apply(&anon(0x100_000, 2 * P), EXACT);
    assert_eq!(
        ledger.net_growth_by_kind()[&RegionKind::Anon],
        (2 * P) as i64
    );
}

/// Check that 100k mmap/munmap pairs next to live ranges leave the map small and
/// finish quickly (each event touches only its own span).
#[test]
fn mmap_munmap_storm_stays_small() {
    let mut ledger = ProcessLedger::new();
    for i in 0..1000 {
        ledger.apply(&anon(0x1000_0000 + i * 2 * P, P), win(1));
    }
    for i in 0..100_000u64 {
        let addr = 0x4000_0000 + (i % 64) * P;
        ledger.apply(&anon(addr, P), win(2));
        ledger.apply(&munmap(addr, P), EXACT);
    }
    assert_eq!(ledger.ranges.len(), 1000);
    assert_eq!(committed(&ledger, RegionKind::Anon), 1000 * P);
}
