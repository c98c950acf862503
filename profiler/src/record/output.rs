//! Writing a capture's files into the output directory.
use std::path::Path;

use anyhow::Context as _;

use super::Window;
use crate::{
    layout::{CaptureFile, CaptureLayout, View},
    model::{MemoryReport, WaitReport},
    render::{
        async_census, diff, folded, folded::Half, pprof, report, report_json, svg, verdict, waits,
    },
    units::human_bytes,
};

/// Create `dir` and prove it is writable before anything is attached, so an unwritable
/// `--out` fails in one line instead of after the window.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(".profiler-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write to output directory {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Write report.txt and report.json first (on a filling disk the verdict is what must
/// survive), then the memory and wait views. Every file goes through a temporary name and
/// a rename, and files an earlier capture left in a reused directory are removed, so the
/// directory never mixes two captures. Returns the files written, in that order.
pub fn write_all(dir: &Path, window: &Window) -> anyhow::Result<Vec<CaptureFile>> {
    let (memory, waits) = (window.memory.as_ref(), window.waits.as_ref());
    let (counters, window_secs) = (&window.counters, window.window_secs);
    let mut text = String::new();
    if let Some(report) = memory {
        text.push_str(&report::text(report));
    } else {
        text.push_str(&format!(
            "profiler record: window {window_secs:.1} s; events seen {}, events lost {}{}\n",
            counters.seen,
            counters.lost,
            if counters.sock_records + counters.sock_table_full > 0 {
                format!(
                    "; socket records (connection ledger) {}, sockets not followed (kernel table full) {}",
                    counters.sock_records, counters.sock_table_full
                )
            } else {
                String::new()
            }
        ));
    }
    if let Some(w) = waits {
        text.push('\n');
        text.push_str(&waits::text(w));
    }
    let json = report_json::document(&report_json::Parts {
        memory,
        waits,
        counters,
        window_secs,
        ended_unix_ns: window.ended_unix_ns,
    });
    let json = serde_json::to_string_pretty(&json).context("encoding report.json")?;
    let mut written = vec![CaptureFile::ReportText, CaptureFile::ReportJson];
    write(dir, CaptureFile::ReportText, text.as_bytes())?;
    write(dir, CaptureFile::ReportJson, json.as_bytes())?;

    let mut meta = pprof_meta(window_secs, window.ended_unix_ns);
    meta.process_labels = identity_labels(memory, waits);
    if let Some(report) = memory {
        write_memory(dir, report)?;
        write_pprof(dir, View::Memory, &pprof::memory_profile(report, &meta))?;
        written.extend(view_files(View::Memory));
        if report.processes.iter().any(|p| p.allocations.is_some()) {
            write_allocations(dir, report)?;
            write_pprof(
                dir,
                View::Allocations,
                &pprof::allocations_profile(report, &meta),
            )?;
            write_memory_diff(dir, report)?;
            written.extend(view_files(View::Allocations));
            written.extend(view_files(View::MemoryDiff));
        }
    }
    if let Some(w) = waits {
        write_waits(dir, w, window_secs)?;
        write_pprof(dir, View::Waits, &pprof::waits_profile(w, &meta))?;
        written.extend(view_files(View::Waits));
        if write_waiting(dir, w)? {
            written.extend([
                CaptureFile::Folded(View::Waiting),
                CaptureFile::Svg(View::Waiting),
            ]);
        }
    }
    remove_stale(dir, &written);
    // memory-diff has no pprof file: keep the list to what exists.
    written.retain(|f| CaptureLayout::new(dir).path(*f).is_file());
    Ok(written)
}

/// Every file a view may have.
fn view_files(view: View) -> [CaptureFile; 3] {
    [
        CaptureFile::Folded(view),
        CaptureFile::Svg(view),
        CaptureFile::Pprof(view),
    ]
}

/// Remove the capture files of an earlier capture in `dir` that this one did not write
/// (a reused `--out` recorded with other views before).
fn remove_stale(dir: &Path, written: &[CaptureFile]) {
    let views = [
        View::Memory,
        View::Allocations,
        View::MemoryDiff,
        View::Waits,
        View::Waiting,
    ];
    for file in views.into_iter().flat_map(view_files) {
        if !written.contains(&file) {
            let _ = std::fs::remove_file(CaptureLayout::new(dir).path(file));
        }
    }
}

