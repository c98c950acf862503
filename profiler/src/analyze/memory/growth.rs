//! Whether live allocations really grow: the part of the memory verdict that decides
//! LEAK, and the numbers its one line of confidence states (worded by
//! `render::growth`).
//!
//! Blocks allocated since the process was first followed and still live are not growth
//! by themselves: a full cache holds exactly such blocks while it frees as many older
//! ones. Three checks stand between them and a LEAK:
//! - **age** (one window): a leak's blocks are spread over the whole observation, a
//!   cache's are all younger than its turnover time. Only stacks with at least
//!   [`PERSISTENT_SHARE`] of their live bytes older than half the span are candidates.
//! - **trend** (daemon): a stack's live bytes, interval after interval, must grow
//!   steadily (`trend::Shape::Steady`): growth that stopped is a warm-up or a cache
//!   filling, growth that is released is batches.
//! - **agreement**: the candidates' growth, less two standard errors, may not exceed
//!   the process's net growth (allocations less all frees, older blocks' included)
//!   plus two of its standard errors, nor what the mappings (heap and direct) and
//!   resident memory show plus [`PHYSICAL_SLACK_BYTES`] (memory the allocator already held can absorb
//!   a little growth unseen).
//!
//! Confidence: with `G` the candidates' estimated growth and `σ` its sampling standard
//! error (`sqrt(Σ w (w − size))` over their samples), a one-window LEAK states
//! `Φ((G − MIN_GROWTH)/σ)`, the normal-approximation probability that they hold more
//! than [`MIN_GROWTH_BYTES`]; a daemon LEAK states the Student-t probability that the
//! fitted slope is positive (`trend`). NO GROWTH states the 97.7 % upper bound of the
//! net growth, `net + 2σ`, next to the exact heap and resident numbers.
use crate::{
    allocator::net::{NetGrowth, NoNetGrowth},
    analyze::memory::trend::{Shape, Trend, MIN_POINTS, STEADY_CONFIDENCE},
};

/// Growth below this is noise for a verdict.
pub const MIN_GROWTH_BYTES: f64 = 1024.0 * 1024.0;
/// Share of a stack's live bytes older than half the span that makes it a candidate.
pub const PERSISTENT_SHARE: f64 = 0.25;
/// A stack that freed less than this share of the bytes it allocated keeps them.
pub const FREED_SHARE: f64 = 0.25;
/// Standard errors in the bounds a claim must stay within.
pub const Z: f64 = 2.0;

/// Standard errors the net must clear when no stack keeps its blocks: one aggregate
/// estimate with nothing else agreeing needs more than `Z` (Node's Buffer churn gave a
/// net of +13.2 MiB ± 11.9 MiB (2σ) with heap +0.5 MiB and resident +0.2 MiB).
const NET_ONLY_Z: f64 = 3.0;

/// The least share of a claimed growth the net growth must show for the claim to
/// stand (see `GrowthEvidence::contradiction`).
const NET_SHARE_OF_CLAIM: f64 = 0.5;
/// Growth the allocator can absorb from memory it already held, unseen by the heap and
/// resident numbers.
pub const PHYSICAL_SLACK_BYTES: f64 = 1024.0 * 1024.0;

/// One stack's live allocations since the process was first followed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackEvidence {
    pub frames: Vec<String>,
    pub bytes: f64,
    /// Sampling variance of `bytes`.
    pub variance: f64,
    /// Bytes older than half the observed span.
    pub old_bytes: f64,
    pub oldest_secs: f64,
    /// Estimated bytes of its blocks freed since the follow started.
    pub freed: f64,
    /// Its live bytes over the daemon's intervals, when there are some.
    pub trend: Option<Trend>,
}

impl StackEvidence {
    /// Whether its live blocks may be growth that stays: few of its blocks are freed
    /// (less than [`FREED_SHARE`] of what it allocated), or a quarter of its live bytes
    /// are older than half the span and fewer than half of its blocks are freed. A
    /// cache or a batch frees its blocks; a leak does not.
    pub fn persists(&self) -> bool {
        if self.bytes <= 0.0 {
            return false;
        }
        let freed_share = self.freed / (self.freed + self.bytes);
        freed_share < FREED_SHARE
            || (self.old_bytes >= PERSISTENT_SHARE * self.bytes && freed_share < 0.5)
    }
}

