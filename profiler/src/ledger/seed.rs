//! Seeding the ledger from `/proc/PID/maps` when the capture attaches.

use super::kind::prot_of;
use super::{ProcessLedger, Provenance, Region, RegionKind};
use crate::procfs::MapEntry;

impl ProcessLedger {
    /// Seed from /proc/PID/maps at attach: every mapping becomes PreExisting.
    ///
    /// Classification is [`RegionKind::from_map_entry`]: `[heap]` is Heap, `[stack]`
    /// ThreadStack, shared mappings (and `/dev/shm`, `/SYSV`) Shared, other paths File,
    /// anonymous Anon; kernel pseudo mappings (`[vdso]`, `[vvar]`, …) are skipped.
    /// Mappings with no r/w/x permission (`---p`) are tracked as reserved.
    ///
    /// The current break is the end of `[heap]`, or `start_brk` (from /proc/PID/stat)
    /// when the heap has not grown yet and so has no mapping. Seeding replaces any
    /// ranges already in the ledger and records [`ProcessLedger::seeded_by_kind`].
    pub fn seed(&mut self, maps: &[MapEntry], start_brk: Option<u64>) {
        self.ranges.clear();
        self.brk = None;
        for entry in maps.iter().filter(|e| e.start < e.end) {
            let Some(kind) = RegionKind::from_map_entry(entry) else {
                continue;
            };
            if kind == RegionKind::Heap {
                self.brk = Some(entry.end);
            }
            let region = Region {
                kind,
                prot: prot_of(entry),
                provenance: Provenance::PreExisting,
            };
            self.ranges.insert(entry.start, entry.end, region);
        }
        if self.brk.is_none() {
            self.brk = start_brk;
        }
        self.seeded = self.committed_by_kind();
    }
}
