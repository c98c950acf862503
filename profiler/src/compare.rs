//! `profiler diff A B`: a differential flamegraph of two captures.
//!
//! A and B are capture directories (as `record` writes them) or folded files. For
//! directories the view is chosen by name (`allocations` by default, falling back to
//! `memory` when a capture has no allocator view).
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::render::{diff, svg};

/// Options of `profiler diff`.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    pub before: PathBuf,
    pub after: PathBuf,
    /// `allocations`, `memory` or `waits`.
    pub view: String,
    pub out: PathBuf,
}

/// Write the differential SVG; returns the number of stacks in it.
pub fn diff(opts: &DiffOptions) -> anyhow::Result<usize> {
    let before = read_view(&opts.before, &opts.view)?;
    let after = read_view(&opts.after, &opts.view)?;
    let lines = diff::differential_lines(&before, &after).context("merging the profiles")?;
    let mut svg_bytes = Vec::new();
    svg::flamegraph(
        &lines,
        &format!(
            "{} growth: {} vs {}",
            opts.view,
            name(&opts.after),
            name(&opts.before)
        ),
        &format!(
            "widths: {}; red grew more than in {}, blue less",
            name(&opts.after),
            name(&opts.before)
        ),
        if opts.view == "waits" { "us" } else { "bytes" },
        svg::Flavor::Memory,
        &mut svg_bytes,
    )
    .context("rendering the differential flamegraph")?;
    std::fs::write(&opts.out, svg_bytes)
        .with_context(|| format!("cannot write {}", opts.out.display()))?;
    Ok(lines.len())
}

fn name(p: &Path) -> String {
    p.display().to_string()
}

/// The folded lines of `view` in a capture directory, or of a folded file.
fn read_view(path: &Path, view: &str) -> anyhow::Result<Vec<String>> {
    let file = if path.is_dir() {
        let wanted = path.join(format!("{view}.folded"));
        if wanted.exists() || view != "allocations" {
            wanted
        } else {
            path.join("memory.folded")
        }
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
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
        let n = diff(&DiffOptions {
            before: a.clone(),
            after: b.clone(),
            view: "allocations".into(),
            out: out.clone(),
        })
        .unwrap();
        assert_eq!(n, 2);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("leak"));
        std::fs::write(a.join("waits.folded"), "no count here\n").unwrap();
        let err = diff(&DiffOptions {
            before: a.clone(),
            after: b.clone(),
            view: "waits".into(),
            out,
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("not a folded stack line"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }
}
