//! The shape of a series of live-byte levels taken at the end of each daemon interval:
//! a level says little (a full cache reaches its level in one interval), a trend says
//! whether memory keeps growing.
//!
//! A least-squares line is fitted through the points; its slope's standard error is the
//! larger of what the residuals say and what the points' own sampling errors allow, and
//! the confidence that memory grows is the one-sided Student-t probability
//! `P(slope > 0)` with `n − 2` degrees of freedom. The shape then reads:
//! - **steady**: the slope is positive with at least [`STEADY_CONFIDENCE`] and the
//!   growth did not stop (a leak);
//! - **stopped**: it grew, then the last third or more of the span stayed level (a
//!   warm-up, a cache filling up);
//! - **periodic**: at least two releases of half the range (batches);
//! - **shrinking**, **flat**, or **too short** (fewer than [`MIN_POINTS`]).

/// Points needed before a trend is judged.
pub const MIN_POINTS: usize = 5;
/// Confidence that the slope is positive needed for steady growth.
pub const STEADY_CONFIDENCE: f64 = 0.99;

pub use crate::model::growth::{Point, Shape, Trend};

/// Least-squares line through `points`: slope, its standard error, and the residual
/// standard deviation.
fn least_squares(points: &[Point]) -> (f64, f64) {
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.secs).sum::<f64>() / n;
    let mb = points.iter().map(|p| p.bytes).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.secs - mt).powi(2)).sum();
    if sxx <= 0.0 {
        return (0.0, f64::INFINITY);
    }
    let sxy: f64 = points.iter().map(|p| (p.secs - mt) * (p.bytes - mb)).sum();
    let slope = sxy / sxx;
    let intercept = mb - slope * mt;
    let rss: f64 = points
        .iter()
        .map(|p| (p.bytes - intercept - slope * p.secs).powi(2))
        .sum();
    let residual_var = if points.len() > 2 {
        rss / (n - 2.0) / sxx
    } else {
        f64::INFINITY
    };
    // Independent sampling errors of the points alone would give this much.
    let sampling_var: f64 = points
        .iter()
        .map(|p| (p.secs - mt).powi(2) * p.sigma.powi(2))
        .sum::<f64>()
        / sxx.powi(2);
    (slope, residual_var.max(sampling_var).sqrt())
}

/// Fit and classify a series (points in time order).
pub fn fit(points: &[Point]) -> Trend {
    let n = points.len();
    let span_secs = match (points.first(), points.last()) {
        (Some(a), Some(b)) => b.secs - a.secs,
        _ => 0.0,
    };
    let too_short = Trend {
        shape: Shape::TooShort,
        slope: 0.0,
        slope_se: 0.0,
        confidence: 0.5,
        points: n,
        span_secs,
    };
    if n < MIN_POINTS {
        return too_short;
    }
    let (slope, se) = least_squares(points);
    let confidence = if se == 0.0 {
        if slope > 0.0 {
            1.0
        } else if slope < 0.0 {
            0.0
        } else {
            0.5
        }
    } else {
        student_t_cdf(slope / se, (n - 2) as f64)
    };
    let trend = |shape| Trend {
        shape,
        slope,
        slope_se: se,
        confidence,
        ..too_short
    };
    let releases = releases(points);
    if releases >= 2 {
        let max = points.iter().map(|p| p.bytes).fold(f64::MIN, f64::max);
        let min = points.iter().map(|p| p.bytes).fold(f64::MAX, f64::min);
        return trend(Shape::Periodic {
            releases,
            amplitude: max - min,
        });
    }
    if confidence >= STEADY_CONFIDENCE || grew_significantly(points) {
        if let Some(shape) = stopped(points) {
            return trend(shape);
        }
        if confidence >= STEADY_CONFIDENCE {
            // Levels without sampling errors of their own (exact, or a stack that keeps
            // its blocks: each level holds the earlier samples) rise by Poisson steps
            // whose rate varies: only whether they go on is asked of them.
            let independent = points.iter().any(|p| p.sigma > 0.0);
            if (independent && slowing(points)) || !keeps_going(points) {
                return trend(Shape::Slowing);
            }
            return trend(Shape::Steady);
        }
    }
    if confidence <= 1.0 - STEADY_CONFIDENCE {
        return trend(Shape::Shrinking);
    }
    trend(Shape::Flat)
}

/// A typical sampling error of the points (root mean square).
fn typical_sigma(points: &[Point]) -> f64 {
    (points.iter().map(|p| p.sigma.powi(2)).sum::<f64>() / points.len().max(1) as f64).sqrt()
}

/// The last level exceeds the first by more than three sampling errors.
fn grew_significantly(points: &[Point]) -> bool {
    match (points.first(), points.last()) {
        (Some(a), Some(b)) => {
            b.bytes - a.bytes > 3.0 * (a.sigma.powi(2) + b.sigma.powi(2)).sqrt().max(1.0)
        }
        _ => false,
    }
}

