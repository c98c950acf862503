//! What `record` and `stalls` print when they end: the verdict of each process on one
//! line, then each file written with the command that opens it and what it is for. The
//! answer goes where the engineer is looking (the terminal), not only into report.txt.
use std::{fmt::Write as _, path::Path};

use super::verdict;
use crate::{
    layout::{CaptureFile, CaptureLayout, View},
    model::{MemoryReport, WaitReport},
};

/// One line per process, `comm (pid N): verdict`: the memory headline and, when waits
/// were recorded too, the stall verdict's short form after ` · `; only waits: the
/// stall verdict's full sentence.
pub fn verdict_lines(memory: Option<&MemoryReport>, waits: Option<&WaitReport>) -> Vec<String> {
    let mut order: Vec<(u32, &str)> = Vec::new();
    for p in memory.iter().flat_map(|m| &m.processes) {
        order.push((p.pid, &p.comm));
    }
    for p in waits.iter().flat_map(|w| &w.processes) {
        if !order.iter().any(|(pid, _)| *pid == p.pid) {
            order.push((p.pid, &p.comm));
        }
    }
    order
        .into_iter()
        .map(|(pid, comm)| {
            let mem = memory
                .and_then(|m| m.processes.iter().find(|p| p.pid == pid))
                .map(|p| match &p.verdict {
                    Some(v) => verdict::headline(v),
                    None => "memory: no verdict (nothing recorded for this process)".into(),
                });
            let stall = waits
                .and_then(|w| w.processes.iter().find(|p| p.pid == pid))
                .map(|p| &p.verdict);
            let text = match (mem, stall) {
                (Some(m), Some(s)) => format!("{m} · {}", verdict::stall_short(s)),
                (Some(m), None) => m,
                (None, Some(s)) => verdict::stall_line(s),
                (None, None) => String::new(),
            };
            format!("{comm} (pid {pid}): {text}")
        })
        .collect()
}

/// How to open a capture file, and what it shows.
fn how_and_why(file: CaptureFile) -> Option<(&'static str, &'static str)> {
    Some(match file {
        CaptureFile::Svg(View::Allocations) => (
            "open",
            "live allocations by stack: who allocated what was not freed",
        ),
        CaptureFile::Svg(View::Memory) => ("open", "mapped memory growth by stack"),
        CaptureFile::Svg(View::MemoryDiff) => (
            "open",
            "allocation growth, second half of the window vs the first",
        ),
        CaptureFile::Svg(View::Waits) => ("open", "blocked time by stack: what threads wait on"),
        CaptureFile::ReportText => ("less", "the verdicts with their numbers and top stacks"),
        CaptureFile::ReportJson => ("jq .", "the same report for scripts"),
        CaptureFile::Pprof(View::Allocations) => (
            "go tool pprof -http=:",
            "live allocations for pprof (-list shows lines)",
        ),
        CaptureFile::Pprof(View::Memory) => ("go tool pprof -http=:", "memory growth for pprof"),
        CaptureFile::Pprof(View::Waits) => ("go tool pprof -http=:", "blocked time for pprof"),
        _ => return None,
    })
}

/// The order files are listed in: the pictures with the verdict first.
const ORDER: &[CaptureFile] = &[
    CaptureFile::Svg(View::Allocations),
    CaptureFile::Svg(View::Memory),
    CaptureFile::Svg(View::Waits),
    CaptureFile::Svg(View::MemoryDiff),
    CaptureFile::ReportText,
    CaptureFile::ReportJson,
    CaptureFile::Pprof(View::Allocations),
    CaptureFile::Pprof(View::Memory),
    CaptureFile::Pprof(View::Waits),
];

