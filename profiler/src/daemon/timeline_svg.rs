//! The timeline of one process as an inline SVG for `index.html`: resident memory,
//! live mapped bytes and live allocations at the end of each interval on one byte
//! scale, the memory limit when it is in view, and a band of the stall state below.
//! Plain SVG drawn by the daemon: no script, no external resource; each point has a
//! `<title>` so a browser shows its values on hover.
use std::fmt::Write as _;

use super::timeline::{ProcessSeries, StallState};
use crate::{targets::memory_limit::LimitSource, units::human_bytes};

const WIDTH: f64 = 760.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 740.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 174.0;
const BAND_TOP: f64 = 184.0;
const BAND_HEIGHT: f64 = 12.0;
const HEIGHT: f64 = 232.0;

/// The three byte series: label, colour, value of a point.
type Line = (
    &'static str,
    &'static str,
    fn(&super::timeline::ProcessPoint) -> Option<f64>,
);
const LINES: [Line; 3] = [
    ("RSS", "#1f77b4", |p| p.rss_bytes.map(|b| b as f64)),
    ("mapped", "#ff7f0e", |p| p.mapped_bytes.map(|b| b as f64)),
    ("live allocations", "#2ca02c", |p| p.live_allocation_bytes),
];

/// A round upper bound for the axis: the next power of two in bytes (…, 64 MiB,
/// 128 MiB, 256 MiB, …), so the labels read as whole binary units.
fn axis_max(max: f64) -> f64 {
    let mut top = 1024.0;
    while top < max {
        top *= 2.0;
    }
    top
}

/// Short UTC time of day of a Unix time.
fn clock(unix: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .map(|t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()))
        .unwrap_or_default()
}

fn stall_colour(s: StallState) -> (&'static str, &'static str) {
    match s {
        StallState::Stalled => ("#d62728", "stalled"),
        StallState::Idle => ("#c7c7c7", "idle"),
        StallState::NotStalled => ("#98df8a", "not stalled"),
        StallState::Exited => ("#7f7f7f", "exited"),
    }
}

