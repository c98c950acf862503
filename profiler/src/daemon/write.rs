//! Writing one capture directory: the files `profiler record` writes for a window,
//! then `capture.json` with the headline lines the index shows.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use time::OffsetDateTime;

use super::layout::{self, CaptureKind, CaptureMeta};
use crate::{
    layout::CaptureFile,
    record::{output, Window},
    units::human_bytes,
};

/// A capture directory to write: what made it, the span it covers, and for a snapshot
/// the process and the file that says why.
pub struct CaptureWrite<'a> {
    pub kind: CaptureKind,
    pub started: OffsetDateTime,
    pub ended: OffsetDateTime,
    /// (pid, comm) of a snapshot's process.
    pub process: Option<(u32, &'a str)>,
    pub cgroup: Option<String>,
    /// (file name, text): why a snapshot was taken (`oom.txt`, …).
    pub extra: Option<(&'a str, &'a str)>,
}

impl CaptureWrite<'_> {
    /// Create the capture directory under `out`, write the window's files and, last,
    /// `capture.json`. Returns the directory.
    pub fn write(&self, out: &Path, window: &Window) -> anyhow::Result<PathBuf> {
        let stamp_time = if self.kind == CaptureKind::Interval {
            self.started
        } else {
            self.ended
        };
        let dir = layout::create_capture_dir(
            out,
            self.kind,
            stamp_time,
            self.process.map(|(pid, comm)| (comm, pid)),
        )
        .with_context(|| format!("creating a capture directory in {}", out.display()))?;
        // A capture that cannot be written whole (a full disk) leaves nothing behind:
        // the daemon marks it failed in the index instead.
        match self.fill(&dir, window) {
            Ok(()) => Ok(dir),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The window's files, the snapshot's reason and, last, `capture.json`.
    fn fill(&self, dir: &Path, window: &Window) -> anyhow::Result<()> {
        window_files(dir, window)?;
        if let Some((name, text)) = self.extra {
            layout::write_atomic(&dir.join(name), text.as_bytes())
                .with_context(|| format!("writing {}", dir.join(name).display()))?;
        }
        let mut summary = summary(window);
        if let Some((_, text)) = self.extra {
            summary.insert(0, text.lines().next().unwrap_or_default().to_string());
        }
        Finish {
            kind: self.kind,
            started: self.started,
            ended: self.ended,
            window_secs: window.window_secs,
            summary,
            process: self.process,
            cgroup: self.cgroup.clone(),
            latency_ms: None,
            processes: super::timeline::points(window),
        }
        .write(dir)
        .with_context(|| format!("writing {}", dir.join(CaptureFile::Meta.name()).display()))
    }
}

/// Write the window's files into `dir` (already created and marked). Returns the names
/// of the files written.
pub fn window_files(dir: &Path, window: &Window) -> anyhow::Result<Vec<String>> {
    output::write_all(dir, window)?;
    Ok(files_in(dir))
}

/// Names of the regular files in `dir`, except the daemon's own bookkeeping.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| *n != CaptureFile::Marker.name() && *n != CaptureFile::Meta.name())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// One line per process: net committed growth of the window, bytes held by stacks,
/// and the stall verdict.
pub fn summary(window: &Window) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pids: Vec<(u32, String)> = Vec::new();
    if let Some(m) = &window.memory {
        pids.extend(m.processes.iter().map(|p| (p.pid, p.comm.clone())));
    }
    if let Some(w) = &window.waits {
        for p in &w.processes {
            if !pids.iter().any(|(pid, _)| *pid == p.pid) {
                pids.push((p.pid, p.comm.clone()));
            }
        }
    }
    for (pid, comm) in pids {
        let mut parts = Vec::new();
        if let Some(p) = window
            .memory
            .as_ref()
            .and_then(|m| m.processes.iter().find(|p| p.pid == pid))
        {
            let net: i64 = p.net_by_kind().values().sum();
            parts.push(format!(
                "committed {}{} in the window, {} held by stacks sampled {}{}",
                if net >= 0 { "+" } else { "" },
                human_bytes(net as f64),
                human_bytes(p.attributed_growth()),
                window
                    .memory
                    .as_ref()
                    .map_or("in the window", crate::render::report::span),
                if p.exited { ", exited" } else { "" }
            ));
        }
        if let Some(p) = window
            .waits
            .as_ref()
            .and_then(|w| w.processes.iter().find(|p| p.pid == pid))
        {
            parts.push(crate::render::verdict::stall_line(&p.verdict));
        }
        lines.push(format!("{comm} ({pid}): {}", parts.join("; ")));
    }
    if lines.is_empty() {
        lines.push("no live target in this window".into());
    }
    if window.counters.lost > 0 {
        lines.push(format!(
            "{} events lost (ring buffer full)",
            window.counters.lost
        ));
    }
    lines
}

/// Complete the capture in `dir`: write its `capture.json`.
pub struct Finish<'a> {
    pub kind: CaptureKind,
    pub started: OffsetDateTime,
    pub ended: OffsetDateTime,
    pub window_secs: f64,
    pub summary: Vec<String>,
    pub process: Option<(u32, &'a str)>,
    pub cgroup: Option<String>,
    pub latency_ms: Option<f64>,
    pub processes: Vec<super::timeline::ProcessPoint>,
}

impl Finish<'_> {
    pub fn write(self, dir: &Path) -> std::io::Result<()> {
        let meta = CaptureMeta {
            kind: Some(self.kind),
            started: layout::rfc3339(self.started),
            ended: layout::rfc3339(self.ended),
            window_secs: self.window_secs,
            summary: self.summary,
            files: files_in(dir),
            pid: self.process.map(|(pid, _)| pid),
            comm: self.process.map(|(_, comm)| comm.to_string()),
            cgroup: self.cgroup,
            latency_ms: self.latency_ms,
            processes: self.processes,
        };
        layout::write_meta(dir, &meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Counters, MemoryReport, ProcessMemory, ProcessWaits, StallVerdict, WaitReport,
    };

    /// Check that the summary has one line per process with growth and verdict, and
    /// says so when nothing was alive.
    #[test]
    fn one_summary_line_per_process() {
        let memory = MemoryReport {
            processes: vec![ProcessMemory {
                pid: 7,
                comm: "leaky".into(),
                mapped_before: [("anon".to_string(), 1 << 20)].into(),
                mapped_after: [("anon".to_string(), 3 << 20)].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let waits = WaitReport {
            processes: vec![ProcessWaits {
                pid: 7,
                comm: "leaky".into(),
                identity: Default::default(),
                threads: 1,
                verdict: StallVerdict::Exited,
                completed: vec![],
                in_flight: vec![],
                futexes: vec![],
                observed_ns: 0,
                async_census: None,
                requests: Vec::new(),
                peers: Vec::new(),
            }],
            ..Default::default()
        };
        let window = Window {
            memory: Some(memory),
            waits: Some(waits),
            counters: Counters::default(),
            window_secs: 1.0,
            ended_unix_ns: None,
        };
        let lines = summary(&window);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("leaky (7): committed +2.0 MiB"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("exited before the end"), "{}", lines[0]);
        let empty = Window {
            memory: None,
            waits: None,
            counters: Counters::default(),
            window_secs: 1.0,
            ended_unix_ns: None,
        };
        assert_eq!(summary(&empty), vec!["no live target in this window"]);
    }
}