/// The lines `record` ends with.
pub fn end_of_run(
    memory: Option<&MemoryReport>,
    waits: Option<&WaitReport>,
    dir: &Path,
    written: &[CaptureFile],
) -> String {
    let mut out = String::new();
    let lines = verdict_lines(memory, waits);
    if lines.is_empty() {
        out.push_str("no target process was seen in the window\n");
    }
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let layout = CaptureLayout::new(dir);
    let listed: Vec<(String, &str)> = ORDER
        .iter()
        .filter(|f| written.contains(f))
        .filter_map(|&f| {
            let (how, why) = how_and_why(f)?;
            Some((format!("{how} {}", layout.path(f).display()), why))
        })
        .collect();
    let width = listed.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let _ = writeln!(out, "files written to {}:", dir.display());
    for (command, why) in &listed {
        let _ = writeln!(out, "  {command:<width$}  {why}");
    }
    let folded: Vec<String> = written
        .iter()
        .filter(|f| matches!(f, CaptureFile::Folded(_)))
        .map(|f| f.name())
        .collect();
    if !folded.is_empty() {
        let _ = writeln!(
            out,
            "  folded stacks for flamegraph.pl, inferno or speedscope: {}",
            folded.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        MemoryVerdict, MemoryVerdictKind, Numbers, ProcessMemory, ProcessWaits, StallVerdict,
    };

    fn memory() -> MemoryReport {
        MemoryReport {
            processes: vec![ProcessMemory {
                pid: 13750,
                comm: "leaky".into(),
                verdict: Some(MemoryVerdict {
                    kind: MemoryVerdictKind::Leak,
                    growth: 62.5 * 1024.0 * 1024.0,
                    top_share_pct: 100.0,
                    culprit: "leak_here (from main)".into(),
                    numbers: Numbers::default(),
                    stacks: vec![],
                    advice: None,
                    also: vec![],
                    assessment: None,
                    heap_unseen: false,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn waits(pid: u32, verdict: StallVerdict) -> WaitReport {
        WaitReport {
            processes: vec![ProcessWaits {
                pid,
                comm: "leaky".into(),
                identity: Default::default(),
                threads: 1,
                verdict,
                completed: vec![],
                in_flight: vec![],
                futexes: vec![],
                observed_ns: 1,
                async_census: None,
                requests: Vec::new(),
                peers: Vec::new(),
            }],
            ..Default::default()
        }
    }

    /// Check that each process gets one verdict line, memory and stall together, and
    /// that a process only in the wait report still gets its line.
    #[test]
    fn one_verdict_line_per_process() {
        let m = memory();
        let w = waits(
            13750,
            StallVerdict::Progressing {
                stuck: 0,
                threads: 1,
            },
        );
        let lines = verdict_lines(Some(&m), Some(&w));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("leaky (pid 13750): LEAK: live allocations grew +62.5 MiB"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(" · not stalled"), "{}", lines[0]);
        let other = waits(99, StallVerdict::Exited);
        let lines = verdict_lines(Some(&m), Some(&other));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[1].starts_with("leaky (pid 99): exited before"),
            "{}",
            lines[1]
        );
    }

    /// Check that the files written are listed with how to open them and what they are
    /// for, the allocation flamegraph first, and files not written are not listed.
    #[test]
    fn lists_files_with_their_purpose() {
        let m = memory();
        let written = [
            CaptureFile::ReportText,
            CaptureFile::ReportJson,
            CaptureFile::Folded(View::Memory),
            CaptureFile::Svg(View::Memory),
            CaptureFile::Pprof(View::Memory),
            CaptureFile::Folded(View::Allocations),
            CaptureFile::Svg(View::Allocations),
            CaptureFile::Pprof(View::Allocations),
        ];
        let text = end_of_run(Some(&m), None, Path::new("/tmp/out"), &written);
        let alloc = text.find("open /tmp/out/allocations.svg").expect(&text);
        let mem = text.find("open /tmp/out/memory.svg").expect(&text);
        assert!(alloc < mem, "{text}");
        assert!(text.contains("less /tmp/out/report.txt"), "{text}");
        assert!(
            text.contains("go tool pprof -http=: /tmp/out/allocations.pb.gz"),
            "{text}"
        );
        assert!(!text.contains("waits.svg"), "{text}");
        assert!(text.contains("allocations.folded"), "{text}");
        assert!(text.starts_with("leaky (pid 13750): LEAK"), "{text}");
    }
}
