//! Writing a capture's files into the output directory.
use std::path::Path;

use anyhow::Context as _;

use crate::{
    layout::{CaptureFile, CaptureLayout, View},
    model::{Counters, MemoryReport, WaitReport},
    render::{diff, folded, folded::Half, pprof, report, svg, verdict, waits},
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
/// directory never mixes two captures.
pub fn write_all(
    dir: &Path,
    memory: Option<&MemoryReport>,
    waits: Option<&WaitReport>,
    counters: &Counters,
    window_secs: f64,
) -> anyhow::Result<()> {
    let mut text = String::new();
    let mut json = serde_json::Map::new();
    if let Some(report) = memory {
        text.push_str(&report::text(report));
        json.insert("memory".into(), report::json(report));
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
        json.insert("events_lost".into(), counters.lost.into());
    }
    if let Some(w) = waits {
        text.push('\n');
        text.push_str(&waits::text(w));
        json.insert(
            "waits".into(),
            serde_json::to_value(w).context("encoding waits")?,
        );
    }
    json.insert("counters".into(), counters_json(counters));
    let json = serde_json::to_string_pretty(&json).context("encoding report.json")?;
    let mut written = vec![CaptureFile::ReportText, CaptureFile::ReportJson];
    write(dir, CaptureFile::ReportText, text.as_bytes())?;
    write(dir, CaptureFile::ReportJson, json.as_bytes())?;

    let mut meta = pprof_meta(window_secs);
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
    }
    remove_stale(dir, &written);
    Ok(())
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
    ];
    for file in views.into_iter().flat_map(view_files) {
        if !written.contains(&file) {
            let _ = std::fs::remove_file(CaptureLayout::new(dir).path(file));
        }
    }
}

/// When a window of `window_secs` that ends now started.
fn pprof_meta(window_secs: f64) -> pprof::CaptureMeta {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let duration_ns = (window_secs.max(0.0) * 1e9) as i64;
    pprof::CaptureMeta {
        start_unix_ns: (now.as_nanos() as i64).saturating_sub(duration_ns),
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

/// The kernel-side counters of the whole capture, whatever was recorded: what
/// `cargo xtask bench` reads to report events seen, sampled and lost.
fn counters_json(c: &Counters) -> serde_json::Value {
    serde_json::json!({
        "seen": c.seen,
        "sampled": c.sampled,
        "lost": c.lost,
        "stack_read_failed": c.stack_read_failed,
        "decode_errors": c.decode_errors,
        "short_waits": c.short_waits,
        "futex_wakes": c.futex_wakes,
    })
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

fn write_memory(dir: &Path, report: &MemoryReport) -> anyhow::Result<()> {
    let counts = folded::memory_counts(report);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let lines = folded::lines(counts);
    let view = FlameView {
        view: View::Memory,
        title: format!("Memory growth: {}", process_names(report)),
        subtitle: format!(
            "live bytes created in a {:.1} s window and still mapped: {} (sampled every {} on average)",
            report.window_secs,
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
            "bytes allocated in a {:.1} s window and not freed: {} (sampled every {} on average)",
            report.window_secs,
            human_bytes(total as f64),
            human_bytes(report.alloc_sample_bytes as f64)
        ),
        count_name: "bytes",
        flavor: svg::Flavor::Memory,
    };
    write_view(dir, &view, &lines)
}

/// `memory-diff.svg`: live allocation growth of the second half of the window against
/// the first (red: grows faster now; blue: grew before, slower now).
fn write_memory_diff(dir: &Path, report: &MemoryReport) -> anyhow::Result<()> {
    let first = folded::allocation_lines(report, Half::First);
    let second = folded::allocation_lines(report, Half::Second);
    let lines = diff::differential_lines(&first, &second).context("merging the two halves")?;
    let split = report
        .processes
        .iter()
        .find_map(|p| p.allocations.as_ref().map(|a| a.split_secs))
        .unwrap_or(report.window_secs / 2.0);
    let view = FlameView {
        view: View::MemoryDiff,
        title: format!(
            "Live allocation growth, second half vs first: {}",
            process_names(report)
        ),
        subtitle: format!(
            "widths: growth in {split:.1}-{:.1} s; red grew more than in 0-{split:.1} s, blue less",
            report.window_secs
        ),
        count_name: "bytes",
        flavor: svg::Flavor::Memory,
    };
    write_view(dir, &view, &lines)
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
    let folded_text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    write(dir, CaptureFile::Folded(view.view), folded_text.as_bytes())?;
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
