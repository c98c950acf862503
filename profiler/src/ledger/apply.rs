//! Replaying one successful address-space syscall onto the ledger.
//!
//! Every event only ever touches the span it names (plus, for mremap, its target), so
//! each costs O(log n + pieces touched). Events describe syscalls that succeeded, so
//! the rules follow what the kernel did, not what it would have rejected.

use super::{page_align_up, span, ProcessLedger, Provenance, Region, RegionKind};
use crate::events::linux::{MREMAP_DONTUNMAP, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE};
use crate::events::MemOp;

/// The protection bits that decide whether memory is accessible. Others
/// (`PROT_GROWSDOWN`, `PROT_SEM`, arch-specific bits) do not commit anything.
const PROT_ACCESS: u32 = PROT_READ | PROT_WRITE | PROT_EXEC;

impl ProcessLedger {
    /// Apply one successful syscall.
    ///
    /// Events after [`MemOp::Exit`] are ignored: the ledger keeps the final state for
    /// the report, and a reused PID is a new process that needs a new ledger.
    pub fn apply(&mut self, op: &MemOp, provenance: Provenance) {
        if self.exited {
            return;
        }
        match *op {
            MemOp::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
            } => {
                let (start, end) = span(addr, len);
                let region = Region {
                    kind: RegionKind::from_mmap(flags, fd),
                    prot: prot & PROT_ACCESS,
                    provenance,
                };
                // MAP_FIXED (or a hint the kernel honoured) replaced whatever was there.
                self.ranges.insert(start, end, region);
            }
            MemOp::Munmap { addr, len } => {
                let (start, end) = span(addr, len);
                self.ranges.remove(start, end);
            }
            MemOp::Mremap {
                old_addr,
                old_len,
                new_addr,
                new_len,
                flags,
            } => self.mremap(old_addr, old_len, new_addr, new_len, flags, provenance),
            MemOp::Brk { new_brk } => self.brk(new_brk, provenance),
            MemOp::Mprotect { addr, len, prot } => {
                let (start, end) = span(addr, len);
                let prot = prot & PROT_ACCESS;
                self.ranges.update(start, end, |region| {
                    // Committing a reservation (glibc growing an arena) is an allocation
                    // by whoever called mprotect; already-committed bytes keep their owner.
                    if !region.committed() && prot != PROT_NONE {
                        region.provenance = provenance;
                    }
                    region.prot = prot;
                });
            }
            MemOp::Exec => {
                self.ranges.clear();
                self.brk = None;
                self.execs += 1;
            }
            MemOp::Exit => self.exited = true,
        }
    }

    /// mremap: the first `min(old_len, new_len)` bytes keep their attributes (moved if
    /// the address changed); growth is new memory of the old range's kind and
    /// protection, created by this event.
    fn mremap(
        &mut self,
        old_addr: u64,
        old_len: u64,
        new_addr: u64,
        new_len: u64,
        flags: u64,
        provenance: Provenance,
    ) {
        let (old_len, new_len) = (page_align_up(old_len), page_align_up(new_len));
        if new_len == 0 {
            return;
        }
        let old_end = old_addr.saturating_add(old_len);
        // Growth takes after the last piece of the old range (the one the kernel extends).
        // old_len == 0 duplicates a shared mapping: the template is the range at old_addr.
        let template = if old_len == 0 {
            self.ranges.get(old_addr).map(|(_, _, r)| *r)
        } else {
            self.ranges
                .overlapping(old_addr, old_end)
                .last()
                .map(|(_, _, r)| *r)
        };
        // Unknown old range (no seed): the memory is real, its kind is a guess.
        let (kind, prot) = template.map_or_else(
            || {
                let kind = if old_len == 0 {
                    RegionKind::Shared
                } else {
                    RegionKind::Anon
                };
                (kind, PROT_READ | PROT_WRITE)
            },
            |r| (r.kind, r.prot),
        );

        let kept = old_len.min(new_len);
        if new_addr == old_addr {
            // In place: a shrink drops the tail; a grow keeps every old piece.
            self.ranges
                .remove(old_addr.saturating_add(new_len), old_end);
        } else if old_len > 0 {
            let moved: Vec<(u64, u64, Region)> = if flags & MREMAP_DONTUNMAP != 0 {
                self.ranges
                    .overlapping(old_addr, old_addr.saturating_add(kept))
                    .map(|(s, e, r)| (s, e, *r))
                    .collect()
            } else {
                let kept_end = old_addr.saturating_add(kept);
                self.ranges
                    .remove(old_addr, old_end)
                    .into_iter()
                    .filter(|&(s, _, _)| s < kept_end)
                    .map(|(s, e, r)| (s, e.min(kept_end), r))
                    .collect()
            };
            self.ranges
                .remove(new_addr, new_addr.saturating_add(new_len));
            for (start, end, region) in moved {
                let to = |a: u64| new_addr.saturating_add(a - old_addr);
                self.ranges.insert(to(start), to(end), region);
            }
        }
        if new_len > old_len {
            let region = Region {
                kind,
                prot,
                provenance,
            };
            let growth_start = new_addr.saturating_add(old_len);
            self.ranges
                .insert(growth_start, new_addr.saturating_add(new_len), region);
        }
    }

    /// brk: the heap is `[start_brk, page_align_up(brk))`, so growth adds the pages
    /// between the old and new rounded break, and a shrink removes pages from the top
    /// whoever created them. With no known break the event only sets it.
    fn brk(&mut self, new_brk: u64, provenance: Provenance) {
        let Some(old_brk) = self.brk.replace(new_brk) else {
            return;
        };
        let (old_top, new_top) = (page_align_up(old_brk), page_align_up(new_brk));
        if new_top > old_top {
            let region = Region {
                kind: RegionKind::Heap,
                prot: PROT_READ | PROT_WRITE,
                provenance,
            };
            self.ranges.insert(old_top, new_top, region);
        } else {
            self.ranges.remove(new_top, old_top);
        }
    }
}
