//! Command-line arguments. Parsed values are converted into plain option structs
//! (`record::RecordOptions`) before use, so the commands never see clap types.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{record::RecordOptions, units};

/// eBPF production profiler: which stacks hold the memory that grew, and what every
/// thread is blocked on. Needs root.
#[derive(Debug, Parser)]
#[command(name = "profiler", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record a window: memory growth and blocked time by stack, written as
    /// flamegraphs and a report with a stall verdict.
    Record(RecordArgs),
    /// Say now whether a process is stuck: watch its waits briefly, then print the
    /// stall verdict and the blocked stacks.
    Stalls(StallsArgs),
    /// Compare two captures: a differential flamegraph of what grew in AFTER compared
    /// with BEFORE (capture directories or folded files).
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier capture (directory written by `record`, or a .folded file).
    pub before: PathBuf,
    /// The later capture.
    pub after: PathBuf,
    /// Which view of capture directories to compare.
    #[arg(long, default_value = "allocations", value_parser = ["allocations", "memory", "waits"])]
    pub view: String,
    /// Where to write the SVG.
    #[arg(long, default_value = "diff.svg")]
    pub out: PathBuf,
}

impl From<DiffArgs> for crate::compare::DiffOptions {
    fn from(a: DiffArgs) -> Self {
        Self {
            before: a.before,
            after: a.after,
            view: a.view,
            out: a.out,
        }
    }
}

#[derive(Debug, Args)]
pub struct StallsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to watch for wakes before judging.
    #[arg(long, default_value = "2s", value_parser = units::parse_duration)]
    pub watch: std::time::Duration,
    /// Threads blocked longer than this with no wake count towards a stall. A thread
    /// already blocked when the watch starts has been blocked at least the watch.
    #[arg(long, default_value = "1s", value_parser = units::parse_duration)]
    pub stall_threshold: std::time::Duration,
}

impl From<StallsArgs> for RecordOptions {
    fn from(a: StallsArgs) -> Self {
        RecordOptions {
            pids: a.target.pids,
            duration: Some(a.watch),
            out: PathBuf::new(),
            sample_bytes: 1 << 20,
            stack_pages: 8,
            memory: false,
            allocations: false,
            allocator: None,
            alloc_sample_bytes: 1 << 20,
            waits: true,
            wait_threshold: std::time::Duration::from_millis(1),
            stall_threshold: a.stall_threshold,
        }
    }
}

/// Which processes to profile.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Process id to profile (repeatable).
    #[arg(long = "pid", value_name = "PID", required = true)]
    pub pids: Vec<u32>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to record (e.g. 30s, 5m); without it, until Ctrl-C.
    #[arg(long, value_parser = units::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Mean bytes between two stack samples; 1 samples every event. Totals per region
    /// kind are always exact; stacks are an unbiased estimate.
    #[arg(long, default_value = "256KiB", value_parser = units::parse_bytes)]
    pub sample_bytes: u64,
    /// Pages (4 KiB) of user stack copied per sample, 1 to 8. Deeper stacks need more.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub stack_pages: u32,
    /// Record memory growth (default: both memory and waits).
    #[arg(long)]
    pub memory: bool,
    /// Record blocked time and judge stalls (default: both memory and waits).
    #[arg(long)]
    pub waits: bool,
    /// Do not probe the allocator (malloc/free uprobes): only the mapping view, no
    /// live allocations, no leak-or-retention verdict. Every allocator call traps into
    /// the kernel while the probes are on; see the README for the measured cost.
    #[arg(long)]
    pub no_allocations: bool,
    /// Probe the allocator in this binary (an allocator library or an executable that
    /// contains one) instead of the one detected from each target's mappings.
    #[arg(long, value_name = "PATH")]
    pub allocator: Option<PathBuf>,
    /// Mean bytes between two sampled allocations (allocator probes); like
    /// --sample-bytes, but allocations are far more frequent than mappings.
    #[arg(long, default_value = "256KiB", value_parser = units::parse_bytes)]
    pub alloc_sample_bytes: u64,
    /// Waits shorter than this are only counted (in the kernel), not recorded with a stack.
    #[arg(long, default_value = "1ms", value_parser = units::parse_duration)]
    pub wait_threshold: std::time::Duration,
    /// Threads blocked longer than this with no wake count towards a STALLED verdict.
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    pub stall_threshold: std::time::Duration,
}

impl From<RecordArgs> for RecordOptions {
    fn from(a: RecordArgs) -> Self {
        RecordOptions {
            pids: a.target.pids,
            duration: a.duration,
            out: a.out,
            sample_bytes: a.sample_bytes,
            stack_pages: a.stack_pages,
            // Neither flag: both. Either flag: only what was asked for.
            memory: a.memory || !a.waits,
            allocations: !a.no_allocations,
            allocator: a.allocator,
            alloc_sample_bytes: a.alloc_sample_bytes,
            waits: a.waits || !a.memory,
            wait_threshold: a.wait_threshold,
            stall_threshold: a.stall_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Check that clap's own consistency checks pass for every subcommand.
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Check that record arguments convert into options with units applied.
    #[test]
    fn record_args_convert() {
        let cli = Cli::try_parse_from([
            "profiler",
            "record",
            "--pid",
            "1",
            "--pid",
            "2",
            "--duration",
            "5s",
            "--out",
            "x",
            "--sample-bytes",
            "1",
        ])
        .unwrap();
        let Command::Record(args) = cli.command else {
            panic!("expected record")
        };
        let opts = RecordOptions::from(args);
        assert!(opts.memory && opts.waits);
        assert_eq!(opts.pids, vec![1, 2]);
        assert_eq!(opts.duration, Some(std::time::Duration::from_secs(5)));
        assert_eq!(opts.sample_bytes, 1);
        assert_eq!(opts.stack_pages, 8);
    }

    /// Check that --memory and --waits select what is recorded.
    #[test]
    fn memory_and_waits_select() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["profiler", "record", "--pid", "1", "--out", "x"];
            args.extend_from_slice(extra);
            let Command::Record(a) = Cli::try_parse_from(args).unwrap().command else {
                panic!()
            };
            let o = RecordOptions::from(a);
            (o.memory, o.waits)
        };
        assert_eq!(parse(&["--memory"]), (true, false));
        assert_eq!(parse(&["--waits"]), (false, true));
        assert_eq!(parse(&["--memory", "--waits"]), (true, true));
    }

    /// Check that a bad size is a parse error, not a panic later.
    #[test]
    fn rejects_bad_sample_size() {
        assert!(Cli::try_parse_from([
            "profiler",
            "record",
            "--pid",
            "1",
            "--out",
            "x",
            "--sample-bytes",
            "lots"
        ])
        .is_err());
    }
}
