//! The one line of confidence under a memory verdict: how sure it is, and the numbers
//! behind it, as a human can check them (see `analyze::memory::growth` for how each
//! probability and bound is computed).
use crate::{
    analyze::memory::{
        growth::{Assessment, Basis, Contradiction, Z},
        trend::Trend,
    },
    model::growth::Shape,
    units::human_bytes,
};

/// `+1.5 MiB` / `-3.0 KiB`
pub fn signed(bytes: f64) -> String {
    format!(
        "{}{}",
        if bytes < 0.0 { "-" } else { "+" },
        human_bytes(bytes.abs())
    )
}

fn percent(p: f64) -> String {
    let p = (p * 100.0).clamp(0.0, 100.0);
    if p >= 99.9 {
        ">99.9 %".into()
    } else {
        format!("{p:.1} %")
    }
}

/// `+1.0 MiB/min ± 0.2 MiB/min (1σ) over 10 intervals, 27 s; P(growth) 99.9 %`
pub fn trend_text(t: &Trend) -> String {
    format!(
        "{}/min ± {}/min (1σ) over {} intervals, {:.0} s; P(growth) {}",
        signed(t.slope * 60.0),
        human_bytes(t.slope_se * 60.0),
        t.points,
        t.span_secs,
        percent(t.confidence)
    )
}

fn net_text(a: &Assessment) -> String {
    match (&a.net, &a.net_missing) {
        (Some(n), _) => format!(
            "net {} ± {} (2σ)",
            signed(n.bytes),
            human_bytes(Z * n.sigma)
        ),
        (None, Some(why)) => format!("net not known: {}", why.describe()),
        (None, None) => "net not known".into(),
    }
}

fn resident_text(a: &Assessment) -> String {
    a.resident_delta
        .map_or_else(|| "not read".into(), |d| signed(d as f64))
}

/// `net +4.1 MiB ± 18 MiB (2σ) · mappings +0 B · resident +28 KiB`
fn evidence_text(a: &Assessment) -> String {
    format!(
        "{} · allocator heap {} · direct mappings {} · resident {}",
        net_text(a),
        signed(a.heap_growth),
        signed(a.direct_growth),
        resident_text(a)
    )
}

/// What the committed series did, by its shape: `grew +20.0 MiB, then stayed level from
/// 9 s on (8 intervals, 21 s)`. Its slope over the whole span includes the rise, so it
/// is not what a level is worded with.
fn committed_level_text(t: &Trend) -> String {
    let span = format!("{} intervals, {:.0} s", t.points, t.span_secs);
    match t.shape {
        Shape::Stopped {
            grew,
            level_since_secs,
        } => format!(
            "grew {}, then stayed level from {level_since_secs:.0} s on ({span})",
            signed(grew)
        ),
        Shape::Shrinking => format!("shrank ({}/min over {span})", signed(t.slope * 60.0)),
        _ => format!(
            "stayed level over {span} ({}/min ± {}/min, 1σ)",
            signed(t.slope * 60.0),
            human_bytes(t.slope_se * 60.0)
        ),
    }
}