/// Everything the growth decision looks at.
#[derive(Clone, Debug, Default)]
pub struct GrowthEvidence {
    /// Largest first.
    pub stacks: Vec<StackEvidence>,
    pub net: Option<NetGrowth>,
    pub net_missing: Option<NoNetGrowth>,
    /// Growth of the allocator's heap (brk and its own mappings), exact.
    pub heap_growth: f64,
    /// Growth of anonymous mappings made outside the allocator, exact: an allocator
    /// whose own frames are missing from mapping stacks (musl without CFI) shows its
    /// heap here.
    pub direct_growth: f64,
    /// Net growth of the committed heap and anonymous mappings from the ledger's totals
    /// by kind, which count every mapping, sampled stack or not: the mapping side of the
    /// bound is at least this.
    pub committed_growth: f64,
    /// Resident bytes since the process was first followed, exact.
    pub resident_delta: Option<i64>,
    /// The daemon: the committed heap and anonymous mappings (exact, every mapping
    /// counted) at the end of each interval, fitted.
    pub committed_trend: Option<Trend>,
    /// Seconds observed (since the process was first followed).
    pub span_secs: f64,
    /// A daemon: trends decide, levels do not.
    pub daemon: bool,
}

pub use crate::model::growth::{Assessment, Basis, Contradiction, Growth};

impl GrowthEvidence {
    /// Estimated bytes allocated per second (the churn), when the net is known.
    pub fn churn_per_sec(&self) -> Option<f64> {
        let net = self.net?;
        (self.span_secs > 0.0).then(|| net.allocated / self.span_secs)
    }

    /// The most growth the exact numbers allow: mappings or resident, plus the slack.
    fn physical_bound(&self) -> f64 {
        self.mapped_growth().max(self.resident_growth()) + PHYSICAL_SLACK_BYTES
    }

    /// Growth of the heap and anonymous mappings, exact. Heap and direct growth come
    /// from mapping stacks, which leave out the bytes of mappings no stack was sampled
    /// for; the ledger's totals by kind count them.
    fn mapped_growth(&self) -> f64 {
        (self.heap_growth.max(0.0) + self.direct_growth.max(0.0)).max(self.committed_growth)
    }

    /// Growth of resident memory, exact (0 when not read or shrunk).
    fn resident_growth(&self) -> f64 {
        self.resident_delta.unwrap_or(0).max(0) as f64
    }

    /// Whether a claim of `bytes ± sigma` fits the net and the exact numbers; if not,
    /// which measure contradicts it.
    fn contradiction(&self, bytes: f64, sigma: f64) -> Option<Contradiction> {
        let low = bytes - Z * sigma;
        // The net is the claim less the frees of blocks older than the window. A full
        // cache's older frees match its new blocks (net near zero); a leak sits beside
        // ordinary churn of older blocks (musl Node 22: a 100 MiB leak, net +98.6 MiB as
        // 1.4 MiB of older Buffers were collected). Only a net below half the claim
        // says the new blocks replace old ones.
        //
        // The net is an estimate, the mappings and resident memory are exact: when both
        // grew by at least the claim, the net cannot veto it (a slow leak beside a
        // churn of ~9 MiB/s: net -5.5 MiB ± 3.8 MiB (2σ) in one run, +4.2 MiB in the
        // next, while heap +512 KiB and resident +652 KiB showed the 0.45 MiB leaked).
        if self
            .net
            .is_some_and(|n| n.bytes + Z * n.sigma < NET_SHARE_OF_CLAIM * low)
            && !self.exact_growth_shows(low)
        {
            return Some(Contradiction::Net);
        }
        (low > self.physical_bound()).then_some(Contradiction::Mappings)
    }

