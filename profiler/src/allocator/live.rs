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
    /// Size the allocator's header gives (see `HeapLayout`); `size` when unknown.
    pub usable: u64,
    /// Bytes this sample stands for.
    pub weight: u64,
    /// When it was allocated (monotonic ns).
    pub time_ns: u64,
}

impl LiveBlock {
    /// Header bytes this sample stands for: `usable / p` where `p = size / weight` is
    /// the probability that the sampler picked the block (Horvitz–Thompson).
    pub fn heap_weight(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.usable as f64 * self.weight as f64 / self.size as f64
        }
    }

    /// This sample's share of the variance of a sum of [`Self::heap_weight`]s:
    /// `(1 - p) * heap_weight^2` (0 for a block that was certain to be sampled).
    pub fn heap_variance(&self) -> f64 {
        if self.weight == 0 || self.size >= self.weight {
            return 0.0;
        }
        let p = self.size as f64 / self.weight as f64;
        (1.0 - p) * self.heap_weight().powi(2)
    }

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
    /// Sampling variance of `bytes`: `Σ w (w − size)` over its samples.
    pub variance: f64,
    /// Bytes by age at the end of the observation (see [`AGE_BUCKETS`]).
    pub by_age: [f64; 4],
    /// Estimated bytes of this stack's sampled blocks freed since the follow started.
    pub freed: f64,
    /// Age of the oldest live sample, in seconds.
    pub oldest_secs: f64,
}

/// Age buckets of live bytes, as shares of the observed span `T`: younger than `T/8`,
/// `T/8..T/4`, `T/4..T/2`, older than `T/2`. A leak's blocks are spread over the whole
/// span (about 12 %, 12 %, 25 %, 50 %); a cache's are all younger than its turnover
/// time, so a cache that turns over faster than `T/8` has everything in the first.
pub const AGE_BUCKETS: [f64; 4] = [0.125, 0.25, 0.5, 1.0];

impl LiveGrowth {
    /// Share of the live bytes older than half the observed span.
    pub fn old_share(&self) -> f64 {
        if self.bytes > 0.0 {
            self.by_age[3] / self.bytes
        } else {
            0.0
        }
    }

    /// Bytes older than half the span, and that estimate's sampling variance (each
    /// sample's share is scaled like the whole, an approximation).
    pub fn old_bytes(&self) -> (f64, f64) {
        (self.by_age[3], self.variance * self.old_share())
    }
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
    /// For the net growth (see `NetGrowth`): the estimated header bytes of every
    /// allocation (sampled or not), its variance, and the exact header bytes of the
    /// sampled blocks that were freed (or replaced).
    pub heap_allocated: f64,
    pub heap_allocated_variance: f64,
    pub heap_freed_sampled: f64,
    /// Estimated bytes of sampled blocks freed, by stack: a stack whose blocks are
    /// freed is turnover (a cache, a batch), one whose blocks are not may be a leak.
    freed_by_stack: HashMap<Option<StackId>, f64>,
    /// The moment the kernel's free counters were read (see [`Self::cut`]), and the
    /// net-growth totals as of then.
    cut_ns: Option<u64>,
    at_cut: Option<NetTotals>,
}

/// The allocation side of the net growth (see `allocator::net`), in header bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetTotals {
    pub allocated: f64,
    pub allocated_variance: f64,
    pub freed_sampled: f64,
}

