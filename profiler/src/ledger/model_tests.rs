//! Randomized check of the ledger against a naive page-by-page model.
//!
//! The model stores the attributes of every page in a `HashMap`, so each rule is a
//! few obvious lines; the ledger must agree with it after every random event, and its
//! ranges must never overlap.

use std::collections::HashMap;

use super::*;
use crate::events::linux::{
    MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MAP_STACK, MREMAP_DONTUNMAP, MREMAP_FIXED,
    MREMAP_MAYMOVE, PROT_READ, PROT_WRITE,
};
use crate::events::MemOp;

const P: u64 = PAGE_SIZE;
/// Base of the small address space the random events play in.
const BASE: u64 = 0x1000_0000;
/// Pages in that space: small, so events collide often.
const PAGES: u64 = 64;

/// A tiny deterministic generator (Knuth's MMIX LCG), to avoid a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The reference: attributes of every mapped page, keyed by page number.
#[derive(Default)]
struct Model {
    pages: HashMap<u64, Region>,
}

impl Model {
    fn set(&mut self, first: u64, count: u64, region: Region) {
        for page in first..first + count {
            self.pages.insert(page, region);
        }
    }

    fn unmap(&mut self, first: u64, count: u64) {
        for page in first..first + count {
            self.pages.remove(&page);
        }
    }

    fn mprotect(&mut self, first: u64, count: u64, prot: u32, provenance: Provenance) {
        for page in first..first + count {
            if let Some(region) = self.pages.get_mut(&page) {
                if region.prot == PROT_NONE && prot != PROT_NONE {
                    region.provenance = provenance;
                }
                region.prot = prot;
            }
        }
    }

    /// mremap of a fully mapped old range to a target that does not overlap it (or in
    /// place): what the kernel accepts, spelled out page by page.
    fn mremap(
        &mut self,
        old: u64,
        old_pages: u64,
        new: u64,
        new_pages: u64,
        dontunmap: bool,
        provenance: Provenance,
    ) {
        let template = self.pages[&(old + old_pages - 1)];
        let kept: Vec<Region> = (old..old + old_pages.min(new_pages))
            .map(|p| self.pages[&p])
            .collect();
        if new == old {
            self.unmap(
                old + new_pages.min(old_pages),
                old_pages - old_pages.min(new_pages),
            );
        } else {
            if !dontunmap {
                self.unmap(old, old_pages);
            }
            self.unmap(new, new_pages);
            for (i, region) in kept.into_iter().enumerate() {
                self.pages.insert(new + i as u64, region);
            }
        }
        if new_pages > old_pages {
            let growth = Region {
                provenance,
                ..template
            };
            self.set(new + old_pages, new_pages - old_pages, growth);
        }
    }

    fn committed_by_kind(&self) -> BTreeMap<RegionKind, u64> {
        let mut out: BTreeMap<RegionKind, u64> =
            RegionKind::all().into_iter().map(|k| (k, 0)).collect();
        for region in self.pages.values().filter(|r| r.committed()) {
            *out.entry(region.kind).or_default() += P;
        }
        out
    }

    fn window_growth(&self) -> BTreeMap<(RegionKind, Option<StackId>), f64> {
        let mut out = BTreeMap::new();
        for region in self.pages.values().filter(|r| r.committed()) {
            if let Provenance::Window { stack, scale } = region.provenance {
                *out.entry((region.kind, stack)).or_default() += P as f64 * scale;
            }
        }
        out
    }
}

fn page_addr(page: u64) -> u64 {
    BASE + page * P
}

/// A length of `pages` pages, sometimes not a multiple of the page size: the kernel
/// (and the ledger) round it up.
fn ragged_len(rng: &mut Lcg, pages: u64) -> u64 {
    pages * P - rng.below(P)
}

fn random_provenance(rng: &mut Lcg) -> Provenance {
    // Power-of-two scales keep the float sums exact, so the comparison can be too.
    match rng.below(5) {
        0 => Provenance::Window {
            stack: None,
            scale: 1.0,
        },
        n => Provenance::Window {
            stack: Some(n as StackId),
            scale: f64::from(1u32 << n),
        },
    }
}

fn random_prot(rng: &mut Lcg) -> u32 {
    [PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE][rng.below(3) as usize]
}

