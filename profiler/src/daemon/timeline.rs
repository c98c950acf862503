//! What the daemon's page draws per process across intervals: each interval capture
//! keeps, in its `capture.json`, one [`ProcessPoint`] per process (resident memory,
//! live mapped bytes, live allocations, the typed verdicts and the time-to-OOM
//! forecast); the page gathers them into one [`ProcessSeries`] per process.
use serde::{Deserialize, Serialize};

use super::layout::{CaptureKind, Found};
use crate::{
    model::{forecast::OomForecast, MemoryVerdictKind, StallVerdict},
    record::Window,
};

/// The stall verdict, as the timeline's band shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallState {
    Stalled,
    Idle,
    NotStalled,
    Exited,
}

impl StallState {
    pub fn of(v: &StallVerdict) -> Self {
        if v.is_stalled() {
            Self::Stalled
        } else if matches!(v, StallVerdict::Idle { .. }) {
            Self::Idle
        } else if matches!(v, StallVerdict::Exited) {
            Self::Exited
        } else {
            Self::NotStalled
        }
    }
}

/// One process at the end of one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessPoint {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: Option<u64>,
    /// Committed mapped bytes (every region kind).
    pub mapped_bytes: Option<u64>,
    /// Live allocations since the process was first followed (allocator probes).
    pub live_allocation_bytes: Option<f64>,
    pub memory_verdict: Option<MemoryVerdictKind>,
    pub stall: Option<StallState>,
    pub oom: Option<OomForecast>,
}

/// The points of every process of `window`.
pub fn points(window: &Window) -> Vec<ProcessPoint> {
    let mut out: Vec<ProcessPoint> = Vec::new();
    if let Some(m) = &window.memory {
        for p in &m.processes {
            out.push(ProcessPoint {
                pid: p.pid,
                comm: p.comm.clone(),
                rss_bytes: p.rss_after.filter(|_| !p.exited).map(|r| r.total),
                mapped_bytes: (!p.exited).then(|| p.mapped_after.values().sum()),
                live_allocation_bytes: p.allocations.as_ref().map(|a| a.live_bytes),
                memory_verdict: p.verdict.as_ref().map(|v| v.kind),
                stall: None,
                oom: p.oom.clone(),
            });
        }
    }
    if let Some(w) = &window.waits {
        for p in &w.processes {
            let state = Some(StallState::of(&p.verdict));
            match out.iter_mut().find(|q| q.pid == p.pid) {
                Some(q) => q.stall = state,
                None => out.push(ProcessPoint {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    stall: state,
                    ..Default::default()
                }),
            }
        }
    }
    out
}

/// The verdict words of an interval row, e.g. `LEAK`, `RETENTION · STALLED`.
pub fn verdict_words(p: &ProcessPoint) -> Vec<&'static str> {
    let mut words = Vec::new();
    if let Some(kind) = p.memory_verdict {
        words.push(memory_word(kind));
    }
    if p.stall == Some(StallState::Stalled) {
        words.push("STALLED");
    }
    words
}

/// The memory verdict in one or two words.
pub fn memory_word(kind: MemoryVerdictKind) -> &'static str {
    match kind {
        MemoryVerdictKind::Leak => "LEAK",
        MemoryVerdictKind::Retention => "RETENTION",
        MemoryVerdictKind::MappedGrowth => "MAPPED GROWTH",
        MemoryVerdictKind::NoGrowth => "NO GROWTH",
        MemoryVerdictKind::HeapGrowthUnexplained => "HEAP GROWTH",
        MemoryVerdictKind::GrowthStopped => "GROWTH STOPPED",
        MemoryVerdictKind::Periodic => "PERIODIC",
        MemoryVerdictKind::Growing => "GROWING",
    }
}

/// One process across the intervals, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSeries {
    pub pid: u32,
    pub comm: String,
    /// (seconds since the Unix epoch at the interval's end, the point).
    pub points: Vec<(f64, ProcessPoint)>,
}

impl ProcessSeries {
    /// The forecast of the newest interval, if it had one.
    pub fn latest_forecast(&self) -> Option<&OomForecast> {
        self.points.last().and_then(|(_, p)| p.oom.as_ref())
    }
}

/// Every process of the interval captures among `captures`, in the order they first
/// appear, each with its points oldest first.
pub fn series(captures: &[Found]) -> Vec<ProcessSeries> {
    let mut intervals: Vec<(f64, &Found)> = captures
        .iter()
        .filter(|c| c.kind == CaptureKind::Interval)
        .filter_map(|c| Some((ended_unix(c)?, c)))
        .collect();
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<ProcessSeries> = Vec::new();
    for (t, c) in intervals {
        let Some(meta) = &c.meta else { continue };
        for p in &meta.processes {
            let i = match out.iter().position(|s| s.pid == p.pid && s.comm == p.comm) {
                Some(i) => i,
                None => {
                    out.push(ProcessSeries {
                        pid: p.pid,
                        comm: p.comm.clone(),
                        points: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[i].points.push((t, p.clone()));
        }
    }
    out
}

/// When a capture ended, from its `capture.json` (its directory time otherwise).
fn ended_unix(c: &Found) -> Option<f64> {
    let parsed = c.meta.as_ref().and_then(|m| {
        time::OffsetDateTime::parse(&m.ended, &time::format_description::well_known::Rfc3339).ok()
    });
    let t = parsed.unwrap_or(c.time);
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::layout::CaptureMeta;
    use time::macros::datetime;

    fn capture(second: i64, points: Vec<ProcessPoint>) -> Found {
        let t = datetime!(2026-11-24 14:00 UTC) + time::Duration::seconds(second);
        Found {
            kind: CaptureKind::Interval,
            path: "x".into(),
            rel: format!("c{second}"),
            time: t,
            meta: Some(CaptureMeta {
                ended: crate::daemon::layout::rfc3339(t + time::Duration::seconds(3)),
                processes: points,
                ..Default::default()
            }),
        }
    }

    fn point(pid: u32, rss: u64) -> ProcessPoint {
        ProcessPoint {
            pid,
            comm: "leaky".into(),
            rss_bytes: Some(rss),
            memory_verdict: Some(MemoryVerdictKind::Leak),
            stall: Some(StallState::Stalled),
            ..Default::default()
        }
    }

    /// Check that points are gathered per process in time order whatever the order of
    /// the captures, and that the row words come from the typed verdicts.
    #[test]
    fn series_per_process_in_time_order() {
        let s = series(&[
            capture(6, vec![point(1, 30), point(2, 5)]),
            capture(0, vec![point(1, 10)]),
            capture(3, vec![point(1, 20)]),
        ]);
        assert_eq!(s.len(), 2);
        let rss: Vec<u64> = s[0].points.iter().filter_map(|p| p.1.rss_bytes).collect();
        assert_eq!(rss, [10, 20, 30]);
        assert_eq!(s[1].points.len(), 1);
        assert_eq!(verdict_words(&s[0].points[0].1), ["LEAK", "STALLED"]);
        assert!(s[0].latest_forecast().is_none());
    }
}
