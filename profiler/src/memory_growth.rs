//! Whether live allocations really grow: the part of the memory verdict that decides
//! LEAK, and the one line of confidence it states.
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
use serde::Serialize;

use crate::{
    allocator::{
        net::{NetGrowth, NoNetGrowth},
        trend::{Shape, Trend, STEADY_CONFIDENCE},
    },
    units::human_bytes,
};

/// Growth below this is noise for a verdict.
pub const MIN_GROWTH_BYTES: f64 = 1024.0 * 1024.0;
/// Share of a stack's live bytes older than half the span that makes it a candidate.
pub const PERSISTENT_SHARE: f64 = 0.25;
/// Standard errors in the bounds a claim must stay within.
pub const Z: f64 = 2.0;
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
    /// Its live bytes over the daemon's intervals, when there are some.
    pub trend: Option<Trend>,
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
    /// Resident bytes since the process was first followed, exact.
    pub resident_delta: Option<i64>,
    /// Seconds observed (since the process was first followed).
    pub span_secs: f64,
    /// A daemon: trends decide, levels do not.
    pub daemon: bool,
}

/// What the live allocations do.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "growth")]
pub enum Growth {
    /// Live allocations grow and the rest of the evidence agrees. `stacks` index
    /// `GrowthEvidence::stacks`.
    Leak { stacks: Vec<usize>, bytes: f64 },
    /// The largest stack grew and then stopped (daemon).
    Stopped { stack: usize, grew: f64 },
    /// The largest stack grows and releases (daemon).
    Periodic { stack: usize, releases: usize },
    /// Growth is seen but the daemon has too few intervals for a trend.
    Pending { bytes: f64 },
    /// Nothing grows beyond noise: live blocks are turnover, frees balance them.
    Balanced,
}

/// The decision and its one line of confidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    pub growth: Growth,
    /// One line a human can check: the probability and the numbers behind it.
    pub confidence: String,
}

impl GrowthEvidence {
    /// Estimated bytes allocated per second (the churn), when the net is known.
    pub fn churn_per_sec(&self) -> Option<f64> {
        let net = self.net?;
        (self.span_secs > 0.0).then(|| net.allocated / self.span_secs)
    }

    /// The most growth the exact numbers allow: mappings or resident, plus the slack.
    fn physical_bound(&self) -> f64 {
        let resident = self.resident_delta.unwrap_or(0).max(0) as f64;
        let mapped = self.heap_growth.max(0.0) + self.direct_growth.max(0.0);
        mapped.max(resident) + PHYSICAL_SLACK_BYTES
    }

    /// The net's upper bound, when known.
    fn net_bound(&self) -> Option<f64> {
        self.net.map(|n| n.bytes + Z * n.sigma)
    }

    /// Whether a claim of `bytes ± sigma` fits the net and the exact numbers; if not,
    /// which measure contradicts it.
    fn contradiction(&self, bytes: f64, sigma: f64) -> Option<String> {
        let low = bytes - Z * sigma;
        if let Some(bound) = self.net_bound() {
            if low > bound {
                return Some(format!(
                    "frees of older blocks balance them: net growth {} (2σ)",
                    self.net_text()
                ));
            }
        }
        if low > self.physical_bound() {
            return Some(format!(
                "the mappings ({}) and resident memory ({}) did not grow with them",
                signed(self.heap_growth + self.direct_growth),
                self.resident_text()
            ));
        }
        None
    }

    fn net_text(&self) -> String {
        match self.net {
            Some(n) => format!("{} ± {}", signed(n.bytes), human_bytes(Z * n.sigma)),
            None => "not known".into(),
        }
    }

    fn resident_text(&self) -> String {
        self.resident_delta
            .map_or_else(|| "not read".into(), |d| signed(d as f64))
    }

    /// `net +4.1 MiB ± 18 MiB (2σ) · heap +0 B · resident +28 KiB`
    fn evidence_text(&self) -> String {
        let net = match (&self.net, &self.net_missing) {
            (Some(_), _) => format!("net {} (2σ)", self.net_text()),
            (None, Some(why)) => format!("net not known ({})", why.describe()),
            (None, None) => "net not known".into(),
        };
        format!(
            "{net} · allocator heap {} · resident {}",
            signed(self.heap_growth),
            self.resident_text()
        )
    }
}

