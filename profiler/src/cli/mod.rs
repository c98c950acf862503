//! Command-line arguments. Parsed values are converted into plain option structs
//! (`record::RecordOptions`) before use, so the commands never see clap types.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{record::RecordOptions, targets::TargetSpec, units};

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
    /// Run headless: a capture every --interval under DIR/<UTC time>/, DIR/latest and
    /// DIR/index.html, plus snapshots on OOM kills, RSS crossings and stalls.
    Daemon(DaemonArgs),
    /// Compare two captures: a differential flamegraph of what grew in AFTER compared
    /// with BEFORE (capture directories or folded files).
    Diff(DiffArgs),
    /// Render a capture saved with `record --save-records` again: offline, without
    /// root, on any machine.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The file `record --save-records` wrote.
    pub file: PathBuf,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl From<ReplayArgs> for crate::record::replay::ReplayOptions {
    fn from(a: ReplayArgs) -> Self {
        Self {
            file: a.file,
            out: a.out,
        }
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier capture (directory written by `record`, or a .folded file).
    pub before: PathBuf,
    /// The later capture.
    pub after: PathBuf,
    /// Which view of capture directories to compare (default: allocations when both
    /// captures have it, else memory).
    #[arg(long, value_parser = ["allocations", "memory", "waits"])]
    pub view: Option<String>,
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
            targets: a.target.into(),
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
            save_records: None,
            verbose: false,
        }
    }
}

/// Which processes to profile: at least one selector; several combine as a union.
/// Children a target forks are followed too.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct TargetArgs {
    /// Process id to profile (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Processes whose name (/proc/PID/comm) matches this regular expression
    /// (unanchored: `^name$` for an exact name). New matches are picked up while
    /// recording.
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    /// Processes in this cgroup or below it (repeatable): a path inside a cgroup mount
    /// (/sys/fs/cgroup/system.slice/x.service) or relative to the mounts, as
    /// /proc/PID/cgroup shows it (/system.slice/x.service).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Processes in the container with this ID or unique ID prefix (repeatable):
    /// Docker, containerd, CRI-O, Podman, found in the process's cgroup path.
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,
    /// Every process on the host (kernel threads excluded); processes are added when
    /// their first event arrives.
    #[arg(long)]
    pub all: bool,
}

impl From<TargetArgs> for TargetSpec {
    fn from(a: TargetArgs) -> Self {
        TargetSpec {
            pids: a.pids,
            comm: a.comm,
            cgroups: a.cgroups,
            containers: a.containers,
            all: a.all,
        }
    }
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
    /// Also save the capture stream to FILE, for `profiler replay` (stacks are saved
    /// symbolized: no stack memory, no payload).
    #[arg(long, value_name = "FILE")]
    pub save_records: Option<PathBuf>,
    #[command(flatten)]
    pub capture: CaptureArgs,
}

/// What a capture records and how: shared by `record` and `daemon`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
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
    /// Also probe the allocator (malloc/free uprobes): live allocations by stack and
    /// the leak-or-retention verdict. Off by default because every allocator call then
    /// traps into the kernel (about 2.5 us per call measured here: a tight malloc/free
    /// loop runs hundreds of times slower); see the README. Records memory even with
    /// --waits.
    #[arg(long)]
    pub allocations: bool,
    /// Probe the allocator in this binary (an allocator library or an executable that
    /// contains one) instead of the one detected from each target's mappings. Needs
    /// --allocations.
    #[arg(long, value_name = "PATH", requires = "allocations", value_parser = allocator_path)]
    pub allocator: Option<PathBuf>,
    /// Mean bytes between two sampled allocations (allocator probes); like
    /// --sample-bytes, but allocations are far more frequent than mappings.
    #[arg(long, default_value = "256KiB", value_parser = units::parse_bytes)]
    pub alloc_sample_bytes: u64,
    /// Waits shorter than this are only counted (in the kernel), not recorded with a stack.
    #[arg(long, default_value = "1ms", value_parser = units::parse_duration)]
    pub wait_threshold: std::time::Duration,
    /// Threads blocked longer than this with no wake count towards a STALLED verdict
    /// (and, in the daemon, a stall snapshot).
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    pub stall_threshold: std::time::Duration,
    /// Print how each probe was attached (tracepoint, uprobe) and how the probes find
    /// user registers on this kernel.
    #[arg(short, long)]
    pub verbose: bool,
}

impl CaptureArgs {
    /// The record options for `targets`, with these capture settings.
    fn options(
        self,
        targets: TargetSpec,
        duration: Option<std::time::Duration>,
        out: PathBuf,
    ) -> RecordOptions {
        RecordOptions {
            targets,
            duration,
            out,
            sample_bytes: self.sample_bytes,
            stack_pages: self.stack_pages,
            memory: records_memory(self.memory, self.waits, self.allocations),
            allocations: self.allocations,
            allocator: self.allocator,
            alloc_sample_bytes: self.alloc_sample_bytes,
            waits: self.waits || !self.memory,
            wait_threshold: self.wait_threshold,
            stall_threshold: self.stall_threshold,
            save_records: None,
            verbose: self.verbose,
        }
    }
}

/// Pushing captures to Grafana Pyroscope; `#[command(flatten)]` it into a command that
/// writes captures periodically (the daemon).
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push every capture's pprof profiles to this Pyroscope server
    /// (e.g. http://pyroscope:4040).
    #[arg(long, value_name = "URL")]
    pub push_url: Option<String>,
    /// Application name in Pyroscope.
    #[arg(long, default_value = "profiler", value_name = "NAME")]
    pub push_app: String,
    /// Captures kept queued while the server is unreachable (they stay on disk).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub push_queue: usize,
    /// Tenant of a multi-tenant Pyroscope (sent as X-Scope-OrgID).
    #[arg(long, value_name = "ID")]
    pub push_tenant: Option<String>,
}