/// Drops of at least half the series' range (and of three sampling errors) from the
/// highest level since the previous drop.
fn releases(points: &[Point]) -> usize {
    let max = points.iter().map(|p| p.bytes).fold(f64::MIN, f64::max);
    let min = points.iter().map(|p| p.bytes).fold(f64::MAX, f64::min);
    let drop = (0.5 * (max - min)).max(3.0 * typical_sigma(points));
    if drop <= 0.0 {
        return 0;
    }
    let mut peak = f64::MIN;
    let mut count = 0;
    for p in points {
        if p.bytes < peak - drop {
            count += 1;
            peak = p.bytes;
        } else {
            peak = peak.max(p.bytes);
        }
    }
    count
}

/// Growth that stopped: the tail that stays within tolerance of the final level spans
/// at least a third of the series (and three points), its own slope is not clearly
/// positive and is clearly below the rate of the rise before it (the rise's rate lies
/// above the tail slope's two-sigma bound), and, had that rate gone on over the tail,
/// it would have grown by more than three sampling errors.
fn stopped(points: &[Point]) -> Option<Shape> {
    let last = points.last()?;
    let first = points.first()?;
    let grew = last.bytes - first.bytes;
    if grew <= 0.0 {
        return None;
    }
    let sigma = typical_sigma(points);
    let tolerance = (0.1 * grew).max(2.0 * sigma);
    let mut start = points.len() - 1;
    while start > 0 && (points[start - 1].bytes - last.bytes).abs() <= tolerance {
        start -= 1;
    }
    let tail = &points[start..];
    let tail_span = last.secs - tail[0].secs;
    let span = last.secs - first.secs;
    if tail.len() < 3 || tail_span < span / 3.0 || start == 0 {
        return None;
    }
    let (tail_slope, tail_se) = least_squares(tail);
    let tail_confidence = if tail_se > 0.0 {
        student_t_cdf(tail_slope / tail_se, (tail.len() - 2).max(1) as f64)
    } else if tail_slope > 0.0 {
        1.0
    } else {
        0.5
    };
    // The growth rate before the level, carried over the level's span.
    let rise_rate = (tail[0].bytes - first.bytes) / (tail[0].secs - first.secs).max(1e-9);
    let expected = rise_rate * tail_span;
    if tail_confidence >= 0.95
        || expected < 3.0 * sigma.max(1.0)
        || tail_slope + 2.0 * tail_se >= rise_rate
    {
        return None;
    }
    Some(Shape::Stopped {
        grew,
        level_since_secs: tail[0].secs,
    })
}

/// The later points rise clearly slower than the earlier ones: the slope of the last
/// three (or half, if more) plus two of its standard errors stays below the slope of
/// the first three (or half). A leak's rate does not drop; a cache that fills up
/// decelerates before it levels off.
fn slowing(points: &[Point]) -> bool {
    if points.len() < 5 {
        return false;
    }
    let k = (points.len() / 2).max(3);
    let (early, _) = least_squares(&points[..k]);
    let (late, late_se) = least_squares(&points[points.len() - k..]);
    early > 0.0 && late + 2.0 * late_se < early
}

/// The last half of the points (at least three) still rises: its slope is positive
/// with a one-sided confidence of at least 90 %. Growth that is not shown to go on is
/// not called steady yet.
fn keeps_going(points: &[Point]) -> bool {
    let k = (points.len() / 2).max(3).min(points.len());
    let tail = &points[points.len() - k..];
    let (slope, se) = least_squares(tail);
    let confidence = if se > 0.0 {
        student_t_cdf(slope / se, (k - 2).max(1) as f64)
    } else if slope > 0.0 {
        1.0
    } else {
        0.0
    };
    confidence >= 0.9
}

