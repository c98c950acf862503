//! From the rounds' samples to the table: medians, ratios against the bare runs (and the
//! floor's, and the other build's) of the same rounds with their spread, and the
//! markdown rendering. Pure arithmetic, tested without processes.

use std::fmt::Write as _;

use super::{stats::ProgramCost, storms::StormResult};

/// Event counters from the profiler's report.json.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub seen: u64,
    pub sampled: u64,
    pub lost: u64,
}

/// One run of one tool on one storm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub result: Option<StormResult>,
    /// Wall time from the barrier to the storm's result line.
    pub window_secs: f64,
    /// The tool's CPU time over that window.
    pub tool_cpu_window_secs: Option<f64>,
    /// The tool's CPU time over its whole life (start-up and output included).
    pub tool_cpu_total_secs: Option<f64>,
    pub tool_peak_rss: Option<u64>,
    pub counters: Option<Counters>,
    /// From the end of the profiler's window to its flamegraph on disk.
    pub flamegraph_secs: Option<f64>,
    /// Bytes the tool wrote into its output directory.
    pub output_bytes: Option<u64>,
    /// What each of the profiler's BPF programs cost over the storm (bpf_stats rounds only).
    pub programs: Option<Vec<ProgramCost>>,
}

impl Sample {
    fn ops_per_sec(&self) -> Option<f64> {
        self.result.map(|r| r.ops_per_sec())
    }

    /// Operations per CPU-second of the workload itself: less sensitive than wall-clock
    /// throughput to other load on the machine, and it carries in-kernel probe costs.
    fn ops_per_cpu_sec(&self) -> Option<f64> {
        self.result.map(|r| r.ops as f64 / r.cpu_seconds.max(1e-9))
    }

    fn tool_cpu_percent(&self) -> Option<f64> {
        self.tool_cpu_window_secs
            .map(|cpu| 100.0 * cpu / self.window_secs.max(1e-9))
    }
}

/// The median of the values (the mean of the two middle ones for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A median with the range it was taken from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of the finite values; None if there are none.
    pub fn of(values: Vec<f64>) -> Option<Self> {
        let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        let min = finite.iter().copied().reduce(f64::min)?;
        let max = finite.iter().copied().reduce(f64::max)?;
        Some(Self {
            median: median(finite)?,
            min,
            max,
        })
    }

    /// `0.84x (0.79–0.88)`, or `0.84x` when there is one value.
    pub fn ratio_text(&self) -> String {
        if self.min == self.max {
            format!("{:.2}x", self.median)
        } else {
            format!("{:.2}x ({:.2}–{:.2})", self.median, self.min, self.max)
        }
    }
}

/// The per-round ratios `tool / reference`, pairing each round with the reference run
/// of the same round (A/B alternation: drift of the machine's load hits both alike),
/// as a median and its range.
fn paired_ratio(
    tool: &[Option<Sample>],
    reference: &[Option<Sample>],
    metric: fn(&Sample) -> Option<f64>,
) -> Option<Spread> {
    let ratios = tool
        .iter()
        .zip(reference)
        .filter_map(|(t, b)| Some(metric(t.as_ref()?)? / metric(b.as_ref()?)?))
        .collect();
    Spread::of(ratios)
}

/// What a tool is in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Bare,
    /// The working tree's profiler.
    Profiler,
    /// The `--against` build.
    Against,
    /// The profiler's attach points with empty programs.
    Floor,
    Peer,
}

/// The runs each tool's rounds are paired with.
#[derive(Debug, Clone, Copy)]
pub struct References<'a> {
    pub bare: &'a [Option<Sample>],
    pub floor: Option<&'a [Option<Sample>]>,
    pub against: Option<&'a [Option<Sample>]>,
}

fn median_of(samples: &[Option<Sample>], metric: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(samples.iter().flatten().filter_map(metric).collect())
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub storm: String,
    pub tool: String,
    pub role: Role,
    pub rounds: usize,
    pub ops_per_sec: Option<f64>,
    pub ratio: Option<Spread>,
    /// Ops/s over the floor's of the same round (not for bare and the floor itself).
    pub vs_floor: Option<Spread>,
    /// The working tree's profiler over the `--against` build, round by round.
    pub vs_against: Option<Spread>,
    pub cpu_ratio: Option<Spread>,
    pub tool_cpu_percent: Option<f64>,
    pub tool_cpu_total_secs: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub counters: Option<Counters>,
    pub events_per_sec: Option<f64>,
    pub flamegraph_secs: Option<f64>,
    pub output_mib: Option<f64>,
    /// Why the tool was not measured.
    pub skipped: Option<String>,
}

