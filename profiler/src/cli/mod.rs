//! Command-line arguments. Parsed values are converted into plain option structs
//! (`record::RecordOptions`) before use, so the commands never see clap types.
//! Shell completions and man pages are generated from these definitions
//! ([`generate`]).
pub mod generate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{record::RecordOptions, targets::TargetSpec, units};

/// eBPF production profiler: which stacks hold the memory that grew, and what every
/// thread is blocked on. Needs root.
#[derive(Debug, Parser)]
#[command(name = "profiler", version, about, propagate_version = true)]
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
    /// Print a shell completion script: `profiler completions bash >
    /// /etc/bash_completion.d/profiler`, or `source <(profiler completions bash)`.
    Completions(generate::CompletionsArgs),
    /// Write the man pages (profiler.1, profiler-record.1, …) into a directory; `cargo
    /// xtask man` runs it.
    #[command(hide = true)]
    Man(generate::ManArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The file `record --save-records` wrote.
    pub file: PathBuf,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
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
    #[arg(short, long, default_value = "diff.svg")]
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
            requests: true,
            wait_threshold: std::time::Duration::from_millis(1),
            stall_threshold: a.stall_threshold,
            save_records: None,
            verbose: false,
            empty_programs: false,
        }
    }
}

/// Which processes to profile: at least one selector; several combine as a union.
/// Children a target forks are followed too.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct TargetArgs {
    /// Process id to profile (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
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
    /// How long to record (e.g. 30s, 5m, 1h30m; a bare number is seconds); without it,
    /// until Ctrl-C.
    #[arg(long, value_parser = units::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also save the capture stream to FILE, for `profiler replay` (stacks are saved
    /// symbolized: no stack memory, no payload).
    #[arg(long, value_name = "FILE")]
    pub save_records: Option<PathBuf>,
    /// For `cargo xtask bench`'s floor only: attach the same probes with programs that
    /// return at once, so the traced process pays just the kernel's price for the
    /// attach points. Records nothing.
    #[arg(long, hide = true)]
    pub empty_programs: bool,
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
    /// Do not follow connections and requests: no socket probes on the targets'
    /// accept, connect, read, write and close, no requests verdict. Waits and thread
    /// stalls are still recorded. For hosts where the ledger's cost (about 1.3 % of a
    /// core for a server answering 10,000 requests/s, bench/results.md) matters more
    /// than the requests view.
    #[arg(long)]
    pub no_requests: bool,
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
            requests: !self.no_requests,
            wait_threshold: self.wait_threshold,
            stall_threshold: self.stall_threshold,
            save_records: None,
            verbose: self.verbose,
            empty_programs: false,
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
            empty_programs: a.empty_programs,
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
    #[arg(short, long, value_name = "DIR")]
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
mod tests;