/// When a window of `window_secs` that ended at `ended_unix_ns` (else now) started.
fn pprof_meta(window_secs: f64, ended_unix_ns: Option<i64>) -> pprof::CaptureMeta {
    let now = ended_unix_ns.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as i64
    });
    let duration_ns = (window_secs.max(0.0) * 1e9) as i64;
    pprof::CaptureMeta {
        start_unix_ns: now.saturating_sub(duration_ns),
        duration_ns,
        ..Default::default()
    }
}

/// `<name>.pb.gz`: the pprof profile of one view.
fn write_pprof(dir: &Path, view: View, model: &pprof::ProfileModel) -> anyhow::Result<()> {
    let file = CaptureFile::Pprof(view);
    let bytes = pprof::to_gzip(model).with_context(|| format!("encoding {}", file.name()))?;
    write(dir, file, &bytes)
}

fn write_waits(dir: &Path, report: &WaitReport, window_secs: f64) -> anyhow::Result<()> {
    let names: Vec<String> = report
        .processes
        .iter()
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    let verdicts: Vec<String> = report
        .processes
        .iter()
        .map(|p| {
            format!(
                "{} ({}) {}",
                p.comm,
                p.pid,
                verdict::stall_short(&p.verdict)
            )
        })
        .collect();
    let view = FlameView {
        view: View::Waits,
        title: format!("Blocked on: {}", names.join(", ")),
        subtitle: format!(
            "{window_secs:.1} s window, waits in progress included; {}",
            verdicts.join("; ")
        ),
        count_name: "us",
        flavor: svg::Flavor::OffCpu,
    };
    write_view(dir, &view, &waits::folded_lines(report))
}

/// `waiting.folded` and `waiting.svg`: the suspended async calls of node targets by
/// await chain, when a census found any. Whether they were written.
fn write_waiting(dir: &Path, report: &WaitReport) -> anyhow::Result<bool> {
    let lines = async_census::folded_lines(report);
    if lines.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = report
        .processes
        .iter()
        .filter(|p| p.async_census.is_some())
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    let view = FlameView {
        view: View::Waiting,
        title: format!("Waiting in async code: {}", names.join(", ")),
        subtitle: "suspended async function calls by await chain, outermost at the bottom; \
                   width: number of calls (approximate, read from V8's heap)"
            .into(),
        count_name: "calls",
        flavor: svg::Flavor::OffCpu,
    };
    write_view(dir, &view, &lines)?;
    Ok(true)
}

fn write_memory(dir: &Path, report: &MemoryReport) -> anyhow::Result<()> {
    let counts = folded::memory_counts(report);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let lines = folded::lines(counts);
    let view = FlameView {
        view: View::Memory,
        title: format!("Memory growth: {}", process_names(report)),
        subtitle: format!(
            "{}live bytes created {} and still mapped: {} (sampled every {} on average)",
            verdicts_first(report),
            svg_span(report),
            human_bytes(total as f64),
            human_bytes(report.sample_bytes as f64)
        ),
        count_name: "bytes",
        flavor: svg::Flavor::Memory,
    };
    write_view(dir, &view, &lines)
}

fn write_allocations(dir: &Path, report: &MemoryReport) -> anyhow::Result<()> {
    let counts = folded::allocation_counts(report, Half::Whole);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let lines = folded::lines(counts);
    let view = FlameView {
        view: View::Allocations,
        title: format!("Live allocations: {}", process_names(report)),
        subtitle: format!(
            "{}bytes allocated {} and not freed: {} (sampled every {} on average)",
            verdicts_first(report),
            svg_span(report),
            human_bytes(total as f64),
            human_bytes(report.alloc_sample_bytes as f64)
        ),
        count_name: "bytes",
        flavor: svg::Flavor::Memory,
    };
    write_view(dir, &view, &lines)
}

/// `memory-diff.svg`: live allocation growth of the second half of the window against
/// the first (red: grows faster now; blue: grew before, slower now), with changes that
/// sampling explains drawn neutral. `memory-diff.folded` keeps both halves' estimates.
fn write_memory_diff(dir: &Path, report: &MemoryReport) -> anyhow::Result<()> {
    let first = folded::allocation_lines(report, Half::First);
    let second = folded::allocation_lines(report, Half::Second);
    let noise = diff::Noise::sampled(report.alloc_sample_bytes as f64);
    let differential =
        diff::significant_lines(&first, &second, Some(noise)).context("merging the two halves")?;
    let split = report
        .processes
        .iter()
        .find_map(|p| p.allocations.as_ref().map(|a| a.split_secs))
        .unwrap_or(report.window_secs / 2.0);
    let view = FlameView {
        view: View::MemoryDiff,
        title: format!(
            "Allocation growth, second half vs first: {}",
            differential.largest(human_bytes)
        ),
        subtitle: format!(
            "{}{split:.1}-{:.1} s vs 0-{split:.1} s; {}",
            verdicts_first(report),
            report.window_secs,
            differential.legend()
        ),
        count_name: "bytes",
        flavor: svg::Flavor::Memory,
    };
    write_folded(dir, view.view, &differential.merged)?;
    write_svg(dir, &view, &differential.lines)
}

