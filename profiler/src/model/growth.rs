//! The memory verdict's decision as plain values: what live allocations do (leak,
//! growth that stopped, periodic, balanced), what the confidence rests on, and the trend
//! of a series of levels. Decided by [`crate::analyze::memory`] (`growth`, `trend`),
//! worded by [`crate::render`].
use serde::Serialize;

use crate::allocator::net::{NetGrowth, NoNetGrowth};

/// One level: seconds since the first follow, bytes, and the level's sampling error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    pub secs: f64,
    pub bytes: f64,
    pub sigma: f64,
}

/// What a series looks like.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "shape")]
pub enum Shape {
    TooShort,
    Flat,
    /// Growth that keeps going.
    Steady,
    /// Grew by `grew` bytes, then stayed level from `level_since_secs` on.
    Stopped {
        grew: f64,
        level_since_secs: f64,
    },
    /// Grew and released `releases` times, between levels `amplitude` bytes apart.
    Periodic {
        releases: usize,
        amplitude: f64,
    },
    /// Grows, but clearly slower in the later half than in the earlier (a cache
    /// filling up, not yet level): not steady, not stopped yet.
    Slowing,
    Shrinking,
}

impl Shape {
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooShort => "too few intervals",
            Self::Flat => "flat",
            Self::Steady => "steady growth",
            Self::Stopped { .. } => "growth that stopped",
            Self::Periodic { .. } => "periodic growth and release",
            Self::Slowing => "growth that slows down",
            Self::Shrinking => "shrinking",
        }
    }
}

/// A fitted series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub shape: Shape,
    /// Least-squares slope (bytes per second) and its standard error.
    pub slope: f64,
    pub slope_se: f64,
    /// One-sided confidence that the slope is positive.
    pub confidence: f64,
    pub points: usize,
    /// Seconds from the first point to the last.
    pub span_secs: f64,
}

/// What the live allocations do.
#[derive(Clone, Debug, PartialEq)]
pub enum Growth {
    /// Live allocations grow and the rest of the evidence agrees. `stacks` index
    /// `GrowthEvidence::stacks`.
    Leak { stacks: Vec<usize>, bytes: f64 },
    /// The largest stack grew and then stopped (daemon).
    Stopped { stack: usize, grew: f64 },
    /// A stack grows and releases, by `amplitude` bytes (daemon).
    Periodic {
        stack: usize,
        releases: usize,
        amplitude: f64,
    },
    /// Growth is seen but the daemon has too few intervals for a trend.
    Pending { bytes: f64 },
    /// Nothing grows beyond noise: live blocks are turnover, frees balance them.
    Balanced,
}

/// Which measure contradicts a growth claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contradiction {
    /// The net growth (frees of older blocks counted) stays below it.
    Net,
    /// The mappings and resident memory did not grow with it.
    Mappings,
}

/// What the confidence rests on.
#[derive(Clone, Debug, PartialEq)]
pub enum Basis {
    /// One window: stacks whose blocks span the observation hold `bytes ± sigma`;
    /// `probability` that they hold more than [`MIN_GROWTH_BYTES`](crate::analyze::memory::growth::MIN_GROWTH_BYTES).
    Persistent {
        bytes: f64,
        sigma: f64,
        probability: f64,
        oldest_secs: f64,
    },
    /// The daemon: the trend of the stack named (steady, stopped or periodic).
    Trend(Trend),
    /// The daemon: the net grew since the first follow, but the exact committed heap and
    /// anonymous mappings stayed level over the intervals (this trend of theirs).
    CommittedLevel(Trend),
    /// A claim of `claim` bytes (of `live` live) that `by` contradicts.
    Contradicted {
        claim: f64,
        live: f64,
        by: Contradiction,
    },
    /// The daemon has `points` of the [`MIN_POINTS`](crate::analyze::memory::trend::MIN_POINTS) intervals a trend needs.
    TooFewIntervals { points: usize },
    /// The net grew beyond its error, but every stack frees its blocks too.
    NetOnly,
    /// Nothing persists; when every live block is young, the oldest's age.
    Bound { young_secs: Option<f64> },
}

/// The decision and the numbers behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub growth: Growth,
    pub basis: Basis,
    /// The evidence the line cites.
    pub net: Option<NetGrowth>,
    pub net_missing: Option<NoNetGrowth>,
    pub heap_growth: f64,
    pub direct_growth: f64,
    pub resident_delta: Option<i64>,
    pub span_secs: f64,
}
