//! Per-process ledger of live address ranges.
//!
//! The ledger answers "which stacks hold the memory that grew during the capture",
//! split by [`RegionKind`]. It is seeded from `/proc/PID/maps` at attach, then replays
//! every successful mmap/munmap/mremap/brk/mprotect of the process in order. Each byte
//! of the address space remembers who created (or committed) it, so at the end the
//! ranges still committed that were created during the window are summed per stack.
//!
//! Pure: no I/O, no kernel types; all inputs are [`MemOp`](crate::events::MemOp)s and
//! [`MapEntry`](crate::procfs::MapEntry)s, so
//! every rule is unit-tested without root.

mod apply;
mod kind;
mod ranges;
mod seed;

#[cfg(test)]
mod brk_fold_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod remap_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::events::linux::PROT_NONE;
use crate::events::StackId;

pub use kind::RegionKind;
use ranges::RangeMap;

/// Page size the kernel rounds lengths to (x86_64, like `events::linux`).
pub const PAGE_SIZE: u64 = 4096;

/// Who created a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Provenance {
    /// Existed when the capture attached (seeded from /proc/PID/maps).
    PreExisting,
    /// Created during the window; `stack` is Some when the event was sampled,
    /// `scale` multiplies its bytes into the estimate (1.0 when exact).
    Window { stack: Option<StackId>, scale: f64 },
}

/// Estimated live bytes of one kind created during the window by one stack.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GrowthEntry {
    pub kind: RegionKind,
    /// `None` collects bytes of unsampled events (exact, not scaled).
    pub stack: Option<StackId>,
    pub bytes: f64,
    /// Estimated live objects: committed ranges weighted like their bytes. Only a
    /// rough count of mappings: adjacent ranges with equal attributes are merged, and a
    /// range split by a partial munmap or mprotect counts once per piece.
    pub objects: f64,
}

/// Attributes of every byte of one stored range.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Region {
    kind: RegionKind,
    /// `PROT_READ|PROT_WRITE|PROT_EXEC` bits only; `PROT_NONE` means reserved.
    prot: u32,
    provenance: Provenance,
}

impl Region {
    /// Accessible memory counts as committed; `PROT_NONE` is only a reservation.
    fn committed(&self) -> bool {
        self.prot != PROT_NONE
    }
}

/// The live address ranges of one process, with who created each byte.
#[derive(Clone, Debug, Default)]
pub struct ProcessLedger {
    ranges: RangeMap<Region>,
    /// Current program break, unrounded; `None` until seeded or a Brk event is seen.
    brk: Option<u64>,
    /// Committed bytes per kind when seeded; empty if never seeded.
    seeded: BTreeMap<RegionKind, u64>,
    exited: bool,
    execs: u32,
}

impl ProcessLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes committed now (ranges whose protection is not PROT_NONE), per kind.
    /// Every kind is present, with 0 when the process has none.
    pub fn committed_by_kind(&self) -> BTreeMap<RegionKind, u64> {
        let mut out: BTreeMap<RegionKind, u64> =
            RegionKind::all().into_iter().map(|k| (k, 0)).collect();
        for (start, end, region) in self.ranges.iter() {
            if region.committed() {
                *out.entry(region.kind).or_default() += end - start;
            }
        }
        out
    }

    /// Bytes reserved but not committed (PROT_NONE), all kinds.
    pub fn reserved_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .filter(|(_, _, r)| !r.committed())
            .map(|(start, end, _)| end - start)
            .sum()
    }

    /// Estimated live bytes created during the window and still committed, per
    /// (kind, stack): the sum over committed window ranges of `len * scale`. Ranges
    /// whose stack is `None` are reported under `None` (unsampled). Sorted by bytes
    /// descending, ties in (kind, stack) order.
    ///
    /// The sampled entries are already an unbiased estimate of *all* window bytes,
    /// unsampled ones included, so the `None` entry is a subset of what they stand
    /// for: it says how much was not attributed, and must not be added to them.
    pub fn window_growth(&self) -> Vec<GrowthEntry> {
        let mut sums: BTreeMap<(RegionKind, Option<StackId>), (f64, f64)> = BTreeMap::new();
        for (start, end, region) in self.ranges.iter() {
            if let (true, Provenance::Window { stack, scale }) =
                (region.committed(), region.provenance)
            {
                let sum = sums.entry((region.kind, stack)).or_default();
                sum.0 += (end - start) as f64 * scale;
                sum.1 += scale;
            }
        }
        let mut out: Vec<GrowthEntry> = sums
            .into_iter()
            .map(|((kind, stack), (bytes, objects))| GrowthEntry {
                kind,
                stack,
                bytes,
                objects,
            })
            .collect();
        // Stable sort keeps the (kind, stack) order of the BTreeMap among equal sizes.
        out.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
        out
    }

    /// Committed bytes at seed time per kind (kept from `seed`), to compute net growth.
    /// Every kind is present once seeded; empty if `seed` was never called.
    pub fn seeded_by_kind(&self) -> &BTreeMap<RegionKind, u64> {
        &self.seeded
    }

    /// Committed bytes now minus committed bytes at seed time, per kind (every kind
    /// present). Without a seed the baseline is zero, so this equals committed bytes.
    pub fn net_growth_by_kind(&self) -> BTreeMap<RegionKind, i64> {
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.committed_by_kind()
            .into_iter()
            .map(|(kind, now)| {
                let before = self.seeded.get(&kind).copied().unwrap_or(0);
                (kind, signed(now).saturating_sub(signed(before)))
            })
            .collect()
    }

    /// Whether an Exit event was applied; the ledger then keeps its final state.
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// How many times the process exec'd during the window: when non-zero, the seeded
    /// baseline describes a different program image than the current ranges.
    pub fn exec_count(&self) -> u32 {
        self.execs
    }
}

/// Round a length up to whole pages, as the kernel does (saturating at the top).
fn page_align_up(len: u64) -> u64 {
    len.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// `[addr, addr + len rounded up to pages)`, saturating at the top of the address space.
fn span(addr: u64, len: u64) -> (u64, u64) {
    (addr, addr.saturating_add(page_align_up(len)))
}