/// Student's t cumulative distribution function.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    let x = df / (df + t * t);
    let tail = 0.5 * regularized_beta(x, df / 2.0, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularized incomplete beta function `I_x(a, b)` (continued fraction, Lentz).
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-12 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    /// Points every 3 s from `levels` (MiB) with a sampling error of `sigma` MiB.
    fn series(levels: &[f64], sigma: f64) -> Vec<Point> {
        levels
            .iter()
            .enumerate()
            .map(|(i, &l)| Point {
                secs: 3.0 * (i + 1) as f64,
                bytes: l * MIB,
                sigma: sigma * MIB,
            })
            .collect()
    }

    /// Check the t distribution against table values.
    #[test]
    fn student_t_matches_tables() {
        // t_{0.99, 8} = 2.896, t_{0.975, 3} = 3.182, t_{0.95, 30} = 1.697
        assert!((student_t_cdf(2.896, 8.0) - 0.99).abs() < 1e-3);
        assert!((student_t_cdf(3.182, 3.0) - 0.975).abs() < 1e-3);
        assert!((student_t_cdf(-1.697, 30.0) - 0.05).abs() < 1e-3);
        assert_eq!(student_t_cdf(0.0, 5.0), 0.5);
    }

    /// Check a full LRU cache recorded by the daemon: the first interval holds the
    /// whole cache, then the level stays within sampling noise: not growth.
    #[test]
    fn full_cache_is_flat() {
        let t = fit(&series(
            &[40.0, 41.5, 39.0, 40.5, 42.0, 38.5, 40.0, 41.0, 39.5, 40.5],
            1.6,
        ));
        assert_eq!(t.shape, Shape::Flat, "{t:?}");
        assert!(t.confidence < STEADY_CONFIDENCE);
    }

    /// Check a slow leak counted in 32 KiB samples beside nothing else: steady.
    #[test]
    fn slow_leak_is_steady() {
        let levels: Vec<f64> = [1, 3, 4, 6, 8, 9, 11, 12, 14, 16]
            .iter()
            .map(|&k| k as f64 * 32.0 / 1024.0)
            .collect();
        // A leak's levels share their samples (each level holds the earlier ones), so
        // their errors are not independent: its trend rests on the residuals (sigma 0,
        // as `series` passes it for a stack that keeps its blocks).
        let t = fit(&series(&levels, 0.0));
        assert_eq!(t.shape, Shape::Steady, "{t:?}");
        assert!(t.confidence > 0.999);
        // About 1 MiB a minute.
        assert!((t.slope * 60.0 / MIB - 1.0).abs() < 0.2, "{t:?}");
    }

    /// Check a cache that fills for 9 s and then stays full: growth that stopped.
    #[test]
    fn warm_up_then_full_stopped() {
        let t = fit(&series(
            &[12.0, 25.0, 38.0, 40.0, 39.5, 40.5, 40.0, 39.0, 40.5, 40.0],
            1.5,
        ));
        let Shape::Stopped {
            grew,
            level_since_secs,
        } = t.shape
        else {
            panic!("{t:?}")
        };
        assert!(grew > 20.0 * MIB);
        assert!(level_since_secs <= 12.0);
    }

    /// Check batches allocated and freed every few seconds: periodic.
    #[test]
    fn batches_are_periodic() {
        let t = fit(&series(
            &[0.5, 24.0, 0.3, 23.5, 24.5, 0.4, 24.0, 0.2, 23.8, 0.5],
            1.0,
        ));
        assert!(
            matches!(t.shape, Shape::Periodic { releases, amplitude } if releases >= 3 && amplitude > 20.0 * MIB),
            "{t:?}"
        );
    }

    /// Check a leak that keeps going next to a plateau-like start is not "stopped".
    #[test]
    fn growth_to_the_end_is_not_stopped() {
        let t = fit(&series(&[0.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0], 0.3));
        assert_eq!(t.shape, Shape::Steady, "{t:?}");
    }

    /// Check a slow leak counted in few samples, whose last levels repeat (no new sample
    /// in 6 s): its tail still rises as fast as before, so the growth did not stop.
    #[test]
    fn slow_leak_with_a_quiet_tail_is_not_stopped() {
        let kib = [
            64.0, 128.0, 192.0, 224.0, 288.0, 384.0, 416.0, 448.0, 448.0, 480.0,
        ];
        let points: Vec<Point> = kib
            .iter()
            .enumerate()
            .map(|(i, &k)| Point {
                secs: 3.5 + 3.0 * i as f64,
                bytes: k * 1024.0,
                // 32 KiB samples of 16 KiB blocks, kept: cumulative, no independent
                // error per level (see `slow_leak_is_steady`).
                sigma: 0.0,
            })
            .collect();
        let t = fit(&points);
        assert_eq!(t.shape, Shape::Steady, "{t:?}");
    }

    /// Check a cache filling up, seen before it levels off: it rises ever slower, so its
    /// growth is not steady (a leak's is).
    #[test]
    fn filling_cache_slows_down() {
        let t = fit(&series(&[14.0, 26.8, 32.8, 36.0, 39.8], 0.5));
        assert_eq!(t.shape, Shape::Slowing, "{t:?}");
        // A full cache sampled every 256 KiB: its level's noise (~3 MiB) hides whether
        // the last rise goes on.
        let t = fit(&series(&[18.25, 33.0, 34.75, 39.0, 43.5], 3.2));
        assert_eq!(t.shape, Shape::Slowing, "{t:?}");
        let t = fit(&series(&[2.0, 4.0, 6.1, 7.9, 10.0, 12.1], 0.5));
        assert_eq!(t.shape, Shape::Steady, "{t:?}");
    }

    /// Check short series and shrinking ones.
    #[test]
    fn too_short_and_shrinking() {
        assert_eq!(
            fit(&series(&[1.0, 2.0, 3.0, 4.0], 0.1)).shape,
            Shape::TooShort
        );
        let t = fit(&series(&[40.0, 36.0, 31.0, 27.0, 22.0, 18.0], 0.5));
        assert_eq!(t.shape, Shape::Shrinking, "{t:?}");
    }

    /// Check that exact points without noise still give a finite answer.
    #[test]
    fn exact_series() {
        let t = fit(&series(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.0));
        assert_eq!(t.shape, Shape::Steady);
        assert_eq!(t.confidence, 1.0);
        let t = fit(&series(&[3.0; 6], 0.0));
        assert_eq!(t.shape, Shape::Flat);
    }
}