impl Row {
    pub fn skipped(storm: &str, tool: &str, role: Role, reason: String) -> Self {
        Self {
            storm: storm.into(),
            tool: tool.into(),
            role,
            rounds: 0,
            ops_per_sec: None,
            ratio: None,
            vs_floor: None,
            vs_against: None,
            cpu_ratio: None,
            tool_cpu_percent: None,
            tool_cpu_total_secs: None,
            peak_rss_mib: None,
            counters: None,
            events_per_sec: None,
            flamegraph_secs: None,
            output_mib: None,
            skipped: Some(reason),
        }
    }

    /// Summarises a tool's samples (one per round, None for a failed round) against the
    /// reference samples of the same rounds.
    pub fn summarise(
        storm: &str,
        tool: &str,
        role: Role,
        samples: &[Option<Sample>],
        refs: References,
    ) -> Self {
        let bare = refs.bare;
        let counters = |f: fn(&Counters) -> u64| {
            median_of(samples, |s| s.counters.as_ref().map(|c| f(c) as f64))
                .map(|v| v.round() as u64)
        };
        let counters = match (
            counters(|c| c.seen),
            counters(|c| c.sampled),
            counters(|c| c.lost),
        ) {
            (Some(seen), Some(sampled), Some(lost)) => Some(Counters {
                seen,
                sampled,
                lost,
            }),
            _ => None,
        };
        let is_bare = role == Role::Bare;
        let versus = |reference: Option<&[Option<Sample>]>, applies: bool| {
            reference
                .filter(|_| applies)
                .and_then(|r| paired_ratio(samples, r, Sample::ops_per_sec))
        };
        Self {
            storm: storm.into(),
            tool: tool.into(),
            role,
            rounds: samples.iter().flatten().count(),
            ops_per_sec: median_of(samples, Sample::ops_per_sec),
            ratio: (!is_bare)
                .then(|| paired_ratio(samples, bare, Sample::ops_per_sec))
                .flatten(),
            vs_floor: versus(refs.floor, !matches!(role, Role::Bare | Role::Floor)),
            vs_against: versus(refs.against, role == Role::Profiler),
            cpu_ratio: (!is_bare)
                .then(|| paired_ratio(samples, bare, Sample::ops_per_cpu_sec))
                .flatten(),
            tool_cpu_percent: median_of(samples, Sample::tool_cpu_percent),
            tool_cpu_total_secs: median_of(samples, |s| s.tool_cpu_total_secs),
            peak_rss_mib: samples
                .iter()
                .flatten()
                .filter_map(|s| s.tool_peak_rss)
                .max()
                .map(|b| b as f64 / (1 << 20) as f64),
            counters,
            events_per_sec: median_of(samples, |s| {
                Some(s.counters?.seen as f64 / s.window_secs.max(1e-9))
            }),
            flamegraph_secs: median_of(samples, |s| s.flamegraph_secs),
            output_mib: median_of(samples, |s| {
                s.output_bytes.map(|b| b as f64 / (1 << 20) as f64)
            }),
            skipped: None,
        }
    }
}

fn cell(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".into(), format)
}

fn spread_cell(value: Option<Spread>) -> String {
    value.map_or_else(|| "-".into(), |s| s.ratio_text())
}