impl PushArgs {
    /// The push options, if `--push-url` was given.
    pub fn options(&self) -> Option<crate::push::PushOptions> {
        let url = self.push_url.as_ref()?;
        Some(crate::push::PushOptions {
            app_name: self.push_app.clone(),
            max_queue: self.push_queue,
            tenant: self.push_tenant.clone(),
            ..crate::push::PushOptions::new(url.clone())
        })
    }
}

/// An `--allocator` path must be an ELF file that defines an allocator entry point we
/// probe: anything else would attach nothing and quietly record no allocations.
fn allocator_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    crate::allocator::detect::check_allocator_binary(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Whether memory is recorded. Neither --memory nor --waits: both. Either flag: only
/// what was asked for; --allocations asks for memory too, since live allocations are
/// part of the memory view (`--waits --allocations` records both).
fn records_memory(memory: bool, waits: bool, allocations: bool) -> bool {
    memory || allocations || !waits
}

impl From<RecordArgs> for RecordOptions {
    fn from(a: RecordArgs) -> Self {
        RecordOptions {
            save_records: a.save_records,
            ..a.capture.options(a.target.into(), a.duration, a.out)
        }
    }
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Length of one capture (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = units::parse_duration)]
    pub interval: std::time::Duration,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Delete captures older than this (e.g. 24h).
    #[arg(long, value_parser = units::parse_duration)]
    pub retain: Option<std::time::Duration>,
    /// Delete the oldest captures while everything the daemon wrote exceeds this (e.g. 1GiB).
    #[arg(long, value_parser = units::parse_bytes)]
    pub max_disk: Option<u64>,
    /// Snapshot a target when its RSS crosses this size (e.g. 2GiB).
    #[arg(long, value_parser = units::parse_bytes)]
    pub rss_threshold: Option<u64>,
    #[command(flatten)]
    pub push: PushArgs,
    /// At most one RSS or stall snapshot per process per this long.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    pub snapshot_cooldown: std::time::Duration,
    #[command(flatten)]
    pub capture: CaptureArgs,
}

impl From<DaemonArgs> for crate::daemon::DaemonOptions {
    fn from(a: DaemonArgs) -> Self {
        crate::daemon::DaemonOptions {
            push: a.push.options(),
            record: a.capture.options(a.target.into(), None, a.out.clone()),
            interval: a.interval,
            out: a.out,
            retention: crate::daemon::retention::Policy {
                max_age: a.retain,
                max_bytes: a.max_disk,
            },
            rss_threshold: a.rss_threshold,
            snapshot_cooldown: a.snapshot_cooldown,
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

    /// Check that the push arguments give push options only with a URL.
    #[test]
    fn push_args_convert() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            push: PushArgs,
        }
        let p =
            P::try_parse_from(["p", "--push-url", "http://py:4040", "--push-queue", "5"]).unwrap();
        let opts = p.push.options().unwrap();
        assert_eq!((opts.url.as_str(), opts.max_queue), ("http://py:4040", 5));
        assert_eq!(opts.app_name, "profiler");
        assert!(P::try_parse_from(["p"]).unwrap().push.options().is_none());
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
        assert_eq!(opts.targets.pids, vec![1, 2]);
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
        assert_eq!(parse(&["--waits", "--allocations"]), (true, true));
        assert_eq!(parse(&["--allocations"]), (true, true));
    }

    /// Check that daemon arguments convert into options with units applied.
    #[test]
    fn daemon_args_convert() {
        let cli = Cli::try_parse_from([
            "profiler",
            "daemon",
            "--pid",
            "3",
            "--interval",
            "2s",
            "--out",
            "d",
            "--retain",
            "24h",
            "--max-disk",
            "1GiB",
            "--rss-threshold",
            "64MiB",
        ])
        .unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("expected daemon")
        };
        let opts = crate::daemon::DaemonOptions::from(args);
        assert_eq!(opts.record.targets.pids, vec![3]);
        assert_eq!(opts.interval, std::time::Duration::from_secs(2));
        assert_eq!(
            opts.retention.max_age,
            Some(std::time::Duration::from_secs(86400))
        );
        assert_eq!(opts.retention.max_bytes, Some(1 << 30));
        assert_eq!(opts.rss_threshold, Some(64 << 20));
        assert!(opts.record.memory && opts.record.waits);
    }

    /// Check that every selector parses, combines, and that one is required.
    #[test]
    fn target_selectors_parse() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["profiler", "record", "--out", "x"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Record(a) => RecordOptions::from(a).targets,
                _ => panic!("expected record"),
            })
        };
        assert!(parse(&[]).is_err());
        let spec = parse(&[
            "--comm",
            "^nginx$",
            "--cgroup",
            "/a",
            "--cgroup",
            "b",
            "--container",
            "4f1d",
            "--pid",
            "3",
        ])
        .unwrap();
        assert_eq!(spec.comm.as_deref(), Some("^nginx$"));
        assert_eq!(spec.cgroups, vec!["/a", "b"]);
        assert_eq!(spec.containers, vec!["4f1d"]);
        assert_eq!(spec.pids, vec![3]);
        assert!(!spec.all);
        assert!(parse(&["--all"]).unwrap().all);
        let Command::Stalls(s) = Cli::try_parse_from(["profiler", "stalls", "--comm", "x"])
            .unwrap()
            .command
        else {
            panic!("expected stalls")
        };
        assert_eq!(RecordOptions::from(s).targets.comm.as_deref(), Some("x"));
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