/// The line.
pub fn confidence_line(a: &Assessment) -> String {
    match &a.basis {
        Basis::Persistent {
            bytes,
            sigma,
            probability,
            oldest_secs,
        } => format!(
            "confidence {}: {} ± {} (2σ) live in stacks whose blocks span the observation \
             (oldest {oldest_secs:.1} s of {:.1} s); {}",
            percent(*probability),
            signed(*bytes),
            human_bytes(Z * sigma),
            a.span_secs,
            evidence_text(a)
        ),
        Basis::Trend(t) => format!(
            "confidence from the trend of its live bytes: {}; {}",
            trend_text(t),
            evidence_text(a)
        ),
        Basis::CommittedLevel(t) => format!(
            "the net grew since the process was first followed, but the committed heap and \
             anonymous mappings (exact) {}; {}",
            committed_level_text(t),
            evidence_text(a)
        ),
        Basis::Contradicted { claim, live, by } => {
            let why = match by {
                Contradiction::Net => "frees of older blocks balance them".to_string(),
                Contradiction::Mappings => {
                    "the mappings and resident memory did not grow with them".to_string()
                }
            };
            format!(
                "{} of the {} live since the process was first followed looks persistent, but \
                 {why}; {}",
                human_bytes(*claim),
                human_bytes(*live),
                evidence_text(a)
            )
        }
        Basis::TooFewIntervals { points } => format!(
            "a trend needs {} intervals, {points} so far; {}",
            crate::analyze::memory::growth::TREND_POINTS,
            evidence_text(a)
        ),
        Basis::NetOnly => format!(
            "the net growth is beyond its error, but every stack frees its blocks too (a \
             cache filling, a batch in flight); {}",
            evidence_text(a)
        ),
        Basis::Bound { young_secs } => {
            let young = young_secs
                .map(|s| format!("; live blocks all younger than {s:.1} s (turnover)"))
                .unwrap_or_default();
            match &a.net {
                Some(n) => format!(
                    "97.7 % bound: net growth below {} ({}); allocator heap {} · direct \
                     mappings {} · resident {}{young}",
                    signed(n.bytes + Z * n.sigma),
                    net_text(a),
                    signed(a.heap_growth),
                    signed(a.direct_growth),
                    resident_text(a)
                ),
                None => format!(
                    "no stack's live blocks persist beyond sampling noise; {}{young}",
                    evidence_text(a)
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{allocator::net::NetGrowth, analyze::memory::growth::Growth};

    const MIB: f64 = 1024.0 * 1024.0;

    fn assessment(basis: Basis) -> Assessment {
        Assessment {
            growth: Growth::Balanced,
            basis,
            net: Some(NetGrowth {
                bytes: 4.1 * MIB,
                sigma: 9.0 * MIB,
                ..Default::default()
            }),
            net_missing: None,
            heap_growth: 0.0,
            direct_growth: 0.0,
            resident_delta: Some(28 << 10),
            span_secs: 6.0,
        }
    }

    /// Check the line of a full cache: the net's bound, the exact numbers, the turnover.
    #[test]
    fn bound_line() {
        let line = confidence_line(&assessment(Basis::Bound {
            young_secs: Some(1.4),
        }));
        assert_eq!(
            line,
            "97.7 % bound: net growth below +22.1 MiB (net +4.1 MiB ± 18.0 MiB (2σ)); \
             allocator heap +0 B · direct mappings +0 B · resident +28.0 KiB; live blocks all \
             younger than 1.4 s (turnover)"
        );
    }

    /// Check the line of growth that stopped by the committed mappings' level.
    #[test]
    fn committed_level_line() {
        let line = confidence_line(&assessment(Basis::CommittedLevel(
            crate::analyze::memory::trend::Trend {
                shape: crate::model::growth::Shape::Flat,
                slope: 0.0,
                slope_se: 0.0,
                confidence: 0.5,
                points: 8,
                span_secs: 21.0,
            },
        )));
        assert_eq!(
            line,
            "the net grew since the process was first followed, but the committed heap and \
             anonymous mappings (exact) stayed level over 8 intervals, 21 s (+0 B/min ± 0 B/min, \
             1σ); net +4.1 MiB ± 18.0 MiB (2σ) · allocator heap +0 B · direct mappings +0 B · \
             resident +28.0 KiB"
        );
        let line = confidence_line(&assessment(Basis::CommittedLevel(
            crate::analyze::memory::trend::Trend {
                shape: Shape::Stopped {
                    grew: 20.0 * MIB,
                    level_since_secs: 9.0,
                },
                slope: 1.0 * MIB,
                slope_se: 0.5 * MIB,
                confidence: 0.94,
                points: 8,
                span_secs: 21.0,
            },
        )));
        assert!(
            line.contains(
                "(exact) grew +20.0 MiB, then stayed level from 9 s on (8 intervals, 21 s); net"
            ),
            "{line}"
        );
    }

    /// Check the line of a one-window leak and of a contradicted claim.
    #[test]
    fn persistent_and_contradicted_lines() {
        let line = confidence_line(&assessment(Basis::Persistent {
            bytes: 16.0 * MIB,
            sigma: 4.0 * MIB,
            probability: 0.9999,
            oldest_secs: 4.9,
        }));
        assert!(
            line.starts_with("confidence >99.9 %: +16.0 MiB ± 8.0 MiB (2σ)"),
            "{line}"
        );
        let line = confidence_line(&assessment(Basis::Contradicted {
            claim: 100.0 * MIB,
            live: 137.0 * MIB,
            by: Contradiction::Net,
        }));
        assert!(
            line.contains("frees of older blocks balance them"),
            "{line}"
        );
    }
}
