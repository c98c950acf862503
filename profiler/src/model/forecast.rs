//! When a growing process reaches its memory limit at the rate it grows: decided by
//! [`crate::analyze::memory::oom`], worded by [`crate::render::oom`].
use serde::{Deserialize, Serialize};

use crate::targets::memory_limit::MemoryLimit;

/// A forecast from a steady growth trend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OomForecast {
    #[serde(flatten)]
    pub limit: MemoryLimit,
    /// Growth in bytes per second (least-squares slope of the resident memory across
    /// the intervals) and its standard error.
    pub rate: f64,
    pub rate_se: f64,
    /// Seconds and intervals the trend spans.
    pub span_secs: f64,
    pub points: usize,
    #[serde(flatten)]
    pub outlook: Outlook,
}

/// What the trend says about the limit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outlook")]
pub enum Outlook {
    /// Reaches the limit in about `secs` seconds; between `earliest_secs` and
    /// `latest_secs` at the rate's two-sigma bounds.
    Reaches {
        secs: f64,
        earliest_secs: f64,
        latest_secs: f64,
    },
    /// Already charged at (or over) the limit and still growing.
    AtLimit,
}
