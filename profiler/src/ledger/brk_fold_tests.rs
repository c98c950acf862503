//! The brk probe folds the break's unsampled moves into its next record
//! (`profiler_common::BrkState`): replaying the records, with the moves they fold, must
//! leave the heap where a replay of every move would, at every record and at every
//! window end that reads the kernel's state.

use super::tests::{pieces, EXACT, P};
use super::*;
use crate::events::{FoldedBreak, MemOp};

/// What the kernel keeps per process and sends, as the probe in
/// `profiler-ebpf/src/memory.rs` does.
struct KernelBrk {
    last: u64,
    low: u64,
}

impl KernelBrk {
    /// One brk call moving the break to `new`: the record the probe sends, if any.
    fn call(&mut self, new: u64, sampled: bool) -> Option<(FoldedBreak, u64)> {
        let prev = self.last;
        let low = self.low.min(prev);
        self.last = new;
        if !sampled {
            self.low = low.min(new);
            return None;
        }
        self.low = new;
        Some((FoldedBreak { low, before: prev }, new))
    }

    /// What userspace reads at a window's end.
    fn state(&self) -> FoldedBreak {
        FoldedBreak {
            low: self.low.min(self.last),
            before: self.last,
        }
    }
}

/// The break when the capture attached.
const START: u64 = 0x5555_0000_0000 + 8 * P;

/// Two ledgers seeded at [`START`] (one to replay every move, one the records), and
/// the kernel's state there.
fn start() -> (ProcessLedger, ProcessLedger, KernelBrk) {
    let seeded = || {
        let mut ledger = ProcessLedger::new();
        ledger.seed(&[], Some(START));
        ledger
    };
    let kernel = KernelBrk {
        last: START,
        low: START,
    };
    (seeded(), seeded(), kernel)
}

fn apply_folded(ledger: &mut ProcessLedger, folded: FoldedBreak) {
    for op in folded.moves() {
        ledger.apply(&op, EXACT);
    }
}

/// A deterministic walk of the break: grows and trims of 1 to 24 pages, unaligned,
/// every grow sampled with probability about 1/4 (xorshift).
fn walk(seed: u64, steps: usize) -> Vec<(u64, bool)> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = 0x5555_0000_0000;
    let mut brk = base + 8 * P;
    (0..steps)
        .map(|_| {
            let r = next();
            let pages = 1 + r % 24;
            let grow = brk < base + 4 * P || r & 0x100 != 0;
            brk = if grow {
                brk + pages * P + (r >> 40) % 64
            } else {
                (brk - (pages * P).min(brk - base)).max(base)
            };
            (brk, grow && r & 0x3000 == 0)
        })
        .collect()
}

#[test]
fn folded_records_leave_the_heap_of_every_move() {
    for seed in [1, 7, 0x9e37_79b9, 0xdead_beef] {
        let (mut every, mut folded, mut kernel) = start();
        let mut records = 0;
        for (i, &(new, sampled)) in walk(seed, 400).iter().enumerate() {
            let stack = Provenance::Window {
                stack: Some(i as StackId),
                scale: 1.0,
            };
            every.apply(
                &MemOp::Brk { new_brk: new },
                if sampled { stack } else { EXACT },
            );
            if let Some((fold, new)) = kernel.call(new, sampled) {
                records += 1;
                apply_folded(&mut folded, fold);
                folded.apply(&MemOp::Brk { new_brk: new }, stack);
                assert_eq!(pieces(&folded), pieces(&every), "seed {seed}, move {i}");
            }
            if i % 37 == 0 {
                // A window's end: the state read, twice.
                apply_folded(&mut folded, kernel.state());
                assert_eq!(pieces(&folded), pieces(&every), "seed {seed}, end at {i}");
                apply_folded(&mut folded, kernel.state());
                assert_eq!(pieces(&folded), pieces(&every), "seed {seed}, again at {i}");
            }
        }
        assert!(
            records > 20 && records < 200,
            "seed {seed}: {records} records"
        );
    }
}

/// A record sent just before the window's end is read but drained after it: the
/// heap goes back to the record's time, and the state read after the drain brings it
/// up to date (the capture reads, drains, and reads again).
#[test]
fn a_record_drained_after_the_state_is_healed_by_the_next_read() {
    let (mut every, mut folded, mut kernel) = start();
    let sampled = Provenance::Window {
        stack: Some(9),
        scale: 1.0,
    };
    // Unsampled trims and grows, then a sampled grow whose record is still in the ring.
    for (new, prov) in [(START - 4 * P, EXACT), (START + 2 * P, EXACT)] {
        every.apply(&MemOp::Brk { new_brk: new }, prov);
        assert!(kernel.call(new, false).is_none());
    }
    let new = START + 9 * P;
    every.apply(&MemOp::Brk { new_brk: new }, sampled);
    let (fold, _) = kernel.call(new, true).expect("sampled");
    // More unsampled moves after it.
    for new in [START + 3 * P, START + 5 * P] {
        every.apply(&MemOp::Brk { new_brk: new }, EXACT);
        assert!(kernel.call(new, false).is_none());
    }
    // The state read while the record is missing cannot place its sample.
    apply_folded(&mut folded, kernel.state());
    assert_ne!(pieces(&folded), pieces(&every));
    // The late record takes the heap to its own time…
    apply_folded(&mut folded, fold);
    folded.apply(&MemOp::Brk { new_brk: new }, sampled);
    let (mut at_record, _, _) = start();
    for new in [START - 4 * P, START + 2 * P] {
        at_record.apply(&MemOp::Brk { new_brk: new }, EXACT);
    }
    at_record.apply(&MemOp::Brk { new_brk: new }, sampled);
    assert_eq!(pieces(&folded), pieces(&at_record));
    // …and the state read after the drain brings it up to date.
    apply_folded(&mut folded, kernel.state());
    assert_eq!(pieces(&folded), pieces(&every));
}
