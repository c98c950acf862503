//! `profiler record`: capture a window, then write flamegraphs and a report.
mod allocators;
mod output;
mod session;
pub mod snapshot;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

pub use session::Session;

use crate::{
    collect::{Collector, CollectorConfig},
    offcpu::{verdict, ThreadSnapshot},
    procfs,
    render::waits::{BlockedStack, ProcessWaits, WaitReport},
};

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
    /// Mean bytes between sampled allocations.
    pub alloc_sample_bytes: u64,
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

    let (mut collector, mut session) = attach(opts)?;
    let started = std::time::Instant::now();
    eprintln!(
        "profiler: recording {} {}; press Ctrl-C to stop early",
        describe_targets(&opts.pids),
        match opts.duration {
            Some(d) => format!("for {:.1} s", d.as_secs_f64()),
            None => "until Ctrl-C".into(),
        }
    );

    let stop_reason = capture_loop(&mut collector, &mut session, opts.duration).await?;
    let mut batch = Vec::new();
    collector.drain(&mut batch);
    for record in batch {
        session.ingest(record);
    }
    let window_secs = started.elapsed().as_secs_f64();
    session.read_final_rss();
    session.read_resident(&collector);
    let counters = collector.counters();
    let waits = opts
        .waits
        .then(|| wait_report(&mut session, &collector, opts, started.elapsed()));
    // Detaching costs the kernel a grace period per tracepoint (about 0.1 s each, 4 s in
    // all here): stop tracing the targets now and detach on a thread while the files are
    // written, so the flamegraph does not wait for it.
    collector.forget_targets()?;
    let detach = std::thread::spawn(move || drop(collector));
    let memory = opts.memory.then(|| {
        let mut report = session.report(
            describe_targets(&opts.pids),
            window_secs,
            opts.sample_bytes,
            counters,
        );
        report.alloc_sample_bytes = opts.alloc_sample_bytes;
        report
    });
    output::write_all(
        &opts.out,
        memory.as_ref(),
        waits.as_ref(),
        &counters,
        window_secs,
    )?;
    let _ = detach.join();
    Ok(RecordSummary {
        out: opts.out.clone(),
        window_secs,
        events_seen: counters.seen,
        events_lost: counters.lost,
        stop_reason,
    })
}

/// One line for a missing target, before anything is loaded.
fn ensure_targets_exist(pids: &[u32]) -> anyhow::Result<()> {
    anyhow::ensure!(!pids.is_empty(), "no target: give at least one --pid");
    for &pid in pids {
        anyhow::ensure!(procfs::is_alive(pid), "process {pid} does not exist");
    }
    Ok(())
}

/// Check the targets, load and attach the probes, seed the session.
fn attach(opts: &RecordOptions) -> anyhow::Result<(Collector, Session)> {
    anyhow::ensure!(
        opts.memory || opts.waits,
        "nothing to record: enable --memory or --waits"
    );
    let mut collector = Collector::load(&CollectorConfig {
        sample_bytes: opts.sample_bytes,
        alloc_sample_bytes: opts.alloc_sample_bytes,
        stack_pages: opts.stack_pages,
        all_processes: false,
        wait_threshold_ns: opts.wait_threshold.as_nanos() as u64,
    })?;
    let mut session = Session::new();
    for &pid in &opts.pids {
        let brk = session
            .add_target(pid)
            .with_context(|| format!("attaching to process {pid}"))?;
        collector.add_target(pid, brk)?;
    }
    if opts.memory {
        collector.attach_memory_probes()?;
        if !collector.attach_rss_probe()? {
            eprintln!("profiler: note: this kernel has no tracepoint kmem:rss_stat; resident memory comes from /proc only");
        }
        if opts.allocations {
            for &pid in &opts.pids {
                allocators::attach(&mut collector, &mut session, pid, opts.allocator.as_deref());
            }
        }
    }
    if opts.waits {
        for name in collector.attach_wait_probes()? {
            eprintln!("profiler: note: this kernel has no tracepoint syscalls:{name}; those waits are not seen");
        }
    }
    session.window_start_ns = crate::collect::monotonic_now_ns();
    Ok((collector, session))
}

/// Snapshot the in-flight waits of every live target and judge stalls.
fn wait_report(
    session: &mut Session,
    collector: &Collector,
    opts: &RecordOptions,
    observed: Duration,
) -> WaitReport {
    let observed_ns = observed.as_nanos() as u64;
    let stall_ns = opts.stall_threshold.as_nanos() as u64;
    let mut processes = Vec::new();
    let pids: Vec<u32> = session.targets.keys().copied().collect();
    for pid in pids {
        let snap = snapshot::take(session, collector, pid, observed_ns);
        let stacks = &session.stacks;
        let (verdict, in_flight) = match &snap {
            Some(snap) => verdict::judge(snap, stall_ns, |id| {
                stacks.get(id).map(|s| s.names.clone()).unwrap_or_default()
            }),
            None => (verdict::Verdict::Exited, Vec::new()),
        };
        let snap = snap.unwrap_or_else(|| ThreadSnapshot {
            pid,
            comm: session
                .targets
                .get(&pid)
                .map(|t| t.comm.clone())
                .unwrap_or_default(),
            observed_ns,
            ..Default::default()
        });
        let completed = session
            .waits
            .of_process(pid)
            .into_iter()
            .map(|(on, stack, totals)| BlockedStack {
                kind: on.kind_label(),
                on: on.describe(),
                frames: stack
                    .and_then(|id| stacks.get(id))
                    .map(|s| s.names.clone())
                    .unwrap_or_default(),
                ns: totals.ns,
                count: totals.count,
            })
            .collect();
        let mut futexes: Vec<(u64, u64, u64)> = snap
            .futex_waits
            .iter()
            .map(|(&addr, &waits)| {
                (
                    addr,
                    waits,
                    snap.futex_wakes.get(&addr).copied().unwrap_or(0),
                )
            })
            .collect();
        futexes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        processes.push(ProcessWaits {
            pid,
            comm: snap.comm.clone(),
            threads: snap.threads,
            verdict,
            completed,
            in_flight,
            futexes,
            observed_ns,
        });
    }
    WaitReport {
        threshold_ns: opts.wait_threshold.as_nanos() as u64,
        stall_threshold_ns: stall_ns,
        short_waits: collector.counters().short_waits,
        processes,
    }
}

/// `profiler stalls`: watch the targets' waits briefly, then print the verdict and the
/// blocked stacks. Returns the wait report (printed by the caller).
pub async fn stalls(opts: &RecordOptions) -> anyhow::Result<WaitReport> {
    ensure_targets_exist(&opts.pids)?;
    let (collector, mut session) = attach(opts)?;
    let started = std::time::Instant::now();
    tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(2))).await;
    Ok(wait_report(
        &mut session,
        &collector,
        opts,
        started.elapsed(),
    ))
}

async fn capture_loop(
    collector: &mut Collector,
    session: &mut Session,
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
            r = collector.next_batch(&mut batch, Duration::from_millis(200)) => {
                r?;
                for record in batch.drain(..) {
                    session.ingest(record);
                }
                if session.all_exited() {
                    return Ok("every target exited");
                }
            }
        }
    }
}

fn describe_targets(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("pid {}", list.join(", "))
}
