//! Flamegraph SVGs through inferno, with deterministic output for golden tests.
use std::io::Write;

use inferno::flamegraph::{self, color::Palette, Options};

/// Which colour scheme a flamegraph uses.
#[derive(Clone, Copy, Debug)]
pub enum Flavor {
    /// Memory growth (inferno's "mem" palette).
    Memory,
    /// Blocked time (inferno's "io" palette, blue: off-CPU).
    OffCpu,
}

/// Render folded `lines` to an SVG. An empty profile still yields a valid SVG that says
/// so, rather than an error, because "nothing grew" is an answer too.
pub fn flamegraph(
    lines: &[String],
    title: &str,
    subtitle: &str,
    count_name: &str,
    flavor: Flavor,
    out: impl Write,
) -> std::io::Result<()> {
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some(subtitle.to_string());
    opts.count_name = count_name.to_string();
    opts.deterministic = true;
    opts.hash = true;
    opts.colors = match flavor {
        Flavor::Memory => Palette::Basic(flamegraph::color::BasicPalette::Mem),
        Flavor::OffCpu => Palette::Basic(flamegraph::color::BasicPalette::Io),
    };
    let placeholder = ["(nothing recorded) 1".to_string()];
    // A differential profile whose second counts are all zero has nothing to draw either.
    let has_width = lines.iter().any(|l| {
        l.rsplit_once(' ')
            .and_then(|(_, n)| n.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0)
    });
    let lines = if has_width { lines } else { &placeholder[..] };
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that profiles with nothing to draw (no lines, or a differential whose
    /// second counts are all zero) still render a valid SVG instead of failing.
    #[test]
    fn renders_placeholder_when_nothing_has_width() {
        for lines in [vec![], vec!["a;b 10 0".to_string(), "a;c 3 0".to_string()]] {
            let mut out = Vec::new();
            flamegraph(&lines, "t", "s", "bytes", Flavor::Memory, &mut out).unwrap();
            let svg = String::from_utf8(out).unwrap();
            assert!(svg.contains("nothing recorded"), "{svg}");
        }
    }
}