    /// Whether the mappings and resident memory, both exact, each grew by `bytes`.
    fn exact_growth_shows(&self, bytes: f64) -> bool {
        bytes > 0.0 && self.mapped_growth() >= bytes && self.resident_growth() >= bytes
    }

    fn assessment(&self, growth: Growth, basis: Basis) -> Assessment {
        Assessment {
            growth,
            basis,
            net: self.net,
            net_missing: self.net_missing,
            heap_growth: self.heap_growth,
            direct_growth: self.direct_growth,
            resident_delta: self.resident_delta,
            span_secs: self.span_secs,
        }
    }

    fn contradicted(&self, claim: f64, by: Contradiction) -> Assessment {
        self.assessment(
            Growth::Balanced,
            Basis::Contradicted {
                claim,
                live: self.live(),
                by,
            },
        )
    }

    fn live(&self) -> f64 {
        self.stacks.iter().map(|s| s.bytes).sum()
    }
}

/// The normal distribution's CDF (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Decide.
pub fn assess(e: &GrowthEvidence) -> Assessment {
    let decided = if e.daemon {
        assess_trends(e)
            .or_else(|| committed_level(e))
            .or_else(|| net_growing(e))
    } else {
        assess_window(e).or_else(|| net_growing(e))
    };
    decided.unwrap_or_else(|| balanced(e))
}

/// The net grew beyond its error, the mappings agree, but no stack keeps its blocks
/// (they are freed too: a cache filling, a batch in flight): growth, not a leak.
fn net_growing(e: &GrowthEvidence) -> Option<Assessment> {
    let n = e.net?;
    if n.bytes - NET_ONLY_Z * n.sigma < MIN_GROWTH_BYTES
        || e.contradiction(n.bytes, n.sigma).is_some()
    {
        return None;
    }
    Some(e.assessment(Growth::Pending { bytes: n.bytes }, Basis::NetOnly))
}

/// The daemon: the net grew since the first follow and no stack's trend says how, but
/// the exact committed heap and anonymous mappings stayed level over the intervals: the
/// growth stopped (a cache that filled up). The sampled levels of a full cache wander
/// by their sampling error from one interval to the next (±3 MiB on 40 MiB at one
/// sample per 256 KiB) and can look like a slow rise for a few intervals; the mappings,
/// counted exactly, do not. While they still grow, or have too few intervals, the net
/// alone decides ([`net_growing`]).
fn committed_level(e: &GrowthEvidence) -> Option<Assessment> {
    let t = e.committed_trend?;
    let level = match t.shape {
        Shape::Stopped { .. } | Shape::Shrinking => true,
        // Not a rise the fit is sure of, and less than a verdict's worth over the span.
        Shape::Flat => t.slope * t.span_secs < MIN_GROWTH_BYTES,
        _ => false,
    };
    if !level || e.stacks.is_empty() {
        return None;
    }
    let Growth::Pending { bytes } = net_growing(e)?.growth else {
        return None;
    };
    Some(e.assessment(
        Growth::Stopped {
            stack: 0,
            grew: bytes,
        },
        Basis::CommittedLevel(t),
    ))
}

/// One window: stacks whose live bytes persist (by age), if the evidence agrees.
fn assess_window(e: &GrowthEvidence) -> Option<Assessment> {
    let candidates: Vec<usize> = e
        .stacks
        .iter()
        .enumerate()
        .filter(|(_, s)| s.persists())
        .map(|(i, _)| i)
        .collect();
    let bytes: f64 = candidates.iter().map(|&i| e.stacks[i].bytes).sum();
    let sigma = candidates
        .iter()
        .map(|&i| e.stacks[i].variance)
        .sum::<f64>()
        .sqrt();
    if bytes - Z * sigma < MIN_GROWTH_BYTES {
        return None;
    }
    if let Some(by) = e.contradiction(bytes, sigma) {
        return Some(e.contradicted(bytes, by));
    }
    let probability = if sigma > 0.0 {
        normal_cdf((bytes - MIN_GROWTH_BYTES) / sigma)
    } else {
        1.0
    };
    let oldest_secs = candidates
        .iter()
        .map(|&i| e.stacks[i].oldest_secs)
        .fold(0.0, f64::max);
    Some(e.assessment(
        Growth::Leak {
            stacks: candidates,
            bytes,
        },
        Basis::Persistent {
            bytes,
            sigma,
            probability,
            oldest_secs,
        },
    ))
}

