//! Time to OOM across the daemon's intervals: each target's resident memory at the end
//! of every interval, and the forecast of [`crate::analyze::memory::oom`] under the
//! memory limit it runs into, attached to the interval's memory report.
use std::{collections::HashMap, time::Instant};

use crate::{
    analyze::memory::{oom, trend::Point},
    record::Window,
    targets::memory_limit::MemoryLimit,
};

/// Levels kept per process: at a one-minute interval, six hours.
pub const MAX_LEVELS: usize = 360;

/// Resident levels per process, from the daemon's start.
#[derive(Debug)]
pub struct OomWatch {
    started: Instant,
    levels: HashMap<u32, Vec<Point>>,
}

impl OomWatch {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            levels: HashMap::new(),
        }
    }

    /// Keep the resident level of every live process of `window` (ended at `now`) and
    /// give each the forecast under its limit (`limit_of`, None: unknown).
    pub fn observe(
        &mut self,
        window: &mut Window,
        now: Instant,
        limit_of: impl Fn(u32) -> Option<MemoryLimit>,
    ) {
        let Some(memory) = window.memory.as_mut() else {
            return;
        };
        let secs = now.duration_since(self.started).as_secs_f64();
        for p in &mut memory.processes {
            let Some(rss) = p.rss_after.filter(|_| !p.exited) else {
                self.levels.remove(&p.pid);
                continue;
            };
            let levels = self.levels.entry(p.pid).or_default();
            levels.push(Point {
                secs,
                bytes: rss.total as f64,
                sigma: 0.0,
            });
            let excess = levels.len().saturating_sub(MAX_LEVELS);
            levels.drain(..excess);
            p.oom = limit_of(p.pid).and_then(|limit| oom::forecast(levels, &limit));
        }
    }

    /// Forget a process that is gone (its PID may come back as another process).
    pub fn forget(&mut self, pid: u32) {
        self.levels.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{forecast::Outlook, MemoryReport, ProcessMemory},
        procfs::Rss,
        targets::memory_limit::LimitSource,
    };
    use std::time::Duration;

    fn window(pid: u32, rss_mib: u64, exited: bool) -> Window {
        Window {
            memory: Some(MemoryReport {
                processes: vec![ProcessMemory {
                    pid,
                    exited,
                    rss_after: Some(Rss {
                        total: rss_mib << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            waits: None,
            counters: Default::default(),
            window_secs: 3.0,
            ended_unix_ns: None,
        }
    }

    /// Check that intervals of steady growth give a forecast once the trend has enough
    /// points, and that an exited process loses its history.
    #[test]
    fn forecast_after_enough_intervals() {
        let t0 = Instant::now();
        let mut watch = OomWatch::new(t0);
        let limit = |_| {
            Some(MemoryLimit {
                limit_bytes: 512 << 20,
                used_bytes: 100 << 20,
                source: LimitSource::CgroupV2 {
                    cgroup: "/t".into(),
                },
            })
        };
        let mut last = None;
        for i in 0..8u64 {
            let mut w = window(7, 50 + 3 * i + (i % 2), false);
            watch.observe(&mut w, t0 + Duration::from_secs(3 * (i + 1)), limit);
            last = w.memory.unwrap().processes[0].oom.clone();
            if i < 4 {
                assert!(last.is_none(), "too few intervals at {i}");
            }
        }
        let f = last.expect("a forecast after 8 steady intervals");
        assert!(matches!(f.outlook, Outlook::Reaches { .. }), "{f:?}");
        let mut w = window(7, 80, true);
        watch.observe(&mut w, t0 + Duration::from_secs(30), limit);
        assert!(!watch.levels.contains_key(&7));
    }
}
