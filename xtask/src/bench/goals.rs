//! The verdict per storm: is the profiler within its goal, and ahead of every peer?
//!
//! The goal is 0.95x of bare; where the floor (the kernel's own price for the same
//! attach points) lies below 0.95x on this machine, no program could reach that, and the
//! goal becomes being within 0.03 of the floor. Also the A/B table of `--against`.
//! Pure, from the summarised rows.

use std::fmt::Write as _;

use super::summary::{Role, Row, Spread};

/// The ratio every storm should reach.
pub const GOAL: f64 = 0.95;
/// How far below a floor under [`GOAL`] the profiler may be.
pub const FLOOR_MARGIN: f64 = 0.03;

/// The goal for a storm whose floor measured `floor` (median).
pub fn goal(floor: Option<f64>) -> (f64, bool) {
    match floor {
        Some(f) if f < GOAL => (f - FLOOR_MARGIN, true),
        _ => (GOAL, false),
    }
}

fn find(rows: &[Row], storm: &str, role: Role) -> Option<Row> {
    rows.iter()
        .find(|r| r.storm == storm && r.role == role && r.skipped.is_none())
        .cloned()
}

fn storms(rows: &[Row]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        if !names.contains(&row.storm.as_str()) {
            names.push(&row.storm);
        }
    }
    names
}

fn ratio(row: &Option<Row>) -> Option<Spread> {
    row.as_ref().and_then(|r| r.ratio)
}

/// One line per storm: floor, profiler, goal, whether it is met, and the best peer.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| storm | floor | profiler | profiler vs floor | goal | goal met | best peer | ahead of every peer |\n\
         | --- | --: | --: | --: | --- | --- | --- | --- |\n",
    );
    for storm in storms(rows) {
        let floor = find(rows, storm, Role::Floor);
        let profiler = find(rows, storm, Role::Profiler);
        let floor_ratio = ratio(&floor);
        let profiler_ratio = ratio(&profiler);
        let (goal, from_floor) = goal(floor_ratio.map(|s| s.median));
        let goal_text = if from_floor {
            format!("≥ {goal:.2}x (floor − {FLOOR_MARGIN:.2})")
        } else {
            format!("≥ {goal:.2}x")
        };
        let met = profiler_ratio.map_or("-", |p| {
            if p.median >= goal {
                "**met**"
            } else {
                "not met"
            }
        });
        let best = rows
            .iter()
            .filter(|r| r.storm == storm && r.role == Role::Peer)
            .filter_map(|r| Some((r.tool.as_str(), r.ratio?.median)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let (best_text, ahead) = match (best, profiler_ratio) {
            (Some((tool, r)), Some(p)) => (
                format!("{tool} {r:.2}x"),
                if p.median > r { "yes" } else { "no" },
            ),
            (Some((tool, r)), None) => (format!("{tool} {r:.2}x"), "-"),
            (None, _) => ("-".to_owned(), "- (no peer measured)"),
        };
        let text = |s: Option<Spread>| s.map_or_else(|| "-".into(), |s| s.ratio_text());
        let _ = writeln!(
            out,
            "| {storm} | {} | {} | {} | {goal_text} | {met} | {best_text} | {ahead} |",
            text(floor_ratio),
            text(profiler_ratio),
            text(profiler.as_ref().and_then(|p| p.vs_floor)),
        );
    }
    out
}

/// With `--against`: per storm, each build vs bare and the working tree over the other
/// build, paired round by round.
pub fn against_markdown(rows: &[Row], against_label: &str) -> String {
    let mut out = format!(
        "| storm | {against_label} vs bare | profiler@HEAD vs bare | HEAD / {} (median, min–max of rounds) |\n\
         | --- | --: | --: | --: |\n",
        against_label.trim_start_matches("profiler@"),
    );
    for storm in storms(rows) {
        let text = |s: Option<Spread>| s.map_or_else(|| "-".into(), |s| s.ratio_text());
        let head = find(rows, storm, Role::Profiler);
        let _ = writeln!(
            out,
            "| {storm} | {} | {} | {} |",
            text(ratio(&find(rows, storm, Role::Against))),
            text(ratio(&head)),
            text(head.and_then(|h| h.vs_against)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(storm: &str, tool: &str, role: Role, median: f64) -> Row {
        let mut row = Row::skipped(storm, tool, role, String::new());
        row.skipped = None;
        row.ratio = Some(Spread {
            median,
            min: median - 0.02,
            max: median + 0.02,
        });
        row.vs_floor = Some(Spread {
            median: 0.97,
            min: 0.97,
            max: 0.97,
        });
        row.vs_against = Some(Spread {
            median: 1.10,
            min: 1.05,
            max: 1.20,
        });
        row
    }

    /// Check that the goal is 0.95x, or the floor less 0.03 where the floor is lower.
    #[test]
    fn goal_from_floor() {
        assert_eq!(goal(None), (GOAL, false));
        assert_eq!(goal(Some(0.99)), (GOAL, false));
        let (g, from_floor) = goal(Some(0.90));
        assert!((g - 0.87).abs() < 1e-9 && from_floor);
    }

    /// Check both verdicts: a profiler within 0.03 of a low floor and ahead of the peers
    /// meets its goal; one below 0.95x over a high floor, behind a peer, does not.
    #[test]
    fn verdicts() {
        let rows = [
            row("mmap_storm", "bare", Role::Bare, 1.0),
            row("mmap_storm", "profiler", Role::Profiler, 0.88),
            row("mmap_storm", "floor", Role::Floor, 0.90),
            row("mmap_storm", "bpftrace", Role::Peer, 0.80),
            row("futex_storm", "profiler", Role::Profiler, 0.93),
            row("futex_storm", "floor", Role::Floor, 0.99),
            row("futex_storm", "perf", Role::Peer, 0.95),
            Row::skipped("futex_storm", "offcputime", Role::Peer, "missing".into()),
        ];
        let text = markdown(&rows);
        let mmap = text
            .lines()
            .find(|l| l.starts_with("| mmap_storm"))
            .unwrap();
        assert!(
            mmap.contains("≥ 0.87x (floor − 0.03) | **met** | bpftrace 0.80x | yes"),
            "{mmap}"
        );
        let futex = text
            .lines()
            .find(|l| l.starts_with("| futex_storm"))
            .unwrap();
        assert!(
            futex.contains("| ≥ 0.95x | not met | perf 0.95x | no |"),
            "{futex}"
        );
        assert!(
            futex.contains("| 0.99x (0.97–1.01) | 0.93x (0.91–0.95) | 0.97x |"),
            "{futex}"
        );
    }

    /// Check that the A/B table names the other build and gives HEAD over it.
    #[test]
    fn against_table() {
        let rows = [
            row("mmap_storm", "profiler@abc123", Role::Against, 0.80),
            row("mmap_storm", "profiler@HEAD", Role::Profiler, 0.88),
        ];
        let text = against_markdown(&rows, "profiler@abc123");
        assert!(text.contains("HEAD / abc123"), "{text}");
        assert!(
            text.contains(
                "| mmap_storm | 0.80x (0.78–0.82) | 0.88x (0.86–0.90) | 1.10x (1.05–1.20) |"
            ),
            "{text}"
        );
    }
}
