//! Live allocations of one process at the end of each daemon interval, for trends: a
//! level says little (a full cache reaches its level in one interval), the series says
//! whether memory keeps growing.
use std::collections::{BTreeMap, HashMap};

use super::{
    growth::{GrowthEvidence, StackEvidence},
    trend::{self, Point, Trend},
};
use crate::{allocator::LiveGrowth, events::StackId, model::AllocationView};

/// Intervals kept per stack: the trend is fitted over this sliding window.
pub const MAX_POINTS: usize = 60;

/// Levels per interned stack since the process was first followed.
#[derive(Clone, Debug, Default)]
pub struct IntervalSeries {
    stacks: HashMap<Option<StackId>, Vec<Point>>,
    /// The committed heap and anonymous mappings at the end of each interval (exact).
    committed: Vec<Point>,
}

impl IntervalSeries {
    /// Keep the levels of the interval that ends `secs` after the follow started. A
    /// stack seen before and gone now is a level of 0.
    pub fn push(&mut self, secs: f64, levels: &BTreeMap<Option<StackId>, LiveGrowth>) {
        for points in self.stacks.values_mut() {
            if points.last().is_some_and(|last| last.secs < secs) {
                points.push(Point {
                    secs,
                    bytes: 0.0,
                    sigma: 0.0,
                });
            }
        }
        for (stack, g) in levels {
            let point = Point {
                secs,
                bytes: g.bytes,
                sigma: g.variance.sqrt(),
            };
            let points = self.stacks.entry(*stack).or_default();
            match points.last_mut() {
                Some(last) if last.secs == secs => *last = point,
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

    /// Keep the committed heap and anonymous mappings at the end of the interval that
    /// ends `secs` after the follow started.
    pub fn push_committed(&mut self, secs: f64, bytes: f64) {
        match self.committed.last_mut() {
            Some(last) if last.secs == secs => last.bytes = bytes,
            _ => self.committed.push(Point {
                secs,
                bytes,
                sigma: 0.0,
            }),
        }
        let excess = self.committed.len().saturating_sub(MAX_POINTS);
        self.committed.drain(..excess);
    }

    /// The trend of the committed heap and anonymous mappings, `current` its latest
    /// level.
    pub fn committed_trend(&self, current: Point) -> Trend {
        let mut points: Vec<Point> = self
            .committed
            .iter()
            .filter(|p| p.secs < current.secs)
            .copied()
            .collect();
        points.push(current);
        trend::fit(&points)
    }

    /// The summed levels of `stacks` (one frame list may have several interned
    /// stacks) before `before_secs`.
    fn levels(&self, stacks: &[Option<StackId>], before_secs: f64) -> Vec<Point> {
        let mut by_time: BTreeMap<u64, Point> = BTreeMap::new();
        for id in stacks {
            for p in self.stacks.get(id).into_iter().flatten() {
                if p.secs >= before_secs {
                    continue;
                }
                let e = by_time.entry((p.secs * 1e3) as u64).or_insert(Point {
                    secs: p.secs,
                    bytes: 0.0,
                    sigma: 0.0,
                });
                e.bytes += p.bytes;
                e.sigma = (e.sigma.powi(2) + p.sigma.powi(2)).sqrt();
            }
        }
        by_time.into_values().collect()
    }

    /// The trend of `stacks` with `current` as its latest level. `cumulative`: the
    /// stack keeps its blocks, so each level holds the samples of the earlier ones and
    /// their errors are not independent; the fit then rests on the residuals alone.
    fn trend(&self, stacks: &[Option<StackId>], current: Point, cumulative: bool) -> Trend {
        let mut points = self.levels(stacks, current.secs);
        points.push(current);
        if cumulative {
            for p in &mut points {
                p.sigma = 0.0;
            }
        }
        let excess = points.len().saturating_sub(MAX_POINTS);
        trend::fit(&points[excess..])
    }

    /// Stacks with a history that are not in `present`.
    fn absent<'a>(
        &'a self,
        present: &'a [Option<StackId>],
    ) -> impl Iterator<Item = Option<StackId>> + 'a {
        self.stacks
            .keys()
            .copied()
            .filter(|id| !present.contains(id))
    }
}

/// What the growth decision needs from a process's live allocations; with `series`
/// (the daemon), each stack's trend too. `names` gives a stack's frames.
pub fn growth_evidence(
    view: &AllocationView,
    series: Option<&IntervalSeries>,
    names: impl Fn(Option<StackId>) -> Vec<String>,
) -> GrowthEvidence {
    let mut merged: Vec<(StackEvidence, Vec<Option<StackId>>)> = Vec::new();
    for g in &view.growth {
        let i = match merged.iter().position(|(m, _)| m.frames == g.frames) {
            Some(i) => i,
            None => {
                merged.push((
                    StackEvidence {
                        frames: g.frames.clone(),
                        ..Default::default()
                    },
                    Vec::new(),
                ));
                merged.len() - 1
            }
        };
        let (e, ids) = &mut merged[i];
        e.bytes += g.bytes;
        e.variance += g.variance;
        e.old_bytes += g.by_age[3];
        e.freed += g.freed;
        e.oldest_secs = e.oldest_secs.max(g.oldest_secs);
        ids.push(g.stack);
    }
    if let Some(series) = series {
        // Stacks that held memory in earlier intervals and hold none now (a batch
        // released) keep their trend: their level is 0.
        let present: Vec<Option<StackId>> = view.growth.iter().map(|g| g.stack).collect();
        for id in series.absent(&present) {
            let frames = names(id);
            match merged.iter_mut().find(|(m, _)| m.frames == frames) {
                Some((_, ids)) => ids.push(id),
                None => merged.push((
                    StackEvidence {
                        frames,
                        ..Default::default()
                    },
                    vec![id],
                )),
            }
        }
        for (e, ids) in &mut merged {
            let cumulative = e.persists();
            e.trend = Some(series.trend(
                ids,
                Point {
                    secs: view.followed_secs,
                    bytes: e.bytes,
                    sigma: e.variance.sqrt(),
                },
                cumulative,
            ));
        }
    }
    let mut stacks: Vec<StackEvidence> = merged.into_iter().map(|(e, _)| e).collect();
    stacks.sort_by(|a, b| b.bytes.total_cmp(&a.bytes).then(a.frames.cmp(&b.frames)));
    GrowthEvidence {
        stacks,
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

    fn names(id: Option<StackId>) -> Vec<String> {
        vec!["main".into(), format!("f{}", id.unwrap_or(0))]
    }

    fn levels(rows: &[(StackId, f64)]) -> BTreeMap<Option<StackId>, LiveGrowth> {
        rows.iter()
            .map(|&(id, bytes)| {
                (
                    Some(id),
                    LiveGrowth {
                        bytes,
                        variance: 1.0,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn view(secs: f64, rows: &[(StackId, f64)]) -> AllocationView {
        AllocationView {
            followed_secs: secs,
            growth: rows
                .iter()
                .map(|&(id, bytes)| AllocGrowth {
                    frames: names(Some(id)),
                    stack: Some(id),
                    bytes,
                    variance: 1.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Check that intervals build per-stack series, a vanished stack keeps its history
    /// at level 0, and the trend of the latest report includes its own level.
    #[test]
    fn series_per_stack() {
        let mut s = IntervalSeries::default();
        for i in 1..=5 {
            let secs = 3.0 * i as f64;
            let mut rows = vec![(1, 1e6 * i as f64)];
            if i == 1 {
                rows.push((2, 5e6));
            }
            s.push(secs, &levels(&rows));
        }
        assert_eq!(s.stacks.len(), 2, "the vanished stack keeps its history");
        let e = growth_evidence(&view(18.0, &[(1, 6e6)]), Some(&s), names);
        let t = e.stacks[0].trend.unwrap();
        assert_eq!(t.points, 6);
        assert_eq!(t.shape, Shape::Steady);
        assert!(e.daemon);
        assert_eq!(e.stacks.len(), 2, "{:?}", e.stacks);
        assert_eq!(e.stacks[1].frames, names(Some(2)));
        let e = growth_evidence(&view(18.0, &[(1, 6e6)]), None, names);
        assert!(e.stacks[0].trend.is_none() && !e.daemon);
    }

    /// Check that the series is capped.
    #[test]
    fn series_is_capped() {
        let mut s = IntervalSeries::default();
        for i in 1..=(MAX_POINTS + 10) {
            s.push(i as f64, &levels(&[(1, 1e6)]));
        }
        assert_eq!(s.stacks.values().next().unwrap().len(), MAX_POINTS);
    }
}
