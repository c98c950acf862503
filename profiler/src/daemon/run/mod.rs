//! The daemon's loop: one long-lived [`Capture`] (probes attached once), windows cut
//! on a fixed schedule, snapshots when the kernel or a check says so.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use time::OffsetDateTime;

mod off_schedule;

use super::{
    forecast::OomWatch,
    index,
    layout::CaptureKind,
    retention,
    sinks::{IntervalSink, PushSink},
    snapshots::Triggers,
    write, DaemonOptions,
};
use crate::{
    collect::Record,
    push::PushWorker,
    record::{Capture, Delivery, Driver, Sink, Wake, Window},
    targets::TargetSelector,
};

/// How often the stall verdict is evaluated: often enough to catch a stall soon after
/// it passes the threshold, rarely enough that reading every thread's stack is cheap.
fn stall_check_period(stall_threshold: Duration) -> Duration {
    (stall_threshold / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// The running daemon.
pub struct Daemon {
    opts: DaemonOptions,
    /// The selectors can match processes that start later (not only --pid).
    follows_new: bool,
    capture: Capture,
    title: String,
    window_started: OffsetDateTime,
    triggers: Triggers,
    /// The cgroup of each target, read when it was added (a killed process's is gone).
    cgroups: HashMap<u32, String>,
    /// Where each interval goes: its directory, then Pyroscope when pushing.
    sinks: Vec<Box<dyn Sink>>,
    /// Warned once already that every target is gone.
    warned_no_targets: bool,
    /// Captures that could not be written, for the index.
    failed_captures: Vec<index::FailedCapture>,
    /// Resident memory per target across intervals, for time to OOM.
    oom_watch: OomWatch,
    pub windows_written: u64,
    pub snapshots_written: u64,
}

impl Daemon {
    /// Load and attach the probes for the targets of `opts`.
    pub fn start(opts: DaemonOptions) -> anyhow::Result<Self> {
        let mut selector = TargetSelector::new(&opts.record.targets)?;
        let initial = selector.resolve()?;
        // Privileges first: a run that will be refused must not leave an empty directory.
        crate::collect::check_host()?;
        crate::record::output::prepare_dir(&opts.out)?;
        // With --all, processes are added when their first event arrives.
        let eager = if selector.is_all() {
            &[][..]
        } else {
            &initial[..]
        };
        let title = format!("profiler daemon: {}", selector.describe());
        let follows_new = selector.follows_new_processes();
        let mut capture = Capture::attach(&opts.record, selector, eager)?;
        // A census reads the whole heap: only for a stall snapshot, not every window.
        capture.async_census = false;
        capture.judge_by_trend();
        if !capture.attach_oom_probe()? {
            eprintln!("profiler: warning: this kernel has no tracepoint oom:mark_victim; OOM snapshots are off");
        }
        let triggers = Triggers::new(opts.snapshot_cooldown);
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(IntervalSink {
            out: opts.out.clone(),
        })];
        if let Some(push) = opts.push.clone() {
            let worker = PushWorker::spawn(push).context("--push-url")?;
            sinks.push(Box::new(PushSink::new(worker)));
        }
        let mut daemon = Self {
            sinks,
            title,
            follows_new,
            opts,
            capture,
            window_started: OffsetDateTime::now_utc(),
            triggers,
            cgroups: HashMap::new(),
            warned_no_targets: false,
            failed_captures: Vec::new(),
            oom_watch: OomWatch::new(Instant::now()),
            windows_written: 0,
            snapshots_written: 0,
        };
        daemon.remember_cgroups();
        Ok(daemon)
    }

    /// The memory cgroup of every target, read when it joins: an OOM-killed process's
    /// is gone from /proc by the time its snapshot is written.
    fn remember_cgroups(&mut self) {
        for t in self.capture.session.state.targets.values() {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.cgroups.entry(t.pid) {
                let mut cgroup =
                    crate::targets::read_memory_cgroup(t.pid).or_else(|| t.identity.cgroup.clone());
                if let (Some(c), Some(id)) = (&mut cgroup, &t.identity.container) {
                    c.push_str(&format!(" (container {})", id.short()));
                }
                if let Some(c) = cgroup {
                    slot.insert(c);
                }
            }
        }
    }

    /// Run until SIGTERM / SIGINT; the current window is written before returning.
    pub async fn run(&mut self) -> anyhow::Result<&'static str> {
        let mut driver = Driver::new(true)?;
        let interval = self.opts.interval;
        let mut due = tokio::time::Instant::now() + interval;
        driver.deadline = Some(due);
        let rss_check = self
            .opts
            .rss_threshold
            .is_some()
            .then(|| driver.every(Duration::from_secs(1)));
        let stall_check = self
            .opts
            .record
            .waits
            .then(|| driver.every(stall_check_period(self.opts.record.stall_threshold)));
        self.write_index();
        let mut batch = Vec::new();
        loop {
            match driver.wait(&mut self.capture, &mut batch).await {
                Wake::Deadline => {
                    self.end_window();
                    // The schedule does not drift with the time spent writing; a window
                    // that overran starts the next one from now.
                    due += interval;
                    let now = tokio::time::Instant::now();
                    if due <= now {
                        due = now + interval;
                    }
                    driver.deadline = Some(due);
                }
                Wake::Hangup => {
                    eprintln!("profiler: SIGHUP: starting a new interval");
                    self.end_window();
                    due = tokio::time::Instant::now() + interval;
                    driver.deadline = Some(due);
                }
                Wake::Stop(reason) => {
                    self.end_window();
                    return Ok(reason);
                }
                Wake::Check(i) if Some(i) == rss_check => self.check_rss(),
                Wake::Check(i) if Some(i) == stall_check => self.check_stalls(),
                Wake::Check(_) => {}
                Wake::Rescan => {
                    // A target that exits or a selector that fails to scan never stops
                    // the daemon: it says so and goes on.
                    if let Err(e) = self.capture.update_targets() {
                        eprintln!("profiler: warning: updating the targets: {e:#}");
                    }
                    self.remember_cgroups();
                }
                Wake::Batch(r) => {
                    r?;
                    self.ingest(&mut batch);
                }
            }
        }
    }

    /// Apply a batch; OOM kills are snapshotted after the rest of the batch, so the
    /// victim's ledger has every event the kernel sent before the kill.
    fn ingest(&mut self, batch: &mut Vec<Record>) {
        let mut ooms = Vec::new();
        let mut rest = Vec::with_capacity(batch.len());
        for record in batch.drain(..) {
            match record {
                Record::Oom(oom) if self.triggers.oom(oom.victim_pid) => {
                    // Symbolize the allocating stack at once: the victim's files stop
                    // being reachable through /proc once its exit has gone far enough.
                    let trigger = self.trigger_stack(&oom);
                    ooms.push((oom, trigger));
                }
                Record::Oom(_) => {}
                other => rest.push(other),
            }
        }
        if let Err(e) = self.capture.apply_batch(&mut rest) {
            eprintln!("profiler: warning: following a new process: {e:#}");
        }
        for (oom, trigger) in ooms {
            self.oom_snapshot(&oom, trigger.as_deref());
        }
    }

    /// Write the window that just ended and start the next one.
    fn end_window(&mut self) {
        let mut delivery = Delivery {
            started: self.window_started,
            ended: OffsetDateTime::now_utc(),
            dir: None,
            labels: self.labels(),
        };
        let ended = delivery.ended;
        match self.finish(None) {
            Ok(mut window) => {
                self.oom_watch.observe(
                    &mut window,
                    Instant::now(),
                    crate::targets::memory_limit::read,
                );
                for sink in &mut self.sinks {
                    if let Err(e) = sink.deliver(&window, &mut delivery) {
                        eprintln!("profiler: warning: interval not written: {e:#}");
                        self.capture_failed(CaptureKind::Interval, ended, &e);
                        break;
                    }
                }
            }
            Err(e) => eprintln!("profiler: warning: interval not written: {e:#}"),
        }
        if delivery.dir.is_some() {
            self.windows_written += 1;
        }
        let gone: Vec<u32> = self
            .capture
            .session
            .state
            .targets
            .values()
            .filter(|t| t.exited)
            .map(|t| t.pid)
            .collect();
        for pid in gone {
            self.triggers.forget(pid);
            self.cgroups.remove(&pid);
            self.oom_watch.forget(pid);
        }
        self.capture.next_window();
        self.window_started = ended;
        if self.capture.session.state.targets.is_empty() && !self.warned_no_targets {
            eprintln!(
                "profiler: note: every target has exited; the daemon keeps running{}",
                if self.follows_new {
                    " and picks up new matches"
                } else {
                    ""
                }
            );
            self.warned_no_targets = true;
        }
        self.prune_and_index();
    }

    /// Who the window was of, for remote sinks: the process (and container) when the
    /// window had one target, else the selectors.
    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::new();
        let targets: Vec<_> = self.capture.session.state.targets.values().collect();
        if let [t] = targets[..] {
            labels.insert("process".to_string(), t.comm.clone());
            if let Some(c) = &t.identity.container {
                labels.insert("container".to_string(), c.short().to_string());
            }
        } else {
            labels.insert(
                "targets".to_string(),
                self.title.replace("profiler daemon: ", ""),
            );
        }
        labels
    }

    /// Finish every sink (the pusher gets a few seconds for queued captures).
    pub fn close_sinks(&mut self) {
        for sink in &mut self.sinks {
            sink.close();
        }
    }

    /// End the window of every target (or only `pid`), probes still attached.
    fn finish(&mut self, only: Option<u32>) -> anyhow::Result<Window> {
        self.capture.finish(only).inspect_err(|e| {
            eprintln!("profiler: warning: finishing the window: {e:#}");
        })
    }

    /// Create the capture directory, write the window's files and `capture.json`.
    fn write_capture(
        &self,
        kind: CaptureKind,
        started: OffsetDateTime,
        ended: OffsetDateTime,
        window: &Window,
        process: Option<(u32, &str)>,
        extra: Option<(&str, &str)>,
    ) -> anyhow::Result<std::path::PathBuf> {
        write::CaptureWrite {
            kind,
            started,
            ended,
            process,
            cgroup: process.and_then(|(pid, _)| self.cgroups.get(&pid).cloned()),
            extra,
        }
        .write(&self.opts.out, window)
    }

    /// Apply retention, then rewrite the index (again if retention removed captures,
    /// so the index never links to a deleted capture and the bound holds with it).
    fn prune_and_index(&mut self) {
        self.write_index();
        let outcome = retention::apply(
            &self.opts.out,
            self.opts.retention,
            OffsetDateTime::now_utc(),
        );
        if outcome.deleted > 0 {
            self.write_index();
        }
        if let Some(max) = self.opts.retention.max_bytes {
            if outcome.total_bytes > max {
                eprintln!(
                    "profiler: warning: the newest capture alone ({} with the index) exceeds --max-disk {}",
                    crate::units::human_bytes(outcome.total_bytes as f64),
                    crate::units::human_bytes(max as f64)
                );
            }
        }
    }

    /// Remember a capture that could not be written (its directory is already gone) and
    /// show it in the index.
    fn capture_failed(&mut self, kind: CaptureKind, time: OffsetDateTime, e: &anyhow::Error) {
        self.failed_captures.push(index::FailedCapture {
            kind,
            time,
            error: format!("{e:#}"),
        });
        self.write_index();
    }

    fn write_index(&self) {
        if let Err(e) = index::write(&self.opts.out, &self.title, &self.failed_captures) {
            eprintln!("profiler: warning: cannot write the index: {e}");
        }
    }
}