/// The SVG of `s` (empty when it has no point).
pub fn svg(s: &ProcessSeries) -> String {
    let Some(((t0, _), (t1, _))) = s.points.first().zip(s.points.last()) else {
        return String::new();
    };
    let (t0, t1) = (*t0, *t1);
    let x = |t: f64| {
        if t1 > t0 {
            LEFT + (t - t0) / (t1 - t0) * (RIGHT - LEFT)
        } else {
            (LEFT + RIGHT) / 2.0
        }
    };
    let data_max = s
        .points
        .iter()
        .flat_map(|(_, p)| LINES.iter().filter_map(move |l| (l.2)(p)))
        .fold(0.0, f64::max);
    // The cgroup limit is drawn when it is in view (within twice the highest value),
    // else named above the plot.
    let cgroup_limit = s
        .points
        .iter()
        .rev()
        .find_map(|(_, p)| p.oom.as_ref())
        .filter(|f| f.limit.source != LimitSource::Host)
        .map(|f| f.limit.limit_bytes as f64);
    let limit = cgroup_limit.filter(|&l| l <= 2.0 * data_max.max(1.0));
    let top = axis_max(data_max.max(limit.unwrap_or(0.0)));
    let y = |b: f64| BOTTOM - b / top * (BOTTOM - TOP);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\">\
         <title>{} ({}): memory and stall state per interval</title>\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
        super::index::escape(&s.comm),
        s.pid,
        RIGHT - LEFT,
        BOTTOM - TOP
    );
    for frac in [0.0, 0.5, 1.0] {
        let b = top * frac;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            yy = y(b),
            lx = LEFT - 6.0,
            ty = y(b) + 4.0,
            label = human_bytes(b)
        );
    }
    if let Some(l) = limit {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{RIGHT}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"#d62728\">limit {label}</text>",
            yy = y(l),
            ty = y(l) - 4.0,
            label = human_bytes(l)
        );
    }
    if let (Some(l), None) = (cgroup_limit, limit) {
        let _ = write!(
            out,
            "<text x=\"{RIGHT}\" y=\"{ty}\" text-anchor=\"end\" fill=\"#d62728\">limit {} (above the scale)</text>",
            human_bytes(l),
            ty = TOP - 6.0
        );
    }
    for (name, colour, value) in LINES {
        let pts: Vec<(f64, f64, f64)> = s
            .points
            .iter()
            .filter_map(|(t, p)| Some((x(*t), y(value(p)?), value(p)?)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(a, b, _)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (a, b, v) in &pts {
            let _ = write!(
                out,
                "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3\" fill=\"{colour}\"><title>{name} {}</title></circle>",
                human_bytes(*v)
            );
        }
    }
    // The stall band: each interval's state, centred on its point.
    let xs: Vec<f64> = s.points.iter().map(|(t, _)| x(*t)).collect();
    for (i, (_, p)) in s.points.iter().enumerate() {
        let Some(state) = p.stall else { continue };
        let half = |j: usize| (xs[i] - xs[j]).abs() / 2.0;
        let left = if i > 0 { xs[i] - half(i - 1) } else { LEFT };
        let right = if i + 1 < xs.len() {
            xs[i] + half(i + 1)
        } else {
            RIGHT
        };
        let (fill, label) = stall_colour(state);
        let _ = write!(
            out,
            "<rect class=\"stall-{}\" x=\"{left:.1}\" y=\"{BAND_TOP}\" width=\"{:.1}\" height=\"{BAND_HEIGHT}\" fill=\"{fill}\" shape-rendering=\"crispEdges\"><title>{label}</title></rect>",
            label.replace(' ', "-"),
            (right - left).max(1.0)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">stall</text>\
         <text x=\"{LEFT}\" y=\"{tt}\">{first}</text><text x=\"{RIGHT}\" y=\"{tt}\" text-anchor=\"end\">{last} UTC</text>",
        lx = LEFT - 6.0,
        ty = BAND_TOP + 10.0,
        tt = BAND_TOP + BAND_HEIGHT + 16.0,
        first = clock(t0),
        last = clock(t1),
    );
    let mut lx = LEFT;
    for (name, colour, _) in LINES {
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"6\" width=\"12\" height=\"4\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"12\">{name}</text>",
            tx = lx + 16.0
        );
        lx += 30.0 + 7.0 * name.len() as f64;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::timeline::ProcessPoint;

    /// Check that the SVG draws a polyline per series with one point per interval, a
    /// stall band rectangle per interval, and nothing that needs a script.
    #[test]
    fn draws_lines_and_stall_band() {
        let points: Vec<(f64, ProcessPoint)> = (0..4)
            .map(|i| {
                (
                    1_700_000_000.0 + 3.0 * i as f64,
                    ProcessPoint {
                        pid: 7,
                        comm: "le<aky".into(),
                        rss_bytes: Some((10 + i) << 20),
                        mapped_bytes: Some((20 + i) << 20),
                        live_allocation_bytes: Some((2 * i) as f64 * 1048576.0),
                        stall: Some(if i == 3 {
                            StallState::Stalled
                        } else {
                            StallState::NotStalled
                        }),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let svg = svg(&ProcessSeries {
            pid: 7,
            comm: "le<aky".into(),
            points,
        });
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 12);
        assert_eq!(svg.matches("class=\"stall-stalled\"").count(), 1);
        assert_eq!(svg.matches("class=\"stall-not-stalled\"").count(), 3);
        assert!(svg.contains("le&lt;aky (7)"));
        assert!(!svg.contains("<script"));
        assert!(svg.contains("32.0 MiB"), "axis up to 32 MiB: {svg}");
    }

    /// Check that a cgroup limit near the data is drawn as a dashed line on the scale,
    /// and one far above it is only named.
    #[test]
    fn limit_drawn_when_in_view() {
        use crate::{
            model::forecast::{OomForecast, Outlook},
            targets::memory_limit::MemoryLimit,
        };
        let series = |limit_mib: u64| ProcessSeries {
            pid: 7,
            comm: "leaky".into(),
            points: (0..5)
                .map(|i| {
                    (
                        1_700_000_000.0 + 3.0 * i as f64,
                        ProcessPoint {
                            rss_bytes: Some((40 + 5 * i) << 20),
                            oom: Some(OomForecast {
                                limit: MemoryLimit {
                                    limit_bytes: limit_mib << 20,
                                    used_bytes: 60 << 20,
                                    source: LimitSource::CgroupV2 {
                                        cgroup: "/t".into(),
                                    },
                                },
                                rate: 1.0,
                                rate_se: 0.1,
                                span_secs: 12.0,
                                points: 5,
                                outlook: Outlook::AtLimit,
                            }),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        };
        let near = svg(&series(100));
        assert!(near.contains("stroke-dasharray") && near.contains(">limit 100.0 MiB</text>"));
        assert!(near.contains(">128.0 MiB</text>"), "axis up to 128 MiB");
        let far = svg(&series(4096));
        assert!(!far.contains("stroke-dasharray"));
        assert!(far.contains("limit 4.0 GiB (above the scale)"));
    }
}
