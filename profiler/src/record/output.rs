//! Writing a capture's files into the output directory.
use std::path::Path;

use anyhow::Context as _;

use crate::{
    collect::Counters,
    render::{folded, report, svg, waits, waits::WaitReport, MemoryReport},
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

/// Write the memory files, the wait files and report.txt / report.json.
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
        write_memory(dir, report)?;
        text.push_str(&report::text(report));
        json.insert("memory".into(), report::json(report));
    } else {
        text.push_str(&format!(
            "profiler record: window {window_secs:.1} s; events seen {}, events lost {}\n",
            counters.seen, counters.lost
        ));
        json.insert("events_lost".into(), counters.lost.into());
    }
    if let Some(w) = waits {
        write_waits(dir, w, window_secs)?;
        text.push('\n');
        text.push_str(&waits::text(w));
        json.insert(
            "waits".into(),
            serde_json::to_value(w).context("encoding waits")?,
        );
    }
    write(dir, "report.txt", text.as_bytes())?;
    let json = serde_json::to_string_pretty(&json).context("encoding report.json")?;
    write(dir, "report.json", json.as_bytes())
}

fn write_waits(dir: &Path, report: &WaitReport, window_secs: f64) -> anyhow::Result<()> {
    let lines = waits::folded_lines(report);
    write(
        dir,
        "waits.folded",
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    )?;
    let names: Vec<String> = report
        .processes
        .iter()
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    let verdicts: Vec<String> = report.processes.iter().map(|p| p.verdict.line()).collect();
    let mut svg_bytes = Vec::new();
    svg::flamegraph(
        &lines,
        &format!("Blocked on: {}", names.join(", ")),
        &format!(
            "off-CPU time in a {window_secs:.1} s window, waits still in progress included; {}",
            verdicts.join("; ")
        ),
        "us",
        svg::Flavor::OffCpu,
        &mut svg_bytes,
    )
    .context("rendering waits.svg")?;
    write(dir, "waits.svg", &svg_bytes)
}

fn write_memory(dir: &Path, report: &MemoryReport) -> anyhow::Result<()> {
    let lines = folded::memory_lines(report);
    write(
        dir,
        "memory.folded",
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    )?;
    let total: u64 = lines
        .iter()
        .filter_map(|l| folded::parse_line(l))
        .map(|(_, n)| n)
        .sum();
    let title = format!("Memory growth: {}", process_names(report));
    let subtitle = format!(
        "live bytes created in a {:.1} s window and still mapped: {} (sampled every {} on average)",
        report.window_secs,
        human_bytes(total as f64),
        human_bytes(report.sample_bytes as f64)
    );
    let mut svg_bytes = Vec::new();
    svg::flamegraph(
        &lines,
        &title,
        &subtitle,
        "bytes",
        svg::Flavor::Memory,
        &mut svg_bytes,
    )
    .context("rendering memory.svg")?;
    write(dir, "memory.svg", &svg_bytes)
}

fn process_names(report: &MemoryReport) -> String {
    let names: Vec<String> = report
        .processes
        .iter()
        .map(|p| format!("{} ({})", p.comm, p.pid))
        .collect();
    names.join(", ")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
