//! `profiler record`: capture a window, then write flamegraphs and a report.
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
    targets::{ProcessInfo, TargetSelector, TargetSpec},
};

/// How often the target set is rescanned for new matches of `--comm`, `--cgroup` and
/// `--container` (a restarted container's process is forked by the runtime, not by the
/// old target, so only a scan finds it) and for targets that exited.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(250);

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

    let stop_reason = capture_loop(&mut collector, &mut session, &selector, opts.duration).await?;
    let mut batch = Vec::new();
    collector.drain(&mut batch);
    for record in batch {
        session.ingest(record);
    }
    let window_secs = started.elapsed().as_secs_f64();
    session.read_final_rss();
    let counters = collector.counters();
    let waits = opts
        .waits
        .then(|| wait_report(&mut session, &collector, opts, started.elapsed()));
    drop(collector); // detach the probes before the (slower) rendering
    let memory = opts.memory.then(|| {
        session.report(
            selector.describe().to_string(),
            window_secs,
            opts.sample_bytes,
            counters,
        )
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
    duration: Option<Duration>,
) -> anyhow::Result<&'static str> {
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
            _ = rescan.tick() => update_targets(collector, session, selector)?,
            r = collector.next_batch(&mut batch, Duration::from_millis(200)) => {
                r?;
                for record in batch.drain(..) {
                    session.ingest(record);
                }
                for (pid, brk) in session.take_adopted() {
                    if let Some(brk) = brk {
                        collector.seed_brk(pid, brk)?;
                    }
                    if !selector.is_all() {
                        announce("forked by a target", session, pid);
                    }
                }
            }
        }
        if fixed_set && session.all_exited() {
            return Ok("every target exited");
        }
    }
}

/// One rescan: targets that are gone are finalised and leave the kernel's target map
/// (their PID may be reused); new matches of the selectors become targets.
fn update_targets(
    collector: &mut Collector,
    session: &mut Session,
    selector: &TargetSelector,
) -> anyhow::Result<()> {
    let gone: Vec<u32> = session
        .targets
        .values()
        .filter(|t| !t.exited && !procfs::is_alive(t.pid))
        .map(|t| t.pid)
        .collect();
    for pid in gone {
        session.mark_exited(pid);
        if !selector.is_all() {
            collector.remove_target(pid)?;
        }
    }
    if !selector.follows_new_processes() || selector.is_all() {
        return Ok(());
    }
    for p in selector.scan_unknown(|pid| session.knows(pid)) {
        // Gone between the scan and now: the next scan will not see it either.
        if let Ok(brk) = session.add_target(p.pid) {
            collector.add_target(p.pid, brk)?;
            announce("matched", session, p.pid);
        }
    }
    Ok(())
}

/// `profiler: following comm (pid N) …, <why>`: tells a person (and the tests) when a
/// process joined the capture.
fn announce(why: &str, session: &Session, pid: u32) {
    if let Some(t) = session.targets.get(&pid) {
        eprintln!(
            "profiler: following {}, {why}",
            describe_processes(&[ProcessInfo {
                pid,
                comm: t.comm.clone(),
                identity: t.identity.clone(),
            }])
        );
    }
}

/// `nginx (pid 12, container 4f1d2c3b5a69), nginx (pid 13)`; the first 10 only.
fn describe_processes(processes: &[ProcessInfo]) -> String {
    let mut parts: Vec<String> = processes
        .iter()
        .take(10)
        .map(|p| {
            let mut s = format!("{} (pid {}", p.comm, p.pid);
            if let Some(ns) = p.identity.ns_pid {
                s.push_str(&format!(", pid {ns} in its namespace"));
            }
            if let Some(c) = &p.identity.container {
                s.push_str(&format!(", container {}", c.short()));
            }
            s.push(')');
            s
        })
        .collect();
    if processes.len() > 10 {
        parts.push(format!("and {} more", processes.len() - 10));
    }
    parts.join(", ")
}
