//! Time to OOM: from a process's resident memory at the end of each daemon interval and
//! the memory limit it runs into, when the limit is reached at the rate it grows.
//!
//! Only a steady trend is extrapolated ([`trend::fit`] says [`Shape::Steady`]: the slope
//! is positive with 99 % confidence and the growth goes on to the last interval); a
//! cache filling up, a periodic batch, noise or a flat line say nothing. The estimate
//! carries the rate's two-sigma bounds, so the range says how sure it is. Beyond
//! [`HORIZON_SECS`] the forecast says nothing either: a month of extrapolation is not
//! an incident.
use super::trend::{self, Point, Shape};
use crate::{
    model::forecast::{OomForecast, Outlook},
    targets::memory_limit::MemoryLimit,
};

/// Forecasts further out than this (30 days) are not made.
pub const HORIZON_SECS: f64 = 30.0 * 86_400.0;

/// The forecast for resident levels `points` (time order, exact: their sigma is
/// ignored) under `limit`; None when the growth is not steady enough to extrapolate.
pub fn forecast(points: &[Point], limit: &MemoryLimit) -> Option<OomForecast> {
    let exact: Vec<Point> = points.iter().map(|p| Point { sigma: 0.0, ..*p }).collect();
    let fit = trend::fit(&exact);
    if fit.shape != Shape::Steady || fit.slope <= 0.0 {
        return None;
    }
    let fastest = fit.slope + 2.0 * fit.slope_se;
    let slowest = fit.slope - 2.0 * fit.slope_se;
    // The rate's lower bound must stay positive, or "when" has no upper end.
    if slowest <= 0.0 {
        return None;
    }
    let outlook = if limit.used_bytes >= limit.limit_bytes {
        Outlook::AtLimit
    } else {
        let headroom = (limit.limit_bytes - limit.used_bytes) as f64;
        let secs = headroom / fit.slope;
        if secs > HORIZON_SECS {
            return None;
        }
        Outlook::Reaches {
            secs,
            earliest_secs: headroom / fastest,
            latest_secs: headroom / slowest,
        }
    };
    Some(OomForecast {
        limit: limit.clone(),
        rate: fit.slope,
        rate_se: fit.slope_se,
        span_secs: fit.span_secs,
        points: fit.points,
        outlook,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::memory_limit::LimitSource;

    const MIB: f64 = 1024.0 * 1024.0;

    fn limit(limit_mib: u64, used_mib: u64) -> MemoryLimit {
        MemoryLimit {
            limit_bytes: limit_mib << 20,
            used_bytes: used_mib << 20,
            source: LimitSource::CgroupV2 {
                cgroup: "/test".into(),
            },
        }
    }

    /// Levels in MiB, one every `every` seconds.
    fn levels(mib: &[f64], every: f64) -> Vec<Point> {
        mib.iter()
            .enumerate()
            .map(|(i, &m)| Point {
                secs: every * i as f64,
                bytes: m * MIB,
                sigma: 0.0,
            })
            .collect()
    }

    /// Check a steady leak of 41 MiB/h over 6 h, 300 MiB charged of 512 MiB: about
    /// 5 h 10 min, within a range that holds the estimate.
    #[test]
    fn steady_growth_reaches_the_limit() {
        let mib: Vec<f64> = (0..13)
            .map(|i| 100.0 + 41.0 * 0.5 * i as f64 + if i % 2 == 0 { 0.4 } else { -0.4 })
            .collect();
        let f = forecast(&levels(&mib, 1800.0), &limit(512, 300)).unwrap();
        assert!((f.rate * 3600.0 / MIB - 41.0).abs() < 1.0, "{f:?}");
        let Outlook::Reaches {
            secs,
            earliest_secs,
            latest_secs,
        } = f.outlook
        else {
            panic!("{f:?}")
        };
        let expected = 212.0 / 41.0 * 3600.0;
        assert!((secs - expected).abs() < 0.05 * expected, "{secs}");
        assert!(earliest_secs < secs && secs < latest_secs);
        assert!(latest_secs - earliest_secs < 0.2 * secs, "tight: {f:?}");
        assert_eq!(f.points, 13);
        assert_eq!(f.span_secs, 6.0 * 3600.0);
    }

    /// Check that noise around a level, even with an upward drift smaller than the
    /// noise, is not extrapolated.
    #[test]
    fn noisy_levels_say_nothing() {
        let mib = [
            200.0, 230.0, 190.0, 240.0, 185.0, 235.0, 205.0, 195.0, 245.0, 210.0,
        ];
        assert_eq!(forecast(&levels(&mib, 60.0), &limit(512, 300)), None);
    }

    /// Check that a flat process and a shrinking one say nothing.
    #[test]
    fn flat_and_shrinking_say_nothing() {
        assert_eq!(
            forecast(&levels(&[200.0; 10], 60.0), &limit(512, 300)),
            None
        );
        let shrinking: Vec<f64> = (0..10).map(|i| 300.0 - 10.0 * i as f64).collect();
        assert_eq!(forecast(&levels(&shrinking, 60.0), &limit(512, 300)), None);
    }

    /// Check that a cgroup already charged to its limit while the process keeps
    /// growing is said to be at its limit, with no time.
    #[test]
    fn already_over_the_limit() {
        let mib: Vec<f64> = (0..8).map(|i| 400.0 + 5.0 * i as f64).collect();
        let f = forecast(&levels(&mib, 60.0), &limit(512, 520)).unwrap();
        assert_eq!(f.outlook, Outlook::AtLimit);
    }

    /// Check that too few intervals, and a forecast beyond the horizon, say nothing.
    #[test]
    fn too_short_or_too_far() {
        assert_eq!(
            forecast(&levels(&[1.0, 2.0, 3.0, 4.0], 60.0), &limit(512, 300)),
            None
        );
        // 1 MiB a day with 200 MiB to go: 200 days.
        let slow: Vec<f64> = (0..10).map(|i| 300.0 + i as f64 / 24.0).collect();
        assert_eq!(forecast(&levels(&slow, 3600.0), &limit(512, 312)), None);
    }
}
