//! Live allocations of one process at the end of each daemon interval, for trends: a
//! level says little (a full cache reaches its level in one interval), the series says
//! whether memory keeps growing.
use std::collections::HashMap;

use super::{
    growth::{GrowthEvidence, StackEvidence},
    trend::{self, Point, Trend},
};
use crate::model::AllocationView;

/// Intervals kept per stack: the trend is fitted over this sliding window.
pub const MAX_POINTS: usize = 60;

/// Levels per stack (by frame names) since the process was first followed.
#[derive(Clone, Debug, Default)]
pub struct IntervalSeries {
    stacks: HashMap<Vec<String>, Vec<Point>>,
}

impl IntervalSeries {
    /// Keep this interval's levels. A stack seen before and gone now is a level of 0.
    pub fn push(&mut self, view: &AllocationView) {
        let now = stack_points(view);
        for points in self.stacks.values_mut() {
            if let Some(last) = points.last() {
                if last.secs < view.followed_secs {
                    points.push(Point {
                        secs: view.followed_secs,
                        bytes: 0.0,
                        sigma: 0.0,
                    });
                }
            }
        }
        for (frames, point) in now {
            let points = self.stacks.entry(frames).or_default();
            match points.last_mut() {
                Some(last) if last.secs == point.secs => *last = point,
                _ => points.push(point),
            }
        }
        for points in self.stacks.values_mut() {
            let excess = points.len().saturating_sub(MAX_POINTS);
            points.drain(..excess);
        }
        self.stacks
            .retain(|_, points| points.iter().any(|p| p.bytes > 0.0));
    }

    /// The trend of `frames` with `current` as its latest level.
    fn trend(&self, frames: &[String], current: Point) -> Trend {
        let mut points: Vec<Point> = self
            .stacks
            .get(frames)
            .map(|p| {
                p.iter()
                    .copied()
                    .filter(|p| p.secs < current.secs)
                    .collect()
            })
            .unwrap_or_default();
        points.push(current);
        let excess = points.len().saturating_sub(MAX_POINTS);
        trend::fit(&points[excess..])
    }
}

/// One point per stack (rows with the same frames merged).
fn stack_points(view: &AllocationView) -> HashMap<Vec<String>, Point> {
    let mut out: HashMap<Vec<String>, Point> = HashMap::new();
    for g in &view.growth {
        let p = out.entry(g.frames.clone()).or_insert(Point {
            secs: view.followed_secs,
            bytes: 0.0,
            sigma: 0.0,
        });
        p.bytes += g.bytes;
        p.sigma = (p.sigma.powi(2) + g.variance).sqrt();
    }
    out
}

/// What the growth decision needs from a process's live allocations; with `series`
/// (the daemon), each stack's trend too.
pub fn growth_evidence(view: &AllocationView, series: Option<&IntervalSeries>) -> GrowthEvidence {
    let mut merged: Vec<StackEvidence> = Vec::new();
    for g in &view.growth {
        let e = match merged.iter_mut().find(|m| m.frames == g.frames) {
            Some(e) => e,
            None => {
                merged.push(StackEvidence {
                    frames: g.frames.clone(),
                    ..Default::default()
                });
                merged.last_mut().expect("just pushed")
            }
        };
        e.bytes += g.bytes;
        e.variance += g.variance;
        e.old_bytes += g.by_age[3];
        e.freed += g.freed;
        e.oldest_secs = e.oldest_secs.max(g.oldest_secs);
    }
    if let Some(series) = series {
        // Stacks that held memory in earlier intervals and hold none now (a batch
        // released) keep their trend: their level is 0.
        for frames in series.stacks.keys() {
            if !merged.iter().any(|m| &m.frames == frames) {
                merged.push(StackEvidence {
                    frames: frames.clone(),
                    ..Default::default()
                });
            }
        }
        for e in &mut merged {
            e.trend = Some(series.trend(
                &e.frames,
                Point {
                    secs: view.followed_secs,
                    bytes: e.bytes,
                    sigma: e.variance.sqrt(),
                },
            ));
        }
    }
    merged.sort_by(|a, b| b.bytes.total_cmp(&a.bytes).then(a.frames.cmp(&b.frames)));
    GrowthEvidence {
        stacks: merged,
        net: view.net,
        net_missing: view.net_missing,
        span_secs: view.followed_secs,
        daemon: series.is_some(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analyze::memory::trend::Shape, model::AllocGrowth};

    fn view(secs: f64, rows: &[(&str, f64)]) -> AllocationView {
        AllocationView {
            followed_secs: secs,
            growth: rows
                .iter()
                .map(|(f, b)| AllocGrowth {
                    frames: vec!["main".into(), (*f).into()],
                    bytes: *b,
                    variance: 1.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Check that intervals build per-stack series, a vanished stack drops to 0, and
    /// the trend of the latest report includes its own level.
    #[test]
    fn series_per_stack() {
        let mut s = IntervalSeries::default();
        for i in 1..=5 {
            let secs = 3.0 * i as f64;
            let mut rows = vec![("leak", 1e6 * i as f64)];
            if i == 1 {
                rows.push(("once", 5e6));
            }
            s.push(&view(secs, &rows));
        }
        assert_eq!(s.stacks.len(), 2, "the vanished stack keeps its history");
        let e = growth_evidence(&view(18.0, &[("leak", 6e6)]), Some(&s));
        let t = e.stacks[0].trend.unwrap();
        assert_eq!(t.points, 6);
        assert_eq!(t.shape, Shape::Steady);
        assert!(e.daemon);
        let e = growth_evidence(&view(18.0, &[("leak", 6e6)]), None);
        assert!(e.stacks[0].trend.is_none() && !e.daemon);
    }

    /// Check that the series is capped.
    #[test]
    fn series_is_capped() {
        let mut s = IntervalSeries::default();
        for i in 1..=(MAX_POINTS + 10) {
            s.push(&view(i as f64, &[("flat", 1e6)]));
        }
        assert_eq!(s.stacks.values().next().unwrap().len(), MAX_POINTS);
    }
}