impl LiveAllocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// The kernel's counters of unseen frees are read now (`now_ns`), while allocations
    /// up to then may still wait in the ring buffer: the net growth pairs the counters
    /// with the totals of the events up to this moment, not with later ones.
    pub fn cut(&mut self, now_ns: u64) {
        self.cut_ns = Some(now_ns);
        self.at_cut = None;
    }

    /// The totals the net growth uses: as of the last cut.
    pub fn net_totals(&self) -> NetTotals {
        self.at_cut.unwrap_or_else(|| self.totals())
    }

    fn totals(&self) -> NetTotals {
        NetTotals {
            allocated: self.heap_allocated,
            allocated_variance: self.heap_allocated_variance,
            freed_sampled: self.heap_freed_sampled,
        }
    }

    /// An event at `time_ns` is about to change the totals.
    fn before(&mut self, time_ns: u64) {
        if self.at_cut.is_none() && self.cut_ns.is_some_and(|cut| time_ns > cut) {
            self.at_cut = Some(self.totals());
        }
    }

    /// A sampled block was allocated.
    pub fn alloc(&mut self, addr: u64, block: LiveBlock) {
        self.before(block.time_ns);
        self.allocations += 1;
        self.allocated_bytes += block.weight as f64;
        self.heap_allocated += block.heap_weight();
        self.heap_allocated_variance += block.heap_variance();
        if let Some(old) = self.blocks.insert(addr, block) {
            self.replaced += 1;
            self.heap_freed_sampled += old.usable as f64;
        }
    }

    /// A sampled block was freed. Unknown addresses are ignored (the kernel only reports
    /// frees of blocks it sampled, but a block sampled before a restart of userspace
    /// tracking would be unknown here).
    pub fn free(&mut self, addr: u64, time_ns: u64) {
        if let Some(b) = self.blocks.remove(&addr) {
            self.before(time_ns);
            self.frees += 1;
            self.freed_bytes += b.weight as f64;
            self.heap_freed_sampled += b.usable as f64;
            *self.freed_by_stack.entry(b.stack).or_default() += b.weight as f64;
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

    /// Live growth by stack with the age of its bytes, observed from `start_ns` (when
    /// the process was first followed) to `now_ns`.
    pub fn growth_with_age(
        &self,
        start_ns: u64,
        now_ns: u64,
    ) -> BTreeMap<Option<StackId>, LiveGrowth> {
        let span = now_ns.saturating_sub(start_ns).max(1) as f64;
        let mut out: BTreeMap<Option<StackId>, LiveGrowth> = BTreeMap::new();
        for b in self.blocks.values() {
            let age = now_ns.saturating_sub(b.time_ns) as f64;
            let g = out.entry(b.stack).or_default();
            let w = b.weight as f64;
            g.bytes += w;
            g.objects += b.objects();
            g.variance += w * (w - b.size as f64).max(0.0);
            let bucket = AGE_BUCKETS
                .iter()
                .position(|&edge| age < edge * span)
                .unwrap_or(AGE_BUCKETS.len() - 1);
            g.by_age[bucket] += w;
            g.oldest_secs = g.oldest_secs.max(age / 1e9);
        }
        for (stack, g) in &mut out {
            g.freed = self.freed_by_stack.get(stack).copied().unwrap_or(0.0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(stack: StackId, size: u64, weight: u64, time_ns: u64) -> LiveBlock {
        LiveBlock {
            stack: Some(stack),
            size,
            usable: size,
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
        live.free(0x10, 0);
        live.free(0x999, 0); // never sampled: ignored
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

    /// Check that ages fall in the right buckets: a leak's spread, a cache's young.
    #[test]
    fn ages_by_share_of_the_span() {
        let mut live = LiveAllocations::new();
        let s = 1_000_000_000u64;
        // Observed from 0 to 8 s: a block per second on stack 1 (a leak) ...
        for i in 0..8 {
            live.alloc(i, block(1, 64, 100, i * s + s / 2));
        }
        // ... and stack 2's blocks all from the last half second (a cache).
        live.alloc(100, block(2, 64, 100, 7 * s + s / 2));
        live.alloc(101, block(2, 64, 100, 7 * s + s / 4));
        let g = live.growth_with_age(0, 8 * s);
        let leak = g[&Some(1)];
        assert_eq!(leak.by_age, [100.0, 100.0, 200.0, 400.0]);
        assert_eq!(leak.old_share(), 0.5);
        assert_eq!(leak.oldest_secs, 7.5);
        assert_eq!(leak.variance, 8.0 * 100.0 * 36.0);
        let cache = g[&Some(2)];
        assert_eq!(cache.by_age, [200.0, 0.0, 0.0, 0.0]);
        assert_eq!(cache.old_share(), 0.0);
        // Freed blocks count per stack.
        live.free(100, 0);
        let g = live.growth_with_age(0, 8 * s);
        assert_eq!((g[&Some(2)].freed, g[&Some(1)].freed), (100.0, 0.0));
    }

    /// Check that the net totals stop at the cut: later events wait for the next one.
    #[test]
    fn net_totals_stop_at_the_cut() {
        let mut live = LiveAllocations::new();
        live.alloc(1, block(1, 64, 100, 10));
        live.cut(15);
        live.alloc(2, block(1, 64, 100, 14));
        live.alloc(3, block(1, 64, 100, 20));
        live.free(1, 21);
        let t = live.net_totals();
        assert_eq!((t.allocated, t.freed_sampled), (200.0, 0.0));
        live.cut(30);
        let t = live.net_totals();
        assert_eq!((t.allocated, t.freed_sampled), (300.0, 64.0));
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
