//! `profiler record`: capture a window, then write flamegraphs and a report.
mod allocators;
pub mod capture;
pub(crate) mod output;
mod session;
pub mod snapshot;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

pub use capture::{Capture, Window};
pub use session::Session;

use crate::{procfs, render::waits::WaitReport};

/// What to record, as plain values (the CLI converts its arguments into this).
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub pids: Vec<u32>,
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
    /// Record blocked time (wait probes) and judge stalls.
    pub waits: bool,
    /// Waits shorter than this are only counted.
    pub wait_threshold: Duration,
    /// Threads blocked longer than this with no wake count towards a stall.
    pub stall_threshold: Duration,
}

/// What a finished capture wrote, for the command line summary.
#[derive(Debug)]
pub struct RecordSummary {
    pub out: PathBuf,
    pub window_secs: f64,
    pub events_seen: u64,
    pub events_lost: u64,
    pub stop_reason: &'static str,
}

/// Run a capture. Errors are one-line messages for the user.
pub async fn record(opts: &RecordOptions) -> anyhow::Result<RecordSummary> {
    ensure_targets_exist(&opts.pids)?;
    output::prepare_dir(&opts.out)?;

    let mut capture = Capture::attach(opts)?;
    eprintln!(
        "profiler: recording {} {}; press Ctrl-C to stop early",
        describe_targets(&opts.pids),
        match opts.duration {
            Some(d) => format!("for {:.1} s", d.as_secs_f64()),
            None => "until Ctrl-C".into(),
        }
    );

    let stop_reason = capture_loop(&mut capture, opts.duration).await?;
    let window = capture.finish(None);
    drop(capture); // detach the probes before the (slower) rendering
    output::write_all(
        &opts.out,
        window.memory.as_ref(),
        window.waits.as_ref(),
        &window.counters,
        window.window_secs,
    )?;
    Ok(RecordSummary {
        out: opts.out.clone(),
        window_secs: window.window_secs,
        events_seen: window.counters.seen,
        events_lost: window.counters.lost,
        stop_reason,
    })
}

/// One line for a missing target, before anything is loaded.
pub(crate) fn ensure_targets_exist(pids: &[u32]) -> anyhow::Result<()> {
    anyhow::ensure!(!pids.is_empty(), "no target: give at least one --pid");
    for &pid in pids {
        anyhow::ensure!(procfs::is_alive(pid), "process {pid} does not exist");
    }
    Ok(())
}

/// `profiler stalls`: watch the targets' waits briefly, then print the verdict and the
/// blocked stacks. Returns the wait report (printed by the caller).
pub async fn stalls(opts: &RecordOptions) -> anyhow::Result<WaitReport> {
    ensure_targets_exist(&opts.pids)?;
    let mut capture = Capture::attach(opts)?;
    tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(2))).await;
    Ok(capture.wait_report(None))
}

async fn capture_loop(
    capture: &mut Capture,
    duration: Option<Duration>,
) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok("window elapsed"),
            _ = sigint.recv() => return Ok("interrupted (SIGINT)"),
            _ = sigterm.recv() => return Ok("terminated (SIGTERM)"),
            r = capture.next_batch(&mut batch, Duration::from_millis(200)) => {
                r?;
                for record in batch.drain(..) {
                    capture.session.ingest(record);
                }
                if capture.session.all_exited() {
                    return Ok("every target exited");
                }
            }
        }
    }
}

pub(crate) fn describe_targets(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("pid {}", list.join(", "))
}