/// The daemon: stacks whose live bytes keep growing.
fn assess_trends(e: &GrowthEvidence) -> Option<Assessment> {
    let steady: Vec<(usize, Trend)> = e
        .stacks
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.trend.map(|t| (i, t)))
        .filter(|(i, t)| {
            t.shape == Shape::Steady
                && t.confidence >= STEADY_CONFIDENCE
                && e.stacks[*i].bytes > 0.0
        })
        .collect();
    if let Some(&(_, top)) = steady.first() {
        // The growth over the fitted span is what the other evidence must allow.
        let grown: f64 = steady.iter().map(|(_, t)| t.slope * t.span_secs).sum();
        let sigma = steady
            .iter()
            .map(|(_, t)| (t.slope_se * t.span_secs).powi(2))
            .sum::<f64>()
            .sqrt();
        if let Some(by) = e.contradiction(grown, sigma) {
            return Some(e.contradicted(grown, by));
        }
        return Some(e.assessment(
            Growth::Leak {
                stacks: steady.iter().map(|(i, _)| *i).collect(),
                bytes: steady.iter().map(|(i, _)| e.stacks[*i].bytes).sum(),
            },
            Basis::Trend(top),
        ));
    }
    // Batches: any stack that rises and releases by more than the noise floor.
    let periodic = e.stacks.iter().enumerate().find_map(|(i, s)| {
        let t = s.trend?;
        match t.shape {
            Shape::Periodic {
                releases,
                amplitude,
            } if amplitude >= MIN_GROWTH_BYTES => Some((i, t, releases, amplitude)),
            _ => None,
        }
    });
    if let Some((i, t, releases, amplitude)) = periodic {
        return Some(e.assessment(
            Growth::Periodic {
                stack: i,
                releases,
                amplitude,
            },
            Basis::Trend(t),
        ));
    }
    // The largest stack's shape, when it says something.
    let (i, t) = e
        .stacks
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.trend.map(|t| (i, t)))?;
    match t.shape {
        Shape::Stopped { grew, .. } if grew >= MIN_GROWTH_BYTES => {
            // Since the follow started, a full cache's stack "grows" while its new
            // blocks replace the older ones: only growth the net and the mappings show
            // is a warm-up.
            let sigma = e.stacks[i].variance.sqrt();
            Some(match e.contradiction(grew, sigma) {
                Some(by) => e.contradicted(grew, by),
                None => e.assessment(Growth::Stopped { stack: i, grew }, Basis::Trend(t)),
            })
        }
        Shape::TooShort => {
            let window = assess_window(&GrowthEvidence {
                daemon: false,
                ..e.clone()
            })
            .or_else(|| net_growing(e))?;
            matches!(window.growth, Growth::Leak { .. } | Growth::Pending { .. }).then(|| {
                e.assessment(
                    Growth::Pending { bytes: e.live() },
                    Basis::TooFewIntervals { points: t.points },
                )
            })
        }
        _ => None,
    }
}

/// Nothing grows: the bound, and how young the live blocks are.
fn balanced(e: &GrowthEvidence) -> Assessment {
    let oldest = e
        .stacks
        .iter()
        .filter(|s| s.bytes > 0.0)
        .map(|s| s.oldest_secs)
        .fold(0.0, f64::max);
    let young_secs = (oldest > 0.0 && oldest < e.span_secs / 2.0).then_some(oldest);
    e.assessment(Growth::Balanced, Basis::Bound { young_secs })
}

/// Intervals a trend needs, for words.
pub const TREND_POINTS: usize = MIN_POINTS;

#[cfg(test)]
#[path = "growth_tests.rs"]
mod tests;
