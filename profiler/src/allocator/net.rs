//! Net growth of a process's live heap bytes since it was first followed: everything
//! allocated since, less everything freed since, including blocks that were allocated
//! before the probes attached.
//!
//! Sampled blocks are followed from allocation to free; every other free is sized in the
//! kernel from the allocator's header (`FreeFlow`). With `u` a block's header size and
//! `p` its sampling probability:
//!
//! `net = Σ_sampled u/p − Σ_sampled and freed u − Σ_unseen frees u`
//!
//! The first term estimates the bytes of every allocation (Horvitz–Thompson); the
//! second is exact; the third is every free of a block not sampled live, i.e. blocks
//! from before the probes *and* unsampled blocks from since (which the first term
//! counted). The kernel sums the third exactly (it reads the header of every free
//! anyway); it also byte-samples those frees like allocations, and that estimate is
//! kept as `unseen_freed_sampled` to check the sampler against the exact sum. Only the
//! first term is sampled: the variance is `Σ (1 − p) (u/p)²` over the sampled
//! allocations, and `sigma` is its square root.
use profiler_common::FreeFlow;
use serde::Serialize;

use super::{HeapLayout, LiveAllocations};

/// Share of frees that may go unsized before the net estimate is withheld.
pub const MAX_UNSIZED_SHARE: f64 = 0.01;

/// The net growth estimate and what it rests on, in header bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct NetGrowth {
    /// Estimated net growth of live heap bytes.
    pub bytes: f64,
    /// Its standard error from sampling.
    pub sigma: f64,
    /// Estimated bytes allocated and freed (all blocks).
    pub allocated: f64,
    pub freed: f64,
    /// Frees of blocks not sampled live, and how many of them could not be sized.
    pub unseen_frees: u64,
    pub unsized_frees: u64,
    /// Their exact bytes, and the byte sampler's estimate of them with its standard
    /// error (a check of the sampler: the two agree within a few `sigma`).
    pub unseen_freed: f64,
    pub unseen_freed_sampled: f64,
    pub unseen_freed_sampled_sigma: f64,
}

/// Why there is no net estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoNetGrowth {
    /// The allocator keeps no size next to a block (jemalloc, tcmalloc, mimalloc).
    NoHeader,
    /// Too many headers did not check out.
    Unsized { unsized_frees: u64, frees: u64 },
}

impl NoNetGrowth {
    pub fn describe(&self) -> String {
        match self {
            Self::NoHeader => "frees of blocks allocated before the capture cannot be sized \
                               with this allocator (no size next to a block); heap and \
                               resident growth bound the claim"
                .to_string(),
            Self::Unsized {
                unsized_frees,
                frees,
            } => format!(
                "{unsized_frees} of {frees} frees of blocks allocated before the capture \
                 could not be sized; heap and resident growth bound the claim"
            ),
        }
    }
}

/// The net growth of one process, or why it cannot be told.
pub fn net_growth(
    live: &LiveAllocations,
    flow: Option<&FreeFlow>,
    layout: HeapLayout,
) -> Result<NetGrowth, NoNetGrowth> {
    if layout == HeapLayout::None {
        return Err(NoNetGrowth::NoHeader);
    }
    let flow = flow.copied().unwrap_or_default();
    if flow.unsized_frees as f64 > MAX_UNSIZED_SHARE * flow.frees as f64 {
        return Err(NoNetGrowth::Unsized {
            unsized_frees: flow.unsized_frees,
            frees: flow.frees,
        });
    }
    let totals = live.net_totals();
    let freed = totals.freed_sampled + flow.sized_bytes as f64;
    Ok(NetGrowth {
        bytes: totals.allocated - freed,
        sigma: totals.allocated_variance.sqrt(),
        allocated: totals.allocated,
        freed,
        unseen_frees: flow.frees,
        unsized_frees: flow.unsized_frees,
        unseen_freed: flow.sized_bytes as f64,
        unseen_freed_sampled: flow.weight as f64,
        unseen_freed_sampled_sigma: (flow.variance as f64).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::live::LiveBlock;

    fn block(size: u64, weight: u64) -> LiveBlock {
        LiveBlock {
            stack: Some(1),
            size,
            usable: size + 8,
            weight,
            time_ns: 0,
        }
    }

    /// Check the estimate on a cache that replaces blocks from before the capture: the
    /// new blocks are live, the old ones' frees come from the kernel, the net is ~0.
    #[test]
    fn cache_replacing_old_blocks_nets_to_zero() {
        let mut live = LiveAllocations::new();
        // 4 sampled 2 KiB blocks standing for 64 KiB each (p = 1/32), all still live.
        for a in 0..4 {
            live.alloc(a, block(2040, 65536));
        }
        // The kernel sampled 4 unseen frees of 2048-byte blocks.
        let flow = FreeFlow {
            frees: 128,
            sampled: 4,
            weight: 4 * 65536,
            variance: 4 * 65536 * (65536 - 2048),
            sized_bytes: 128 * 2048,
            ..Default::default()
        };
        let n = net_growth(&live, Some(&flow), HeapLayout::Glibc).unwrap();
        // Allocations are counted in header bytes too (2048 for a 2040-byte request).
        let allocated = 4.0 * 65536.0 * 2048.0 / 2040.0;
        assert!((n.allocated - allocated).abs() < 1.0, "{n:?}");
        assert!((n.bytes - (allocated - 4.0 * 65536.0)).abs() < 1.0, "{n:?}");
        let var = 4.0 * (1.0 - 2040.0 / 65536.0) * (allocated / 4.0).powi(2);
        assert!((n.sigma - var.sqrt()).abs() < 1.0, "{n:?}");
        assert_eq!(n.unseen_freed, n.unseen_freed_sampled);
    }

    /// Check that sampled blocks freed count exactly and big blocks carry no variance.
    #[test]
    fn freed_samples_are_exact() {
        let mut live = LiveAllocations::new();
        live.alloc(1, block(1 << 20, 1 << 20));
        live.alloc(2, block(1 << 20, 1 << 20));
        live.free(1, 0);
        let n = net_growth(&live, None, HeapLayout::MuslMallocng).unwrap();
        assert_eq!(n.bytes, (1 << 20) as f64 + 8.0);
        assert_eq!(n.sigma, 0.0);
    }

    /// Check that no header, or too many unsized frees, withholds the estimate.
    #[test]
    fn withheld_without_sizes() {
        let live = LiveAllocations::new();
        assert_eq!(
            net_growth(&live, None, HeapLayout::None),
            Err(NoNetGrowth::NoHeader)
        );
        let flow = FreeFlow {
            frees: 100,
            unsized_frees: 5,
            ..Default::default()
        };
        assert!(matches!(
            net_growth(&live, Some(&flow), HeapLayout::Glibc),
            Err(NoNetGrowth::Unsized { .. })
        ));
    }
}
