//! `profiler diff A B`: a differential flamegraph of two captures.
//!
//! A and B are capture directories (as `record` writes them) or folded files. For
//! directories the view is chosen by name: the one asked for, which both must have, or
//! by default `allocations` when both have it and `memory` otherwise.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::layout::{CaptureFile, View};
use crate::render::{diff, svg};
use crate::safe_file::{self, FileKind};
use crate::units::human_bytes;

/// Options of `profiler diff`.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    pub before: PathBuf,
    pub after: PathBuf,
    /// `allocations`, `memory` or `waits`; None: allocations if both captures have
    /// it, else memory.
    pub view: Option<String>,
    pub out: PathBuf,
}

/// What `diff` compared.
#[derive(Debug)]
pub struct DiffSummary {
    pub view: String,
    pub stacks: usize,
    /// Stacks whose change sampling cannot explain (coloured).
    pub significant: usize,
    /// Stacks whose change lies within sampling noise (neutral); None when the noise
    /// is unknown (folded files).
    pub within_noise: Option<usize>,
}

/// Write the differential SVG: changes that sampling explains are drawn neutral
/// (see [`diff::significant_lines`]).
pub fn diff(opts: &DiffOptions) -> anyhow::Result<DiffSummary> {
    let view = choose_view(opts);
    let before = read_view(&opts.before, &view)?;
    let after = read_view(&opts.after, &view)?;
    let view_name = view.as_str();
    let noise = match (
        sample_rate(&opts.before, view_name),
        sample_rate(&opts.after, view_name),
    ) {
        (Some(before_rate), Some(after_rate)) => Some(diff::Noise {
            before_rate,
            after_rate,
        }),
        _ => None,
    };
    let differential =
        diff::significant_lines(&before, &after, noise).context("merging the profiles")?;
    let waits = view_name == "waits";
    let mut svg_bytes = Vec::new();
    svg::flamegraph(
        &differential.lines,
        &format!(
            "{view_name} growth: {} ({} vs {})",
            differential.largest(|v| if waits {
                format!("{:.1} ms", v / 1000.0)
            } else {
                human_bytes(v)
            }),
            name(&opts.after),
            name(&opts.before),
        ),
        &format!("{}; widths: {}", differential.legend(), name(&opts.after)),
        if waits { "us" } else { "bytes" },
        svg::Flavor::Memory,
        &mut svg_bytes,
    )
    .context("rendering the differential flamegraph")?;
    std::fs::write(&opts.out, svg_bytes)
        .with_context(|| format!("cannot write {}", opts.out.display()))?;
    Ok(DiffSummary {
        view,
        stacks: differential.lines.len(),
        significant: differential.significant.len(),
        within_noise: differential.noise.map(|_| differential.within_noise),
    })
}

/// Bytes per stack sample of `view` in a capture directory, from its report.json; 0 for
/// waits (every wait over the threshold is recorded, none sampled). None for a folded
/// file, or a report that does not say.
fn sample_rate(path: &Path, view: &str) -> Option<f64> {
    if !path.is_dir() {
        return None;
    }
    if view == "waits" {
        return Some(0.0);
    }
    let bytes =
        safe_file::read(&path.join(CaptureFile::ReportJson.name()), FileKind::Report).ok()?;
    let report: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let field = if view == "allocations" {
        "alloc_sample_bytes"
    } else {
        "sample_bytes"
    };
    report["memory"][field].as_f64().filter(|r| *r >= 1.0)
}

/// The view asked for, or allocations when every capture directory has it, else memory.
fn choose_view(opts: &DiffOptions) -> String {
    if let Some(view) = &opts.view {
        return view.clone();
    }
    let has_allocations = |p: &Path| {
        !p.is_dir()
            || p.join(CaptureFile::Folded(View::Allocations).name())
                .is_file()
    };
    if has_allocations(&opts.before) && has_allocations(&opts.after) {
        "allocations".into()
    } else {
        "memory".into()
    }
}

fn name(p: &Path) -> String {
    p.display().to_string()
}

