//! `profiler record`: capture a window, then write flamegraphs and a report.
mod allocators;
pub mod capture;
mod connections;
pub mod driver;
pub mod follow;
pub(crate) mod output;
pub mod records_file;
pub mod replay;
mod session;
pub mod sink;

use std::{path::PathBuf, time::Duration};

pub use capture::{Capture, Window};
pub use driver::{Driver, Wake};
pub use follow::{describe_processes, RESCAN_INTERVAL};
pub use session::Session;
pub use sink::{Delivery, DirSink, Sink};

use crate::{
    model::WaitReport,
    targets::{TargetSelector, TargetSpec},
};

/// What to record, as plain values (the CLI converts its arguments into this).
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Which processes: `--pid`, `--comm`, `--cgroup`, `--container`, `--all`.
    pub targets: TargetSpec,
    /// None: until Ctrl-C / SIGTERM (or every target exited).
    pub duration: Option<Duration>,
    pub out: PathBuf,
    pub sample_bytes: u64,
    pub stack_pages: u32,
    /// Record memory growth (mapping probes).
    pub memory: bool,
    /// With `memory`: also probe the allocator (malloc/free uprobes) for live
    /// allocations and the leak / retention verdict.
    pub allocations: bool,
    /// Probe this binary's allocator instead of the detected one.
    pub allocator: Option<PathBuf>,
    /// Mean bytes between sampled allocations.
    pub alloc_sample_bytes: u64,
    /// Record blocked time (wait probes) and judge stalls.
    pub waits: bool,
    /// With `waits`: follow the targets' connections and requests (the socket probes
    /// of the connection ledger) and judge requests that go unanswered.
    pub requests: bool,
    /// Waits shorter than this are only counted.
    pub wait_threshold: Duration,
    /// Threads blocked longer than this with no wake count towards a stall.
    pub stall_threshold: Duration,
    /// Save the capture stream here (`--save-records`), for `profiler replay`.
    pub save_records: Option<PathBuf>,
    /// Say how each probe was attached and how user registers are found (`-v`).
    pub verbose: bool,
    /// Load every program empty (returning at entry): the bench's floor, the kernel's
    /// own price for the same attach points. Records nothing.
    pub empty_programs: bool,
}

/// What a finished capture wrote, for the command line summary.
#[derive(Debug)]
pub struct RecordSummary {
    pub out: PathBuf,
    pub window_secs: f64,
    pub events_seen: u64,
    pub events_lost: u64,
    pub stop_reason: &'static str,
    /// The verdict of each process and the files written, to print last.
    pub end_of_run: String,
}

/// Run a capture. Errors are one-line messages for the user.
pub async fn record(opts: &RecordOptions) -> anyhow::Result<RecordSummary> {
    let mut selector = TargetSelector::new(&opts.targets)?;
    let initial = selector.resolve()?;
    // Privileges first: a run that will be refused must not leave an empty directory.
    crate::collect::check_host()?;
    output::prepare_dir(&opts.out)?;

    // With --all, processes are added when their first event arrives.
    let eager = if selector.is_all() {
        &[][..]
    } else {
        &initial[..]
    };
    let description = start_description(&selector, &initial);
    let mut capture = Capture::attach(opts, selector, eager)?;
    eprintln!(
        "profiler: recording {description} {}; press Ctrl-C to stop early",
        match opts.duration {
            Some(d) => format!("for {:.1} s", d.as_secs_f64()),
            None => "until Ctrl-C".into(),
        }
    );

    let stop_reason = capture_loop(&mut capture, opts.duration).await?;
    let window = capture.finish(None)?;
    let recorder = capture.session.take_recorder();
    // Detaching costs the kernel a grace period per tracepoint (about 0.1 s each, 4 s in
    // all here): stop tracing the targets now and detach on a thread while the files are
    // written, so the flamegraph does not wait for it.
    let detach = capture.detach_in_background()?;
    let now = time::OffsetDateTime::now_utc();
    let mut delivery = Delivery {
        started: now - time::Duration::seconds_f64(window.window_secs),
        ended: now,
        dir: None,
        labels: Default::default(),
    };
    let mut sink = DirSink::new(opts.out.clone());
    sink.deliver(&window, &mut delivery)?;
    let _ = detach.join();
    if let Some(writer) = recorder {
        let path = writer.finish()?;
        eprintln!("profiler: capture stream saved to {}", path.display());
    }
    Ok(RecordSummary {
        out: opts.out.clone(),
        window_secs: window.window_secs,
        events_seen: window.counters.seen,
        events_lost: window.counters.lost,
        stop_reason,
        end_of_run: crate::render::summary::end_of_run(
            window.memory.as_ref(),
            window.waits.as_ref(),
            &opts.out,
            &sink.written,
        ),
    })
}

/// What the start line says is recorded: the processes by name when they were named by
/// PID (`leaky (pid 13750)`), else the selectors and what they match now
/// (`comm /^node$/, matching node (pid 12), node (pid 14)`).
fn start_description(selector: &TargetSelector, initial: &[crate::targets::ProcessInfo]) -> String {
    if selector.is_all() {
        return format!("{} ({} processes now)", selector.describe(), initial.len());
    }
    let processes = describe_processes(initial);
    if selector.follows_new_processes() {
        format!("{}, matching {processes}", selector.describe())
    } else {
        processes
    }
}

/// `profiler stalls`: watch the targets' waits briefly, then print the verdict and the
/// blocked stacks. Returns the wait report (printed by the caller).
pub async fn stalls(opts: &RecordOptions) -> anyhow::Result<WaitReport> {
    let mut selector = TargetSelector::new(&opts.targets)?;
    let initial = selector.resolve()?;
    // Every selected process up front, --all included: a stuck one sends no event.
    let mut capture = Capture::attach(opts, selector, &initial)?;
    // Drain the ring while watching: the connection ledger's records arrive all along.
    capture_loop(
        &mut capture,
        Some(opts.duration.unwrap_or(Duration::from_secs(2))),
    )
    .await?;
    capture.wait_report(None)
}

async fn capture_loop(
    capture: &mut Capture,
    duration: Option<Duration>,
) -> anyhow::Result<&'static str> {
    let mut driver = Driver::new(false)?;
    driver.deadline = duration.map(|d| tokio::time::Instant::now() + d);
    // With only --pid, the set changes only by forks (followed in the kernel): when
    // every target is gone, the window is over. Patterns may match again later.
    let fixed_set = !capture.selector().follows_new_processes();
    let mut batch = Vec::new();
    loop {
        match driver.wait(capture, &mut batch).await {
            Wake::Deadline => return Ok("window elapsed"),
            Wake::Stop(reason) => return Ok(reason),
            Wake::Rescan => capture.update_targets()?,
            Wake::Batch(r) => {
                r?;
                capture.apply_batch(&mut batch)?;
            }
            Wake::Hangup | Wake::Check(_) => {}
        }
        if fixed_set && capture.session.all_exited() {
            return Ok("every target exited");
        }
    }
}