/// Generate one valid random event, apply it to the model, and return it.
fn random_event(rng: &mut Lcg, model: &mut Model) -> (MemOp, Provenance) {
    let provenance = random_provenance(rng);
    loop {
        let first = rng.below(PAGES);
        let count = 1 + rng.below((PAGES - first).min(8));
        match rng.below(4) {
            0 => {
                let (flags, fd, kind) = [
                    (MAP_PRIVATE | MAP_ANONYMOUS, -1, RegionKind::Anon),
                    (MAP_PRIVATE, 3, RegionKind::File),
                    (MAP_SHARED, 3, RegionKind::Shared),
                    (
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                        -1,
                        RegionKind::ThreadStack,
                    ),
                ][rng.below(4) as usize];
                let prot = random_prot(rng);
                let region = Region {
                    kind,
                    prot,
                    provenance,
                };
                model.set(first, count, region);
                let op = MemOp::Mmap {
                    addr: page_addr(first),
                    len: ragged_len(rng, count),
                    prot,
                    flags,
                    fd,
                };
                return (op, provenance);
            }
            1 => {
                model.unmap(first, count);
                let op = MemOp::Munmap {
                    addr: page_addr(first),
                    len: ragged_len(rng, count),
                };
                return (op, provenance);
            }
            2 => {
                let prot = random_prot(rng);
                model.mprotect(first, count, prot, provenance);
                let op = MemOp::Mprotect {
                    addr: page_addr(first),
                    len: ragged_len(rng, count),
                    prot,
                };
                return (op, provenance);
            }
            _ => {
                // mremap needs a fully mapped old range and a target disjoint from it.
                if !(first..first + count).all(|p| model.pages.contains_key(&p)) {
                    continue;
                }
                let new_pages = 1 + rng.below(8);
                let (new, flags) = match rng.below(3) {
                    0 => (first, 0),
                    mode => {
                        let new = rng.below(PAGES - new_pages + 1);
                        if new < first + count && first < new + new_pages {
                            continue;
                        }
                        let dontunmap = if mode == 2 { MREMAP_DONTUNMAP } else { 0 };
                        (new, MREMAP_MAYMOVE | MREMAP_FIXED | dontunmap)
                    }
                };
                if new == first && first + new_pages > PAGES {
                    continue;
                }
                let dontunmap = flags & MREMAP_DONTUNMAP != 0;
                model.mremap(first, count, new, new_pages, dontunmap, provenance);
                let op = MemOp::Mremap {
                    old_addr: page_addr(first),
                    old_len: ragged_len(rng, count),
                    new_addr: page_addr(new),
                    new_len: ragged_len(rng, new_pages),
                    flags,
                };
                return (op, provenance);
            }
        }
    }
}

/// Compare the ledger with the model and check the no-overlap invariant.
fn check(ledger: &ProcessLedger, model: &Model, step: usize) {
    let mut pages = HashMap::new();
    let mut prev_end = 0;
    for (start, end, region) in ledger.ranges.iter() {
        assert!(start < end, "step {step}: empty range at {start:#x}");
        assert!(prev_end <= start, "step {step}: overlap at {start:#x}");
        assert!(start % P == 0 && end % P == 0, "step {step}: unaligned");
        prev_end = end;
        for addr in (start..end).step_by(P as usize) {
            pages.insert((addr - BASE) / P, *region);
        }
    }
    assert_eq!(pages, model.pages, "step {step}: pages differ");
    assert_eq!(
        ledger.committed_by_kind(),
        model.committed_by_kind(),
        "step {step}"
    );
    let reserved = model.pages.values().filter(|r| !r.committed()).count() as u64 * P;
    assert_eq!(ledger.reserved_bytes(), reserved, "step {step}");
    let growth: BTreeMap<_, _> = ledger
        .window_growth()
        .into_iter()
        .map(|g| ((g.kind, g.stack), g.bytes))
        .collect();
    assert_eq!(growth, model.window_growth(), "step {step}");
}

/// Check that random mmap/munmap/mprotect/mremap sequences leave the ledger agreeing
/// page by page with a naive model, with no overlapping ranges.
#[test]
fn random_events_match_page_model() {
    for seed in 1..=20 {
        let mut rng = Lcg(seed);
        let mut ledger = ProcessLedger::new();
        let mut model = Model::default();
        for step in 0..500 {
            let (op, provenance) = random_event(&mut rng, &mut model);
            ledger.apply(&op, provenance);
            check(&ledger, &model, step);
        }
    }
}