/// The folded lines of `view` in a capture directory, or of a folded file.
fn read_view(path: &Path, view: &str) -> anyhow::Result<Vec<String>> {
    let file = if path.is_dir() {
        let wanted = path.join(format!("{view}.folded"));
        anyhow::ensure!(
            wanted.exists(),
            "{} has no {view}.folded{}",
            path.display(),
            if view == "allocations" {
                " (recorded without --allocations?); try --view memory"
            } else {
                ""
            }
        );
        wanted
    } else {
        path.to_path_buf()
    };
    // Untrusted input: a FIFO or /dev/zero is refused, not read forever.
    let bytes = safe_file::read(&file, FileKind::Folded)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", file.display()))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        anyhow::ensure!(
            crate::render::folded::parse_line(line).is_some(),
            "{}:{}: not a folded stack line (expected `frame;frame COUNT`)",
            file.display(),
            i + 1
        );
        lines.push(line.to_string());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("profiler-diff-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Check that two capture directories make a differential SVG, falling back to
    /// memory.folded, and that a corrupt folded file is a one-line error.
    #[test]
    fn diffs_captures_and_rejects_junk() {
        let a = dir("a");
        let b = dir("b");
        std::fs::write(a.join("allocations.folded"), "app (1);main;leak 100\n").unwrap();
        std::fs::write(b.join("memory.folded"), "app (1);anon mmap;main;leak 300\n").unwrap();
        std::fs::write(
            b.join("allocations.folded"),
            "app (1);main;leak 300\napp (1);main;new 5\n",
        )
        .unwrap();
        let out = a.join("d.svg");
        let summary = diff(&DiffOptions {
            before: a.clone(),
            after: b.clone(),
            view: None,
            out: out.clone(),
        })
        .unwrap();
        assert_eq!(summary.view, "allocations");
        assert_eq!(summary.stacks, 2);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("leak"));
        std::fs::write(a.join("waits.folded"), "no count here\n").unwrap();
        let err = diff(&DiffOptions {
            before: a.clone(),
            after: b.clone(),
            view: Some("waits".into()),
            out: out.clone(),
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("not a folded stack line"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }

    /// The fill colour of the frame whose tooltip starts with `name`.
    fn fill_of(svg: &str, name: &str) -> String {
        let at = svg
            .find(&format!("<title>{name} ("))
            .unwrap_or_else(|| panic!("no frame {name}"));
        let fill = &svg[at..][svg[at..].find("fill=\"").unwrap() + 6..];
        fill[..fill.find('"').unwrap()].to_string()
    }

    /// Check that two captures with their sampling rates keep a change within sampling
    /// noise neutral (a steady leak at 138 vs 112 samples) and colour one beyond it
    /// (100 vs 200 samples), and that folded files, whose rate is unknown, colour both.
    #[test]
    fn noise_is_neutral_between_captures() {
        const R: u64 = 256 << 10;
        let a = dir("noise-a");
        let b = dir("noise-b");
        let report = format!("{{\"memory\": {{\"alloc_sample_bytes\": {R}}}}}");
        for (d, steady, faster) in [(&a, 138, 100), (&b, 112, 200)] {
            std::fs::write(d.join("report.json"), &report).unwrap();
            std::fs::write(
                d.join("allocations.folded"),
                format!(
                    "app (1);main;faster {}\napp (1);main;steady {}\n",
                    faster * R,
                    steady * R
                ),
            )
            .unwrap();
        }
        let out = a.join("d.svg");
        let summary = diff(&DiffOptions {
            before: a.clone(),
            after: b.clone(),
            view: None,
            out: out.clone(),
        })
        .unwrap();
        assert_eq!((summary.significant, summary.within_noise), (1, Some(1)));
        let svg = std::fs::read_to_string(&out).unwrap();
        assert_eq!(fill_of(&svg, "steady"), "rgb(250,250,250)");
        assert!(fill_of(&svg, "faster").starts_with("rgb(255,"), "{svg}");
        assert!(svg.contains("1 changed, 1 within (white)"), "{svg}");
        assert!(svg.contains("largest change +25.0 MiB ± "), "{svg}");
        let summary = diff(&DiffOptions {
            before: a.join("allocations.folded"),
            after: b.join("allocations.folded"),
            view: None,
            out: out.clone(),
        })
        .unwrap();
        assert_eq!((summary.significant, summary.within_noise), (2, None));
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(
            fill_of(&svg, "steady").starts_with("rgb(")
                && fill_of(&svg, "steady") != "rgb(250,250,250)"
        );
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }

    /// Check that an explicit view that a capture lacks is an error, not a quiet
    /// comparison of another view, and that the default falls back to memory only when
    /// a capture has no allocations view.
    #[test]
    fn missing_view_is_an_error_not_a_fallback() {
        let a = dir("noalloc-a");
        let b = dir("noalloc-b");
        std::fs::write(a.join("memory.folded"), "app (1);anon mmap;main 100\n").unwrap();
        std::fs::write(b.join("memory.folded"), "app (1);anon mmap;main 300\n").unwrap();
        std::fs::write(b.join("allocations.folded"), "app (1);main 300\n").unwrap();
        let opts = |view: Option<&str>| DiffOptions {
            before: a.clone(),
            after: b.clone(),
            view: view.map(String::from),
            out: a.join("d.svg"),
        };
        let err = diff(&opts(Some("allocations"))).unwrap_err();
        assert!(
            format!("{err:#}").contains("has no allocations.folded"),
            "{err:#}"
        );
        assert_eq!(diff(&opts(None)).unwrap().view, "memory");
        let err = diff(&DiffOptions {
            before: PathBuf::from("/dev/zero"),
            ..opts(None)
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }
}