/// One flamegraph view: `<name>.folded` and `<name>.svg`.
struct FlameView {
    view: View,
    title: String,
    subtitle: String,
    count_name: &'static str,
    flavor: svg::Flavor,
}

fn write_view(dir: &Path, view: &FlameView, lines: &[String]) -> anyhow::Result<()> {
    write_folded(dir, view.view, lines)?;
    write_svg(dir, view, lines)
}

fn write_folded(dir: &Path, view: View, lines: &[String]) -> anyhow::Result<()> {
    let folded_text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    write(dir, CaptureFile::Folded(view), folded_text.as_bytes())
}

fn write_svg(dir: &Path, view: &FlameView, lines: &[String]) -> anyhow::Result<()> {
    let mut svg_bytes = Vec::new();
    svg::flamegraph(
        lines,
        &view.title,
        &view.subtitle,
        view.count_name,
        view.flavor,
        &mut svg_bytes,
    )
    .with_context(|| format!("rendering {}", CaptureFile::Svg(view.view).name()))?;
    write(dir, CaptureFile::Svg(view.view), &svg_bytes)
}

/// `in a 3.0 s window`, or for a daemon `since first followed (12.0 s)`.
fn svg_span(report: &MemoryReport) -> String {
    match report.since_follow_secs {
        Some(since) => format!("since first followed ({since:.1} s)"),
        None => format!("in a {:.1} s window", report.window_secs),
    }
}

/// Most processes shown in a subtitle's verdicts; the others are counted.
const SUBTITLE_VERDICTS: usize = 3;

