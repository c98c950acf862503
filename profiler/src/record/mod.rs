//! `profiler record`: capture a window, then write flamegraphs and a report.
mod allocators;
pub mod follow;
mod output;
mod session;
pub mod snapshot;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

pub use follow::{describe_processes, RESCAN_INTERVAL};
pub use session::Session;

use crate::{
    collect::{Collector, CollectorConfig},
    offcpu::{verdict, ThreadSnapshot},
    render::waits::{BlockedStack, ProcessWaits, WaitReport},
    targets::{ProcessInfo, TargetSelector, TargetSpec},
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
    let mut selector = TargetSelector::new(&opts.targets)?;
    let initial = selector.resolve()?;
    output::prepare_dir(&opts.out)?;

    // With --all, processes are added when their first event arrives.
    let eager = if selector.is_all() {
        &[][..]
    } else {
        &initial[..]
    };
    let (mut collector, mut session) = attach(opts, &selector, eager)?;
    let started = std::time::Instant::now();
    eprintln!(
        "profiler: recording {} ({}) {}; press Ctrl-C to stop early",
        selector.describe(),
        if selector.is_all() {
            format!("{} processes now", initial.len())
        } else {
            describe_processes(&initial)
        },
        match opts.duration {
            Some(d) => format!("for {:.1} s", d.as_secs_f64()),
            None => "until Ctrl-C".into(),
        }
    );

    let stop_reason = capture_loop(&mut collector, &mut session, &selector, opts).await?;
    let mut batch = Vec::new();
    collector.drain(&mut batch);
    follow::apply_batch(&mut collector, &mut session, &selector, opts, &mut batch)?;
    let window_secs = started.elapsed().as_secs_f64();
    session.read_final_rss();
    session.read_resident(&collector);
    let counters = collector.counters();
    let waits = opts
        .waits
        .then(|| wait_report(&mut session, &collector, opts, started.elapsed()));
    drop(collector); // detach the probes before the (slower) rendering
    let memory = opts.memory.then(|| {
        let mut report = session.report(
            selector.describe().to_string(),
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
    Ok(RecordSummary {
        out: opts.out.clone(),
        window_secs,
        events_seen: counters.seen,
        events_lost: counters.lost,
        stop_reason,
    })
}

/// Load the probes, seed the session with `targets`, attach.
fn attach(
    opts: &RecordOptions,
    selector: &TargetSelector,
    targets: &[ProcessInfo],
) -> anyhow::Result<(Collector, Session)> {
    anyhow::ensure!(
        opts.memory || opts.waits,
        "nothing to record: enable --memory or --waits"
    );
    let mut collector = Collector::load(&CollectorConfig {
        sample_bytes: opts.sample_bytes,
        alloc_sample_bytes: opts.alloc_sample_bytes,
        stack_pages: opts.stack_pages,
        all_processes: selector.is_all(),
        wait_threshold_ns: opts.wait_threshold.as_nanos() as u64,
    })?;
    let mut session = Session::new();
    for p in targets {
        match session.add_target(p.pid) {
            Ok(brk) => collector.add_target(p.pid, brk)?,
            // Asked for by PID: its failure is the user's error.
            Err(e) if opts.targets.pids.contains(&p.pid) => {
                return Err(e).with_context(|| format!("attaching to process {}", p.pid))
            }
            // Matched by a pattern and gone since: nothing to profile.
            Err(_) => {}
        }
    }
    anyhow::ensure!(
        selector.is_all() || !session.targets.is_empty(),
        "every process that matched {} exited before the probes attached",
        selector.describe()
    );
    if !selector.is_all() {
        collector.attach_fork_follower()?;
    }
    if opts.memory {
        collector.attach_memory_probes()?;
        if !collector.attach_rss_probe()? {
            eprintln!("profiler: note: this kernel has no tracepoint kmem:rss_stat; resident memory comes from /proc only");
        }
        if opts.allocations && selector.is_all() {
            eprintln!("profiler: note: with --all the allocator is not probed (mappings only); select processes with --pid, --comm, --cgroup or --container for live allocations");
        } else if opts.allocations {
            let pids: Vec<u32> = session.targets.keys().copied().collect();
            for pid in pids {
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
    for pid in session.pids_grouped() {
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
            identity: session
                .targets
                .get(&pid)
                .map(|t| t.identity.clone())
                .unwrap_or_default(),
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
    let mut selector = TargetSelector::new(&opts.targets)?;
    let initial = selector.resolve()?;
    // Every selected process up front, --all included: a stuck one sends no event.
    let (collector, mut session) = attach(opts, &selector, &initial)?;
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
    selector: &TargetSelector,
    opts: &RecordOptions,
) -> anyhow::Result<&'static str> {
    let duration = opts.duration;
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // With only --pid, the set changes only by forks (followed in the kernel): when
    // every target is gone, the window is over. Patterns may match again later.
    let fixed_set = !selector.follows_new_processes();
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok("window elapsed"),
            _ = sigint.recv() => return Ok("interrupted (SIGINT)"),
            _ = sigterm.recv() => return Ok("terminated (SIGTERM)"),
            _ = rescan.tick() => follow::update_targets(collector, session, selector, opts)?,
            r = collector.next_batch(&mut batch, Duration::from_millis(200)) => {
                r?;
                follow::apply_batch(collector, session, selector, opts, &mut batch)?;
            }
        }
        if fixed_set && session.all_exited() {
            return Ok("every target exited");
        }
    }
}