/// `+1.5 MiB` / `-3.0 KiB`
pub fn signed(bytes: f64) -> String {
    format!(
        "{}{}",
        if bytes < 0.0 { "-" } else { "+" },
        human_bytes(bytes.abs())
    )
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

fn percent(p: f64) -> String {
    let p = (p * 100.0).clamp(0.0, 100.0);
    if p >= 99.9 {
        ">99.9 %".into()
    } else {
        format!("{p:.1} %")
    }
}

/// Decide.
pub fn assess(e: &GrowthEvidence) -> Assessment {
    if e.daemon {
        if let Some(a) = assess_trends(e) {
            return a;
        }
    } else if let Some(a) = assess_window(e) {
        return a;
    }
    balanced(e)
}

/// One window: stacks whose live bytes persist (by age), if the evidence agrees.
fn assess_window(e: &GrowthEvidence) -> Option<Assessment> {
    let candidates: Vec<usize> = e
        .stacks
        .iter()
        .enumerate()
        .filter(|(_, s)| s.bytes > 0.0 && s.old_bytes >= PERSISTENT_SHARE * s.bytes)
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
    if let Some(why) = e.contradiction(bytes, sigma) {
        let live: f64 = e.stacks.iter().map(|s| s.bytes).sum();
        return Some(Assessment {
            growth: Growth::Balanced,
            confidence: format!(
                "{} of blocks allocated since the process was first followed is still live, \
                 but {why}; {}",
                human_bytes(live),
                e.evidence_text()
            ),
        });
    }
    let confidence = if sigma > 0.0 {
        normal_cdf((bytes - MIN_GROWTH_BYTES) / sigma)
    } else {
        1.0
    };
    let oldest = candidates
        .iter()
        .map(|&i| e.stacks[i].oldest_secs)
        .fold(0.0, f64::max);
    Some(Assessment {
        growth: Growth::Leak {
            stacks: candidates,
            bytes,
        },
        confidence: format!(
            "confidence {}: {} ± {} (2σ) live in stacks whose blocks span the observation \
             (oldest {oldest:.1} s of {:.1} s); {}",
            percent(confidence),
            signed(bytes),
            human_bytes(Z * sigma),
            e.span_secs,
            e.evidence_text()
        ),
    })
}

/// The daemon: stacks whose live bytes keep growing.
fn assess_trends(e: &GrowthEvidence) -> Option<Assessment> {
    let steady: Vec<usize> = e
        .stacks
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.trend.is_some_and(|t| {
                t.shape == Shape::Steady && t.confidence >= STEADY_CONFIDENCE && s.bytes > 0.0
            })
        })
        .map(|(i, _)| i)
        .collect();
    let grown = |i: &usize| {
        let s = &e.stacks[*i];
        let t = s.trend.expect("steady stacks have a trend");
        (t.slope * t.span_secs, t.slope_se * t.span_secs)
    };
    let bytes: f64 = steady.iter().map(|i| grown(i).0).sum();
    let sigma = steady
        .iter()
        .map(|i| grown(i).1.powi(2))
        .sum::<f64>()
        .sqrt();
    if !steady.is_empty() {
        if let Some(why) = e.contradiction(bytes, sigma) {
            return Some(Assessment {
                growth: Growth::Balanced,
                confidence: format!(
                    "live blocks grew {} over the intervals, but {why}; {}",
                    signed(bytes),
                    e.evidence_text()
                ),
            });
        }
        let top = e.stacks[steady[0]]
            .trend
            .expect("steady stacks have a trend");
        return Some(Assessment {
            growth: Growth::Leak {
                stacks: steady,
                bytes,
            },
            confidence: format!(
                "confidence {}: live bytes grow {}; {}",
                percent(top.confidence),
                top.describe(),
                e.evidence_text()
            ),
        });
    }
    // The largest stack's shape, when it says something.
    let (i, s) = e
        .stacks
        .iter()
        .enumerate()
        .find(|(_, s)| s.trend.is_some())?;
    let t = s.trend?;
    match t.shape {
        Shape::Stopped { grew, .. } if grew >= MIN_GROWTH_BYTES => Some(Assessment {
            growth: Growth::Stopped { stack: i, grew },
            confidence: format!(
                "live bytes grew {} and then stayed level: {}; {}",
                signed(grew),
                t.describe(),
                e.evidence_text()
            ),
        }),
        Shape::Periodic { releases } => Some(Assessment {
            growth: Growth::Periodic { stack: i, releases },
            confidence: format!(
                "live bytes rose and were released {releases} times: {}; {}",
                t.describe(),
                e.evidence_text()
            ),
        }),
        Shape::TooShort => {
            let live: f64 = e.stacks.iter().map(|s| s.bytes).sum();
            let persistent = assess_window(&GrowthEvidence {
                daemon: false,
                ..e.clone()
            });
            match persistent {
                Some(Assessment {
                    growth: Growth::Leak { .. },
                    ..
                }) => Some(Assessment {
                    growth: Growth::Pending { bytes: live },
                    confidence: format!(
                        "a trend needs {} intervals, {} so far; {}",
                        crate::allocator::trend::MIN_POINTS,
                        t.points,
                        e.evidence_text()
                    ),
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Nothing grows: say how much churns and how sure the bound is.
fn balanced(e: &GrowthEvidence) -> Assessment {
    let young = e
        .stacks
        .iter()
        .filter(|s| s.bytes > 0.0)
        .map(|s| s.oldest_secs)
        .fold(0.0, f64::max);
    let confidence = match e.net {
        Some(n) => format!(
            "97.7 % bound: net growth below {} (net {}); allocator heap {} · resident {}{}",
            signed(n.bytes + Z * n.sigma),
            e.net_text(),
            signed(e.heap_growth),
            e.resident_text(),
            if young > 0.0 && young < e.span_secs / 2.0 {
                format!("; live blocks all younger than {young:.1} s (turnover)")
            } else {
                String::new()
            }
        ),
        None => format!(
            "{}; no stack's live blocks persist beyond sampling noise",
            e.evidence_text()
        ),
    };
    Assessment {
        growth: Growth::Balanced,
        confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::trend::{fit, Point};

    const MIB: f64 = 1024.0 * 1024.0;

    fn stack(name: &str, bytes: f64, samples: f64, old_share: f64) -> StackEvidence {
        let w = bytes / samples.max(1.0);
        StackEvidence {
            frames: vec!["main".into(), name.into()],
            bytes,
            variance: samples * w * w,
            old_bytes: old_share * bytes,
            oldest_secs: 6.0 * old_share * 2.0,
            trend: None,
        }
    }

    fn net(bytes: f64, sigma: f64, allocated: f64) -> Option<NetGrowth> {
        Some(NetGrowth {
            bytes,
            sigma,
            allocated,
            freed: allocated - bytes,
            ..Default::default()
        })
    }

    /// Check the full LRU cache in one window: 41 MiB live under cache_put,
    /// all younger than the turnover, heap +0, resident +28 KiB: no growth, with the
    /// churn and the bound stated.
    #[test]
    fn full_cache_window_is_balanced() {
        let e = GrowthEvidence {
            stacks: vec![StackEvidence {
                oldest_secs: 1.4,
                ..stack("cache_put", 41.0 * MIB, 41.0, 0.0)
            }],
            net: net(4.1 * MIB, 9.0 * MIB, 167.0 * MIB),
            heap_growth: 0.0,
            resident_delta: Some(28 << 10),
            span_secs: 6.0,
            ..Default::default()
        };
        let a = assess(&e);
        assert_eq!(a.growth, Growth::Balanced);
        assert!(a.confidence.contains("below +22.1 MiB"), "{}", a.confidence);
        assert!(
            a.confidence.contains("younger than 1.4 s"),
            "{}",
            a.confidence
        );
        assert!((e.churn_per_sec().unwrap() / MIB - 27.8).abs() < 0.1);
    }

    /// Check the glibc leak behind churn in one window: old blocks, heap and resident
    /// grow with them: LEAK with its confidence.
    #[test]
    fn leak_window_agrees_with_heap() {
        let e = GrowthEvidence {
            stacks: vec![
                stack("cache_insert_session", 16.0 * MIB, 16.0, 0.5),
                stack("handle_request_scratch", 1.0 * MIB, 1.0, 0.0),
            ],
            net: net(12.0 * MIB, 16.0 * MIB, 144.0 * MIB),
            heap_growth: 17.0 * MIB,
            resident_delta: Some(18 << 20),
            span_secs: 5.0,
            ..Default::default()
        };
        let a = assess(&e);
        assert_eq!(
            a.growth,
            Growth::Leak {
                stacks: vec![0],
                bytes: 16.0 * MIB
            }
        );
        assert!(
            a.confidence.starts_with("confidence >99.9 %"),
            "{}",
            a.confidence
        );
    }

    /// Check that a cache slower than the window (old-looking blocks) is not a leak
    /// when the net growth and the resident memory contradict it.
    #[test]
    fn slow_cache_contradicted_by_net_and_resident() {
        let e = GrowthEvidence {
            stacks: vec![stack("AllocateUninitialized", 255.0 * MIB, 255.0, 0.4)],
            net: net(-3.0 * MIB, 12.0 * MIB, 300.0 * MIB),
            heap_growth: 0.0,
            resident_delta: Some(-(4 << 20)),
            span_secs: 6.0,
            ..Default::default()
        };
        let a = assess(&e);
        assert_eq!(a.growth, Growth::Balanced);
        assert!(
            a.confidence.contains("frees of older blocks balance"),
            "{}",
            a.confidence
        );
        // Without a net (no header), the exact numbers still contradict it.
        let a = assess(&GrowthEvidence {
            net: None,
            net_missing: Some(NoNetGrowth::NoHeader),
            ..e
        });
        assert_eq!(a.growth, Growth::Balanced);
        assert!(
            a.confidence.contains("did not grow with them"),
            "{}",
            a.confidence
        );
    }

    fn series(levels_mib: &[f64], sigma_mib: f64) -> Trend {
        let points: Vec<Point> = levels_mib
            .iter()
            .enumerate()
            .map(|(i, &l)| Point {
                secs: 3.0 * (i + 1) as f64,
                bytes: l * MIB,
                sigma: sigma_mib * MIB,
            })
            .collect();
        fit(&points)
    }

    /// Check the daemon: a slow steady leak beside a flat churn is a LEAK naming the
    /// leaking stack; the churn's flat level is not.
    #[test]
    fn daemon_slow_leak_beside_churn() {
        let leak = series(
            &[0.03, 0.09, 0.12, 0.19, 0.25, 0.28, 0.34, 0.38, 0.44, 0.5],
            0.05,
        );
        let churn = series(
            &[9.0, 10.2, 9.8, 10.1, 9.7, 10.3, 9.9, 10.0, 10.4, 9.6],
            0.6,
        );
        let e = GrowthEvidence {
            stacks: vec![
                StackEvidence {
                    trend: Some(churn),
                    ..stack("cache_put", 9.6 * MIB, 300.0, 0.0)
                },
                StackEvidence {
                    trend: Some(leak),
                    ..stack("remember_session", 0.5 * MIB, 16.0, 0.5)
                },
            ],
            net: net(0.3 * MIB, 8.0 * MIB, 300.0 * MIB),
            heap_growth: 0.0,
            resident_delta: Some(600 << 10),
            span_secs: 30.0,
            daemon: true,
            ..Default::default()
        };
        let a = assess(&e);
        let Growth::Leak { stacks, .. } = &a.growth else {
            panic!("{a:?}")
        };
        assert_eq!(stacks, &vec![1]);
        assert!(a.confidence.contains("/min"), "{}", a.confidence);
    }

    /// Check the daemon's other shapes: stopped, periodic, pending, flat.
    #[test]
    fn daemon_shapes() {
        let base = GrowthEvidence {
            heap_growth: 40.0 * MIB,
            resident_delta: Some(40 << 20),
            span_secs: 30.0,
            daemon: true,
            ..Default::default()
        };
        let with = |trend: Trend, old: f64| GrowthEvidence {
            stacks: vec![StackEvidence {
                trend: Some(trend),
                ..stack("cache_put", 40.0 * MIB, 40.0, old)
            }],
            ..base.clone()
        };
        let stopped = series(
            &[12.0, 25.0, 38.0, 40.0, 39.5, 40.5, 40.0, 39.0, 40.5, 40.0],
            1.5,
        );
        assert!(matches!(
            assess(&with(stopped, 0.5)).growth,
            Growth::Stopped { .. }
        ));
        let periodic = series(&[0.5, 24.0, 0.3, 23.5, 24.5, 0.4, 24.0, 0.2], 1.0);
        assert!(matches!(
            assess(&with(periodic, 0.0)).growth,
            Growth::Periodic { .. }
        ));
        let short = series(&[10.0, 20.0, 30.0], 1.0);
        assert!(matches!(
            assess(&with(short, 0.5)).growth,
            Growth::Pending { .. }
        ));
        assert_eq!(assess(&with(short, 0.0)).growth, Growth::Balanced);
        let flat = series(&[40.0, 41.5, 39.0, 40.5, 42.0, 38.5, 40.0], 1.6);
        assert_eq!(assess(&with(flat, 0.0)).growth, Growth::Balanced);
    }

    /// Check the normal CDF at known points.
    #[test]
    fn normal_cdf_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-2.0) - 0.02275).abs() < 1e-4);
    }
}
