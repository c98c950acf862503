//! Unit tests of the ledger's mremap rules (shrink, grow, move, DONTUNMAP, shared
//! duplicates), on injected events.
use super::tests::*;
use super::*;
use crate::events::linux::{
    MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
};

/// Check that shrinking with mremap in place drops the tail.
#[test]
fn mremap_shrink_in_place() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&anon(0x100_000, 8 * P), win(1));
    ledger.apply(&mremap(0x100_000, 8 * P, 0x100_000, 3 * P, 0), win(2));
    assert_eq!(
        pieces(&ledger),
        vec![(0x100_000, 0x100_000 + 3 * P, RegionKind::Anon, true, win(1))]
    );
}

/// Check that growing in place keeps the old pieces and blames the growth on the
/// mremap event, with the old range's kind.
#[test]
fn mremap_grow_in_place() {
    let mut ledger = ProcessLedger::new();
    ledger.apply(&mmap(0x100_000, 2 * P, RW, MAP_SHARED, 3), win(1));
    ledger.apply(&mremap(0x100_000, 2 * P, 0x100_000, 5 * P, 0), win(2));
    assert_eq!(
        pieces(&ledger),
        vec![
            (
                0x100_000,
                0x100_000 + 2 * P,
                RegionKind::Shared,
                true,
                win(1)
            ),
            (
                0x100_000 + 2 * P,
                0x100_000 + 5 * P,
                RegionKind::Shared,
                true,
                win(2)
            ),
        ]
    );
}

/// Check that a move carries every piece (provenance and kind) to the new address,
/// adds the growth, and leaves nothing at the old address.
#[test]
fn mremap_move() {
    let mut ledger = ProcessLedger::new();
    let (old, new) = (0x100_000, 0x800_000);
    ledger.seed(&[map_entry(old, old + 2 * P, "rw-p", "")], None);
    ledger.apply(&anon(old + 2 * P, 2 * P), win(1));
    ledger.apply(&mremap(old, 4 * P, new, 6 * P, MREMAP_MAYMOVE), win(2));
    assert_eq!(
        pieces(&ledger),
        vec![
            (
                new,
                new + 2 * P,
                RegionKind::Anon,
                true,
                Provenance::PreExisting
            ),
            (new + 2 * P, new + 4 * P, RegionKind::Anon, true, win(1)),
            (new + 4 * P, new + 6 * P, RegionKind::Anon, true, win(2)),
        ]
    );
}

/// Check that a shrinking move to a fixed address drops the old tail and replaces
/// whatever was at the target.
#[test]
fn mremap_shrinking_move_to_fixed_target() {
    let mut ledger = ProcessLedger::new();
    let (old, new) = (0x100_000, 0x800_000);
    ledger.apply(&anon(old, 4 * P), win(1));
    ledger.apply(&mmap(new, 8 * P, RW, MAP_PRIVATE, 3), win(9));
    ledger.apply(
        &mremap(old, 4 * P, new, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED),
        win(2),
    );
    assert_eq!(
        pieces(&ledger),
        vec![
            (new, new + 2 * P, RegionKind::Anon, true, win(1)),
            (new + 2 * P, new + 8 * P, RegionKind::File, true, win(9)),
        ]
    );
}

/// Check that MREMAP_DONTUNMAP leaves the old range in place and adds a copy.
#[test]
fn mremap_dontunmap_keeps_old() {
    let mut ledger = ProcessLedger::new();
    let (old, new) = (0x100_000, 0x800_000);
    ledger.apply(&anon(old, 4 * P), win(1));
    ledger.apply(
        &mremap(old, 4 * P, new, 4 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP),
        win(2),
    );
    assert_eq!(
        pieces(&ledger),
        vec![
            (old, old + 4 * P, RegionKind::Anon, true, win(1)),
            (new, new + 4 * P, RegionKind::Anon, true, win(1)),
        ]
    );
}

/// Check that old_len == 0 (duplicating a shared mapping) adds a new range of the old
/// kind created by the event, and keeps the original.
#[test]
fn mremap_duplicate_shared() {
    let mut ledger = ProcessLedger::new();
    let (old, new) = (0x100_000, 0x800_000);
    ledger.apply(
        &mmap(old, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS, -1),
        win(1),
    );
    ledger.apply(&mremap(old, 0, new, 4 * P, MREMAP_MAYMOVE), win(2));
    assert_eq!(
        pieces(&ledger),
        vec![
            (old, old + 4 * P, RegionKind::Shared, true, win(1)),
            (new, new + 4 * P, RegionKind::Shared, true, win(2)),
        ]
    );
}
