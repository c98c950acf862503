//! Unit tests of the growth decision (`growth.rs`), on hand-made evidence.
use super::*;
use crate::analyze::memory::trend::{fit, Point};

const MIB: f64 = 1024.0 * 1024.0;

fn stack(name: &str, bytes: f64, samples: f64, old_share: f64) -> StackEvidence {
    let w = bytes / samples.max(1.0);
    StackEvidence {
        frames: vec!["main".into(), name.into()],
        bytes,
        variance: samples * w * w,
        old_bytes: old_share * bytes,
        oldest_secs: 6.0 * old_share * 2.0,
        // Turnover stacks (nothing old) freed three times what they hold.
        freed: if old_share > 0.0 { 0.0 } else { 3.0 * bytes },
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
    assert_eq!(
        a.basis,
        Basis::Bound {
            young_secs: Some(1.4)
        }
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
    let Basis::Persistent { probability, .. } = a.basis else {
        panic!("{a:?}")
    };
    assert!(probability > 0.999);
}

/// Check that a leak beside the collection of older blocks stays a leak: measured on
/// musl Node 22, 100 MiB of persistent Buffers with a net of +98.6 MiB ± 0.25 MiB
/// (1.4 MiB of blocks from before the window were freed).
#[test]
fn leak_beside_older_frees_is_a_leak() {
    let e = GrowthEvidence {
        // 1 MiB blocks, above the sampling rate: recorded exactly.
        stacks: vec![StackEvidence {
            variance: 0.0,
            ..stack("rememberRequest", 100.0 * MIB, 100.0, 0.5)
        }],
        net: net(98.6 * MIB, 0.25 * MIB, 100.25 * MIB),
        heap_growth: 0.0,
        direct_growth: 103.1 * MIB,
        resident_delta: Some(10 << 20),
        span_secs: 5.0,
        ..Default::default()
    };
    assert!(matches!(assess(&e).growth, Growth::Leak { .. }));
}

/// Check that a net just past 2σ, with no stack keeping its blocks and neither heap nor
/// resident memory growing, is not called growth: measured on Node's Buffer churn
/// (net +13.2 MiB ± 11.9 MiB (2σ), heap +0.5 MiB, resident +0.2 MiB).
#[test]
fn net_just_past_noise_alone_is_not_growth() {
    let e = GrowthEvidence {
        stacks: vec![stack("replaceEntry", 83.8 * MIB, 400.0, 0.0)],
        net: net(13.2 * MIB, 5.95 * MIB, 279.0 * MIB),
        heap_growth: 0.5 * MIB,
        direct_growth: 1.2 * MIB,
        resident_delta: Some(232 << 10),
        span_secs: 8.0,
        ..Default::default()
    };
    assert!(
        matches!(assess(&e).growth, Growth::Balanced),
        "{:?}",
        assess(&e)
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
    assert!(matches!(
        a.basis,
        Basis::Contradicted {
            by: Contradiction::Net,
            ..
        }
    ));
    // Without a net (no header), the exact numbers still contradict it.
    let a = assess(&GrowthEvidence {
        net: None,
        net_missing: Some(NoNetGrowth::NoHeader),
        ..e
    });
    assert_eq!(a.growth, Growth::Balanced);
    assert!(matches!(
        a.basis,
        Basis::Contradicted {
            by: Contradiction::Mappings,
            ..
        }
    ));
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
    assert!(matches!(a.basis, Basis::Trend(t) if t.shape == Shape::Steady));
}

/// Check the slow leak of a CI run whose net estimate fell to -5.5 MiB ± 3.8 MiB
/// (2σ) while the allocator heap grew +512 KiB and resident memory +652 KiB: the exact
/// numbers show the 0.45 MiB the steady stack holds, so the net does not veto the LEAK.
/// Its twin, with the heap and resident memory level, stays contradicted by the net.
#[test]
fn daemon_slow_leak_net_veto_yields_to_exact_numbers() {
    let leak = series(
        &[0.03, 0.09, 0.12, 0.19, 0.25, 0.28, 0.34, 0.38, 0.44, 0.45],
        0.05,
    );
    let evidence = |heap: f64, resident: i64| GrowthEvidence {
        stacks: vec![StackEvidence {
            trend: Some(leak),
            ..stack("remember_session", 0.45 * MIB, 29.0, 0.5)
        }],
        net: net(-5.5 * MIB, 1.9 * MIB, 260.0 * MIB),
        heap_growth: heap,
        resident_delta: Some(resident),
        span_secs: 30.0,
        daemon: true,
        ..Default::default()
    };
    let a = assess(&evidence(512.0 * 1024.0, 652 << 10));
    assert!(matches!(a.growth, Growth::Leak { .. }), "{a:?}");
    let a = assess(&evidence(0.0, 0));
    assert!(
        matches!(
            a.basis,
            Basis::Contradicted {
                by: Contradiction::Net,
                ..
            }
        ),
        "{a:?}"
    );
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

/// Check the warming cache of a CI run: the sampled level of its full cache wandered
/// (35.0 → 47.8 → 43.5 MiB at ±3.3 MiB) while the committed heap stayed at 43.2 MiB for
/// six intervals. The net grew since the follow, so the daemon used to say "GROWING
/// (not judged yet)" on the 8th interval; the level mappings say the growth stopped. A
/// heap that still grows keeps the net's GROWING, and so does a committed series too
/// short to judge.
#[test]
fn daemon_cache_full_by_committed_level() {
    let live = series(&[19.2, 36.0, 38.8, 40.2, 35.0, 41.5, 47.8, 43.5], 3.3);
    assert!(!matches!(live.shape, Shape::Stopped { .. } | Shape::Steady));
    let evidence = |committed: Trend| GrowthEvidence {
        stacks: vec![StackEvidence {
            trend: Some(live),
            ..stack("cache_put", 43.5 * MIB, 170.0, 0.0)
        }],
        net: net(46.3 * MIB, 6.1 * MIB, 150.0 * MIB),
        heap_growth: 43.2 * MIB,
        resident_delta: Some(39 << 20),
        span_secs: 24.0,
        daemon: true,
        committed_trend: Some(committed),
        ..Default::default()
    };
    let level = series(&[20.0, 39.4, 43.2, 43.2, 43.2, 43.2, 43.2, 43.2], 0.0);
    let a = assess(&evidence(level));
    assert_eq!(
        a.growth,
        Growth::Stopped {
            stack: 0,
            grew: 46.3 * MIB
        }
    );
    assert!(matches!(a.basis, Basis::CommittedLevel(t) if t == level));
    let full_from_the_start = series(&[43.2; 8], 0.0);
    assert!(matches!(
        assess(&evidence(full_from_the_start)).growth,
        Growth::Stopped { .. }
    ));
    let growing = series(&[20.0, 25.0, 30.1, 35.0, 40.2, 45.0, 50.0, 55.1], 0.0);
    assert!(matches!(assess(&evidence(growing)).basis, Basis::NetOnly));
    let short = series(&[20.0, 39.4, 43.2], 0.0);
    assert!(matches!(assess(&evidence(short)).basis, Basis::NetOnly));
}

/// Check the normal CDF at known points.
#[test]
fn normal_cdf_values() {
    assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
    assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
    assert!((normal_cdf(-2.0) - 0.02275).abs() < 1e-4);
}