/// A compact number: 1234567 -> "1.23M", 45678 -> "45.7k".
pub fn si(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if abs >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// The table as markdown (also readable as plain text).
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| storm | tool | rounds | ops/s (median) | ratio vs bare (median, min–max of rounds) | vs floor | ratio, ops per workload CPU-s | tool CPU in window (% of 1 core) | tool CPU total (s) | tool peak RSS (MiB) | events seen / sampled / lost (per round) | events/s | window end → flamegraph (s) | output (MiB) |\n\
         | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n",
    );
    for row in rows {
        if let Some(reason) = &row.skipped {
            let _ = writeln!(
                out,
                "| {} | {} | skipped: {reason} | | | | | | | | | | | |",
                row.storm, row.tool
            );
            continue;
        }
        let counters = row.counters.map_or_else(
            || "-".into(),
            |c| {
                format!(
                    "{} / {} / {}",
                    si(c.seen as f64),
                    si(c.sampled as f64),
                    c.lost
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.storm,
            row.tool,
            row.rounds,
            cell(row.ops_per_sec, si),
            spread_cell(row.ratio),
            spread_cell(row.vs_floor),
            cell(row.cpu_ratio.map(|r| r.median), |r| format!("{r:.2}x")),
            cell(row.tool_cpu_percent, |p| format!("{p:.1}%")),
            cell(row.tool_cpu_total_secs, |s| format!("{s:.2}")),
            cell(row.peak_rss_mib, |m| format!("{m:.1}")),
            counters,
            cell(row.events_per_sec, si),
            cell(row.flamegraph_secs, |s| format!("{s:.2}")),
            cell(row.output_mib, |m| format!("{m:.1}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ops: u64, cpu: f64) -> Option<Sample> {
        Some(Sample {
            result: Some(StormResult {
                ops,
                seconds: 1.0,
                cpu_seconds: cpu,
            }),
            window_secs: 1.0,
            tool_cpu_window_secs: Some(0.01),
            ..Sample::default()
        })
    }

    fn refs(bare: &[Option<Sample>]) -> References<'_> {
        References {
            bare,
            floor: None,
            against: None,
        }
    }

    /// Check the median of odd and even counts, and that NaN and empty input give none.
    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
        assert_eq!(median(Vec::new()), None);
    }

    /// Check that the ratio pairs rounds (not medians of each side), skips a round whose
    /// run failed, and that the bare row has no ratio.
    #[test]
    fn paired_ratios() {
        let bare = vec![sample(100, 1.0), sample(200, 1.0), sample(1000, 1.0)];
        let tool = vec![sample(90, 1.0), sample(100, 0.5), None];
        let row = Row::summarise("s", "t", Role::Peer, &tool, refs(&bare));
        // Round ratios 0.9 and 0.5: median 0.7 (medians of each side would give 95/200).
        let ratio = row.ratio.unwrap();
        assert!((ratio.median - 0.7).abs() < 1e-9);
        assert!((ratio.min - 0.5).abs() < 1e-9 && (ratio.max - 0.9).abs() < 1e-9);
        // Per CPU-second: 90/100 = 0.9 and 200/200 = 1.0.
        assert!((row.cpu_ratio.unwrap().median - 0.95).abs() < 1e-9);
        assert_eq!(row.rounds, 2);
        assert!((row.tool_cpu_percent.unwrap() - 1.0).abs() < 1e-9);
        let bare_row = Row::summarise("s", "bare", Role::Bare, &bare, refs(&bare));
        assert_eq!(bare_row.ratio, None);
        assert_eq!(bare_row.ops_per_sec, Some(200.0));
    }

    /// Check that a skipped tool shows its reason and a measured one its numbers.
    #[test]
    fn markdown_rows() {
        let bare = vec![sample(100, 1.0)];
        let rows = [
            Row::summarise("futex_storm", "bare", Role::Bare, &bare, refs(&bare)),
            Row::skipped(
                "futex_storm",
                "perf",
                Role::Peer,
                "perf not installed".into(),
            ),
        ];
        let text = markdown(&rows);
        assert!(
            text.contains("| futex_storm | bare | 1 | 100 | - |"),
            "{text}"
        );
        assert!(text.contains("skipped: perf not installed"), "{text}");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(45_678.0), "45.7k");
    }

    /// Check that the spread is the median with the min and max of the finite values,
    /// printed without a range for a single round.
    #[test]
    fn spreads() {
        let s = Spread::of(vec![0.9, f64::NAN, 0.7, 0.8]).unwrap();
        assert_eq!((s.median, s.min, s.max), (0.8, 0.7, 0.9));
        assert_eq!(s.ratio_text(), "0.80x (0.70–0.90)");
        assert_eq!(Spread::of(vec![0.5]).unwrap().ratio_text(), "0.50x");
        assert_eq!(Spread::of(vec![f64::INFINITY]), None);
    }

    /// Check that the profiler is paired with the floor and the other build round by
    /// round, that the floor gets no "vs floor" of itself, and that a peer gets no A/B.
    #[test]
    fn versus_floor_and_against() {
        let bare = vec![sample(100, 1.0), sample(200, 1.0)];
        let floor = vec![sample(90, 1.0), sample(180, 1.0)];
        let against = vec![sample(60, 1.0), sample(160, 1.0)];
        let profiler = vec![sample(81, 1.0), sample(144, 1.0)];
        let refs = References {
            bare: &bare,
            floor: Some(&floor),
            against: Some(&against),
        };
        let row = Row::summarise("s", "profiler@HEAD", Role::Profiler, &profiler, refs);
        let vs_floor = row.vs_floor.unwrap();
        assert!((vs_floor.min - 0.8).abs() < 1e-9 && (vs_floor.max - 0.9).abs() < 1e-9);
        let ab = row.vs_against.unwrap();
        assert!((ab.min - 0.9).abs() < 1e-9 && (ab.max - 1.35).abs() < 1e-9);
        let floor_row = Row::summarise("s", "floor", Role::Floor, &floor, refs);
        assert_eq!(floor_row.vs_floor, None);
        assert!((floor_row.ratio.unwrap().median - 0.9).abs() < 1e-9);
        let peer = Row::summarise("s", "perf", Role::Peer, &against, refs);
        assert!(peer.vs_floor.is_some() && peer.vs_against.is_none());
    }
}
