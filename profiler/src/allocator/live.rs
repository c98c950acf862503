//! Sampled live blocks of one process, tracked from allocation to free.
//!
//! Only sampled blocks reach userspace (the kernel keeps their addresses in
//! `LIVE_ALLOCS` so that their `free` is seen); each stands for `weight` bytes, which
//! keeps totals unbiased. Blocks allocated before the window are unknown: their frees
//! are invisible, so "live growth" means blocks allocated in the window and still live.
use std::collections::{BTreeMap, HashMap};

use crate::events::StackId;

/// One sampled block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveBlock {
    pub stack: Option<StackId>,
    /// Requested size.
    pub size: u64,
    /// Bytes this sample stands for.
    pub weight: u64,
    /// When it was allocated (monotonic ns).
    pub time_ns: u64,
}

impl LiveBlock {
    /// Blocks this sample stands for: `weight / size` (1 when the block alone was
    /// at least the sampling rate).
    pub fn objects(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            (self.weight as f64 / self.size as f64).max(1.0)
        }
    }
}

/// Live growth of one stack: estimated bytes and blocks allocated in the window and
/// still live at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LiveGrowth {
    pub bytes: f64,
    pub objects: f64,
}

/// The sampled allocation state of one process.
#[derive(Clone, Debug, Default)]
pub struct LiveAllocations {
    blocks: HashMap<u64, LiveBlock>,
    /// Estimated bytes allocated / freed in the window (sampled blocks only: a free of a
    /// block allocated before the window is not seen).
    pub allocated_bytes: f64,
    pub freed_bytes: f64,
    /// Sampled allocations and frees received.
    pub allocations: u64,
    pub frees: u64,
    /// An allocation arrived for an address that was still live: its free was missed
    /// (an allocator entry point that is not probed). The old block is dropped.
    pub replaced: u64,
}

impl LiveAllocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sampled block was allocated.
    pub fn alloc(&mut self, addr: u64, block: LiveBlock) {
        self.allocations += 1;
        self.allocated_bytes += block.weight as f64;
        if self.blocks.insert(addr, block).is_some() {
            self.replaced += 1;
        }
    }

    /// A sampled block was freed. Unknown addresses are ignored (the kernel only reports
    /// frees of blocks it sampled, but a block sampled before a restart of userspace
    /// tracking would be unknown here).
    pub fn free(&mut self, addr: u64) {
        if let Some(b) = self.blocks.remove(&addr) {
            self.frees += 1;
            self.freed_bytes += b.weight as f64;
        }
    }

    /// Estimated live bytes of sampled blocks.
    pub fn live_bytes(&self) -> f64 {
        self.blocks.values().map(|b| b.weight as f64).sum()
    }

    /// Number of sampled blocks still live.
    pub fn live_samples(&self) -> usize {
        self.blocks.len()
    }

    /// Live growth by stack, for blocks allocated in `[from_ns, to_ns)`.
    pub fn growth_by_stack(
        &self,
        from_ns: u64,
        to_ns: u64,
    ) -> BTreeMap<Option<StackId>, LiveGrowth> {
        let mut out: BTreeMap<Option<StackId>, LiveGrowth> = BTreeMap::new();
        for b in self.blocks.values() {
            if b.time_ns < from_ns || b.time_ns >= to_ns {
                continue;
            }
            let g = out.entry(b.stack).or_default();
            g.bytes += b.weight as f64;
            g.objects += b.objects();
        }
        out
    }

    /// Live growth by stack over the whole window.
    pub fn growth(&self) -> BTreeMap<Option<StackId>, LiveGrowth> {
        self.growth_by_stack(0, u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(stack: StackId, size: u64, weight: u64, time_ns: u64) -> LiveBlock {
        LiveBlock {
            stack: Some(stack),
            size,
            weight,
            time_ns,
        }
    }

    /// Check that frees remove exactly the sampled block and totals follow weights.
    #[test]
    fn tracks_blocks_until_freed() {
        let mut live = LiveAllocations::new();
        live.alloc(0x10, block(1, 32, 262144, 5));
        live.alloc(0x20, block(2, 1 << 20, 1 << 20, 6));
        live.free(0x10);
        live.free(0x999); // never sampled: ignored
        assert_eq!(live.live_samples(), 1);
        assert_eq!(live.live_bytes(), (1 << 20) as f64);
        assert_eq!(live.allocated_bytes, (262144 + (1 << 20)) as f64);
        assert_eq!(live.freed_bytes, 262144.0);
        assert_eq!((live.allocations, live.frees), (2, 1));
        let g = live.growth();
        assert_eq!(g.len(), 1);
        assert_eq!(g[&Some(2)].bytes, (1 << 20) as f64);
        assert_eq!(g[&Some(2)].objects, 1.0);
    }

    /// Check that a small sampled block stands for weight/size blocks.
    #[test]
    fn small_blocks_stand_for_many() {
        let mut live = LiveAllocations::new();
        live.alloc(0x10, block(1, 512, 262144, 0));
        assert_eq!(live.growth()[&Some(1)].objects, 512.0);
    }

    /// Check that an allocation at a live address replaces the block (its free was
    /// missed) and is counted.
    #[test]
    fn reused_address_replaces_and_counts() {
        let mut live = LiveAllocations::new();
        live.alloc(0x10, block(1, 64, 4096, 0));
        live.alloc(0x10, block(2, 64, 4096, 1));
        assert_eq!(live.replaced, 1);
        assert_eq!(live.live_samples(), 1);
        assert!(live.growth().contains_key(&Some(2)));
    }

    /// Check that the time split puts each block in exactly one half.
    #[test]
    fn splits_growth_by_time() {
        let mut live = LiveAllocations::new();
        live.alloc(0x10, block(1, 64, 100, 10));
        live.alloc(0x20, block(1, 64, 300, 20));
        live.alloc(0x30, block(2, 64, 50, 30));
        let first = live.growth_by_stack(0, 20);
        let second = live.growth_by_stack(20, u64::MAX);
        assert_eq!(first[&Some(1)].bytes, 100.0);
        assert_eq!(second[&Some(1)].bytes, 300.0);
        assert_eq!(second[&Some(2)].bytes, 50.0);
        assert!(!first.contains_key(&Some(2)));
    }
}
