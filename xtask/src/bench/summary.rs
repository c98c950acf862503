//! From the rounds' samples to the table: medians, ratios against the bare runs of the
//! same rounds, and the markdown rendering. Pure arithmetic, tested without processes.

use std::fmt::Write as _;

use super::storms::StormResult;

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

/// The median over rounds of `tool / bare`, pairing each round with the bare run of the
/// same round (A/B alternation: drift of the machine's load hits both alike).
fn paired_ratio(
    tool: &[Option<Sample>],
    bare: &[Option<Sample>],
    metric: fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let ratios = tool
        .iter()
        .zip(bare)
        .filter_map(|(t, b)| Some(metric(t.as_ref()?)? / metric(b.as_ref()?)?))
        .collect();
    median(ratios)
}

fn median_of(samples: &[Option<Sample>], metric: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(samples.iter().flatten().filter_map(metric).collect())
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub storm: String,
    pub tool: String,
    pub rounds: usize,
    pub ops_per_sec: Option<f64>,
    pub ratio: Option<f64>,
    pub cpu_ratio: Option<f64>,
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
    pub fn skipped(storm: &str, tool: &str, reason: String) -> Self {
        Self {
            storm: storm.into(),
            tool: tool.into(),
            rounds: 0,
            ops_per_sec: None,
            ratio: None,
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
    /// bare samples of the same rounds.
    pub fn summarise(
        storm: &str,
        tool: &str,
        samples: &[Option<Sample>],
        bare: &[Option<Sample>],
    ) -> Self {
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
        let is_bare = std::ptr::eq(samples, bare);
        Self {
            storm: storm.into(),
            tool: tool.into(),
            rounds: samples.iter().flatten().count(),
            ops_per_sec: median_of(samples, Sample::ops_per_sec),
            ratio: (!is_bare)
                .then(|| paired_ratio(samples, bare, Sample::ops_per_sec))
                .flatten(),
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
        "| storm | tool | rounds | ops/s (median) | ratio vs bare | ratio, ops per workload CPU-s | tool CPU in window (% of 1 core) | tool CPU total (s) | tool peak RSS (MiB) | events seen / sampled / lost (per round) | events/s | window end → flamegraph (s) | output (MiB) |\n\
         | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n",
    );
    for row in rows {
        if let Some(reason) = &row.skipped {
            let _ = writeln!(
                out,
                "| {} | {} | skipped: {reason} | | | | | | | | | | |",
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.storm,
            row.tool,
            row.rounds,
            cell(row.ops_per_sec, si),
            cell(row.ratio, |r| format!("{r:.2}x")),
            cell(row.cpu_ratio, |r| format!("{r:.2}x")),
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
        let row = Row::summarise("s", "t", &tool, &bare);
        // Round ratios 0.9 and 0.5: median 0.7 (medians of each side would give 95/200).
        assert!((row.ratio.unwrap() - 0.7).abs() < 1e-9);
        // Per CPU-second: 90/100 = 0.9 and 200/200 = 1.0.
        assert!((row.cpu_ratio.unwrap() - 0.95).abs() < 1e-9);
        assert_eq!(row.rounds, 2);
        assert!((row.tool_cpu_percent.unwrap() - 1.0).abs() < 1e-9);
        let bare_row = Row::summarise("s", "bare", &bare, &bare);
        assert_eq!(bare_row.ratio, None);
        assert_eq!(bare_row.ops_per_sec, Some(200.0));
    }

    /// Check that a skipped tool shows its reason and a measured one its numbers.
    #[test]
    fn markdown_rows() {
        let bare = vec![sample(100, 1.0)];
        let rows = [
            Row::summarise("futex_storm", "bare", &bare, &bare),
            Row::skipped("futex_storm", "perf", "perf not installed".into()),
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
}
