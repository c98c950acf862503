//! Captures outside the interval schedule: an OOM kill of a target, its RSS crossing
//! `--rss-threshold`, the stall verdict firing. Each finishes the window of that one
//! process (probes still attached) and writes it with the file that says why.
use std::time::Instant;

use time::OffsetDateTime;

use super::Daemon;
use crate::{
    collect::monotonic_now_ns,
    daemon::{
        layout::{self, CaptureKind},
        snapshots,
    },
    events::OomRecord,
    layout::CaptureFile,
    procfs,
    record::Window,
};

impl Daemon {
    /// The OOM killer chose a target: write its ledger as it is now, before the exit.
    pub(super) fn oom_snapshot(&mut self, oom: &OomRecord, trigger: Option<&[String]>) {
        let pid = oom.victim_pid;
        let comm = self
            .capture
            .session
            .state
            .targets
            .get(&pid)
            .map(|t| t.comm.clone())
            .or_else(|| procfs::read_comm(pid).ok())
            .unwrap_or_else(|| "unknown".into());
        let cgroup = self
            .cgroups
            .get(&pid)
            .cloned()
            .or_else(|| crate::targets::read_memory_cgroup(pid));
        if let Some(c) = &cgroup {
            self.cgroups.insert(pid, c.clone());
        }
        let text = snapshots::oom_text(oom, &comm, cgroup.as_deref(), trigger);
        let Ok(mut window) = self.finish(Some(pid)) else {
            return;
        };
        // The victim is being killed: its threads' waits say nothing useful.
        window.waits = None;
        let ended = OffsetDateTime::now_utc();
        match self.write_capture(
            CaptureKind::Oom,
            self.window_started,
            ended,
            &window,
            Some((pid, &comm)),
            Some((&CaptureFile::Oom.name(), &text)),
        ) {
            Ok(dir) => {
                let latency_ms = monotonic_now_ns().saturating_sub(oom.time_ns) as f64 / 1e6;
                self.snapshots_written += 1;
                eprintln!(
                    "profiler: OOM kill of {comm} ({pid}); snapshot {} written {latency_ms:.1} ms after the kill",
                    dir.display()
                );
                self.set_latency(&dir, latency_ms);
                self.write_index();
            }
            Err(e) => {
                eprintln!("profiler: warning: OOM snapshot of {comm} ({pid}) not written: {e:#}");
                self.capture_failed(CaptureKind::Oom, OffsetDateTime::now_utc(), &e);
            }
        }
    }

    /// The victim's stack when it ran the OOM killer itself, root first.
    pub(super) fn trigger_stack(&mut self, oom: &OomRecord) -> Option<Vec<String>> {
        let stack = oom.stack.as_ref()?;
        let id = self.capture.session.stack_of(oom.victim_pid, stack)?;
        Some(self.capture.session.stacks().get(id)?.names.clone())
    }

    /// Record the snapshot latency in `capture.json` (measured once the files exist).
    fn set_latency(&self, dir: &std::path::Path, latency_ms: f64) {
        let path = dir.join(CaptureFile::Meta.name());
        let Some(mut meta) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<layout::CaptureMeta>(&t).ok())
        else {
            return;
        };
        meta.latency_ms = Some(latency_ms);
        let _ = layout::write_meta(dir, &meta);
    }

    /// Snapshot targets whose RSS crossed the threshold.
    pub(super) fn check_rss(&mut self) {
        let Some(threshold) = self.opts.rss_threshold else {
            return;
        };
        let now = Instant::now();
        let live: Vec<(u32, String)> = self
            .capture
            .session
            .state
            .targets
            .values()
            .filter(|t| !t.exited)
            .map(|t| (t.pid, t.comm.clone()))
            .collect();
        for (pid, comm) in live {
            let Ok(rss) = procfs::read_rss(pid) else {
                continue;
            };
            if !self.triggers.rss(pid, rss.total, threshold, now) {
                continue;
            }
            let Ok(window) = self.finish(Some(pid)) else {
                continue;
            };
            let text = format!(
                "RSS of {comm} ({pid}) crossed {}: {} resident (anon {}, file {}, shmem {})\n",
                crate::units::human_bytes(threshold as f64),
                crate::units::human_bytes(rss.total as f64),
                crate::units::human_bytes(rss.anon as f64),
                crate::units::human_bytes(rss.file as f64),
                crate::units::human_bytes(rss.shmem as f64),
            );
            self.snapshot(
                CaptureKind::Rss,
                pid,
                &comm,
                &window,
                (&CaptureFile::Rss.name(), &text),
            );
        }
    }

    /// Snapshot targets for which the stall verdict fires.
    pub(super) fn check_stalls(&mut self) {
        let report = match self.capture.wait_report(None) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("profiler: stall check: {e:#}");
                return;
            }
        };
        let now = Instant::now();
        for p in &report.processes {
            if !p.verdict.is_stalled() || !self.triggers.stall(p.pid, now) {
                continue;
            }
            let mut waits = report.clone();
            waits.processes.retain(|q| q.pid == p.pid);
            if let Some(q) = waits.processes.first_mut() {
                q.async_census = self.capture.async_census_of(p.pid);
            }
            let window = Window {
                memory: None,
                waits: Some(waits),
                counters: Default::default(),
                window_secs: p.observed_ns as f64 / 1e9,
                ended_unix_ns: i64::try_from(
                    time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
                )
                .ok(),
            };
            let text = format!(
                "{} ({}): {}\n",
                p.comm,
                p.pid,
                crate::render::verdict::stall_line(&p.verdict)
            );
            self.snapshot(
                CaptureKind::Stall,
                p.pid,
                &p.comm,
                &window,
                (&CaptureFile::Stall.name(), &text),
            );
        }
    }

    fn snapshot(
        &mut self,
        kind: CaptureKind,
        pid: u32,
        comm: &str,
        window: &Window,
        extra: (&str, &str),
    ) {
        let ended = OffsetDateTime::now_utc();
        match self.write_capture(
            kind,
            self.window_started,
            ended,
            window,
            Some((pid, comm)),
            Some(extra),
        ) {
            Ok(dir) => {
                self.snapshots_written += 1;
                eprintln!("profiler: {}", extra.1.trim_end());
                eprintln!("profiler: snapshot written to {}", dir.display());
                self.write_index();
            }
            Err(e) => {
                eprintln!("profiler: warning: snapshot of {comm} ({pid}) not written: {e:#}");
                self.capture_failed(kind, ended, &e);
            }
        }
    }
}
