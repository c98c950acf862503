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

/// Characters of a subtitle (12 px) and a title (17 px) that fit the 1200 px image:
/// inferno draws each as one centred line, so a longer one loses both its ends.
pub const MAX_SUBTITLE_CHARS: usize = 160;
pub const MAX_TITLE_CHARS: usize = 110;

/// `text` cut to `max` characters with `…` at the end: what comes first (the verdict)
/// stays visible.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
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
    opts.title = fit(title, MAX_TITLE_CHARS);
    opts.subtitle = Some(fit(subtitle, MAX_SUBTITLE_CHARS));
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

    /// Check that a long subtitle is cut at its end, keeping its start (the verdict),
    /// and that a short one is left alone.
    #[test]
    fn long_subtitles_keep_their_start() {
        let long = format!("LEAK +50.5 MiB under leak_here · {}", "x".repeat(300));
        let cut = fit(&long, MAX_SUBTITLE_CHARS);
        assert_eq!(cut.chars().count(), MAX_SUBTITLE_CHARS);
        assert!(cut.starts_with("LEAK +50.5 MiB under leak_here · ") && cut.ends_with('…'));
        assert_eq!(fit("short", MAX_SUBTITLE_CHARS), "short");
        let mut out = Vec::new();
        flamegraph(
            &["a 1".into()],
            "t",
            &long,
            "bytes",
            Flavor::Memory,
            &mut out,
        )
        .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains(&"x".repeat(200)));
    }

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