/// `leaky (13750) LEAK +62.5 MiB under leak_here (from main); `: the memory verdicts of
/// a subtitle, which the flamegraph must carry wherever it is opened or sent.
fn verdicts_first(report: &MemoryReport) -> String {
    let judged: Vec<String> = report
        .processes
        .iter()
        .filter_map(|p| {
            let v = p.verdict.as_ref()?;
            Some(format!(
                "{} ({}) {}",
                p.comm,
                p.pid,
                verdict::memory_short(v)
            ))
        })
        .collect();
    if judged.is_empty() {
        return String::new();
    }
    let mut text = judged
        .iter()
        .take(SUBTITLE_VERDICTS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if judged.len() > SUBTITLE_VERDICTS {
        text.push_str(&format!(
            "; {} more in report.txt",
            judged.len() - SUBTITLE_VERDICTS
        ));
    }
    text + " · "
}

fn process_names(report: &MemoryReport) -> String {
    let names: Vec<String> = report
        .processes
        .iter()
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    names.join(", ")
}

fn write(dir: &Path, file: CaptureFile, bytes: &[u8]) -> anyhow::Result<()> {
    let path = CaptureLayout::new(dir).path(file);
    write_atomic(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Write `path` through a temporary name in the same directory and a rename: a reader
/// (or a disk that fills up) never leaves a half-written file under the real name, and
/// a failed write leaves no temporary file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// pprof sample labels per process from what target selection learned: `container`
/// (the full ID), `cgroup` and `ns_pid` (its PID in its own namespace), when known.
fn identity_labels(
    memory: Option<&MemoryReport>,
    waits: Option<&WaitReport>,
) -> std::collections::BTreeMap<u32, Vec<pprof::Label>> {
    let memory = memory
        .into_iter()
        .flat_map(|m| m.processes.iter().map(|p| (p.pid, &p.identity)));
    let waits = waits
        .into_iter()
        .flat_map(|w| w.processes.iter().map(|p| (p.pid, &p.identity)));
    let mut out = std::collections::BTreeMap::new();
    for (pid, identity) in memory.chain(waits) {
        out.entry(pid).or_insert_with(|| {
            let mut labels = Vec::new();
            if let Some(c) = &identity.container {
                labels.push(pprof::Label::str("container", c.id.as_str()));
            }
            if let Some(cgroup) = &identity.cgroup {
                labels.push(pprof::Label::str("cgroup", cgroup.as_str()));
            }
            if let Some(ns_pid) = identity.ns_pid {
                labels.push(pprof::Label::str("ns_pid", ns_pid.to_string()));
            }
            labels
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProcessMemory, StackGrowth};

    /// The subtitle text of an SVG in `dir`.
    fn subtitle(dir: &Path, name: &str) -> String {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        let at = svg.find("id=\"subtitle\"").expect("a subtitle");
        let rest = &svg[at..];
        rest[rest.find('>').unwrap() + 1..rest.find("</text>").unwrap()].to_string()
    }

    /// Check that every flamegraph of a capture carries the memory verdict in its
    /// subtitle, and that the files written are returned, none that was not written.
    #[test]
    fn every_svg_subtitle_carries_the_verdict() {
        use crate::model::{AllocGrowth, AllocationView, MemoryVerdict, MemoryVerdictKind};
        let dir = std::env::temp_dir().join(format!("profiler-subtitles-{}", std::process::id()));
        prepare_dir(&dir).unwrap();
        let leak = AllocGrowth {
            frames: vec!["main".into(), "leak_here".into()],
            bytes: 64.0 * 1048576.0,
            objects: 1000.0,
            ..Default::default()
        };
        let half = |bytes| AllocGrowth {
            bytes,
            ..leak.clone()
        };
        let report = MemoryReport {
            window_secs: 8.0,
            sample_bytes: 256 << 10,
            alloc_sample_bytes: 256 << 10,
            processes: vec![ProcessMemory {
                pid: 13750,
                comm: "leaky".into(),
                allocations: Some(AllocationView {
                    growth: vec![leak.clone()],
                    first_half: vec![half(34.5 * 1048576.0)],
                    second_half: vec![half(28.0 * 1048576.0)],
                    split_secs: 4.0,
                    ..Default::default()
                }),
                verdict: Some(MemoryVerdict {
                    kind: MemoryVerdictKind::Leak,
                    growth: 64.0 * 1048576.0,
                    top_share_pct: 100.0,
                    culprit: "leak_here (from main)".into(),
                    numbers: Default::default(),
                    stacks: vec![],
                    advice: None,
                    also: vec![],
                    assessment: None,
                    heap_unseen: false,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let window = Window {
            memory: Some(report),
            waits: None,
            counters: Default::default(),
            window_secs: 8.0,
            ended_unix_ns: None,
        };
        let written = write_all(&dir, &window).unwrap();
        for name in ["memory.svg", "allocations.svg", "memory-diff.svg"] {
            let sub = subtitle(&dir, name);
            assert!(
                sub.starts_with("leaky (13750) LEAK +64.0 MiB under leak_here (from main) · "),
                "{name}: {sub}"
            );
        }
        // 138 vs 112 samples of 256 KiB: sampling noise, drawn neutral.
        let diff = subtitle(&dir, "memory-diff.svg");
        assert!(diff.ends_with("0 changed, 1 within (white)"), "{diff}");
        assert!(written.contains(&CaptureFile::Svg(View::MemoryDiff)));
        assert!(!written.contains(&CaptureFile::Pprof(View::MemoryDiff)));
        assert!(!written.contains(&CaptureFile::Svg(View::Waits)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Check that a process's container, cgroup and namespace PID reach its pprof
    /// samples as labels.
    #[test]
    fn identity_becomes_pprof_labels() {
        let id = "4f1d2c3b5a69e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3";
        let cgroup = format!("/system.slice/docker-{id}.scope");
        let report = MemoryReport {
            processes: vec![ProcessMemory {
                pid: 4242,
                comm: "svc".into(),
                identity: crate::targets::ProcessIdentity {
                    container: crate::targets::container::from_cgroup_path(&cgroup),
                    cgroup: Some(cgroup.clone()),
                    ns_pid: Some(1),
                },
                growth: vec![StackGrowth {
                    kind: crate::ledger::RegionKind::Anon,
                    frames: vec!["main".into()],
                    bytes: 4096.0,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let meta = pprof::CaptureMeta {
            process_labels: identity_labels(Some(&report), None),
            ..Default::default()
        };
        let model = pprof::memory_profile(&report, &meta);
        let labels: Vec<(String, String)> = model.samples[0]
            .labels
            .iter()
            .filter_map(|l| match &l.value {
                pprof::LabelValue::Str(v) => Some((l.key.clone(), v.clone())),
                pprof::LabelValue::Num { .. } => None,
            })
            .collect();
        for expected in [
            ("pid", "4242"),
            ("container", id),
            ("cgroup", cgroup.as_str()),
            ("ns_pid", "1"),
        ] {
            assert!(
                labels
                    .iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == expected),
                "{expected:?} in {labels:?}"
            );
        }
    }
}
