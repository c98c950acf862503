//! A capture: the loaded probes ([`Collector`]) and the userspace state they feed
//! ([`Session`]), shared by `record` (one window) and `daemon` (one window after the
//! other, with the probes attached throughout).
//!
//! Memory is a ledger of live mappings: a process's ranges keep the stack that created
//! them for as long as the capture follows the process, so a later window (and an OOM
//! snapshot) still knows who holds memory created in an earlier one. What is per window
//! is the rest: event counters, waits, futex wake counts, and the "before" values
//! (committed bytes and RSS) the report's net growth is measured from.
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{RecordOptions, Session};
use crate::targets::{ProcessInfo, TargetSelector};
use crate::{
    analyze::{requests::framing::CaptureChange, CaptureState},
    collect::{
        inflight, monotonic_now_ns, CollectError, Collector, CollectorConfig, Record, RegsSource,
    },
    model::{CaptureRecord, Counters, MemoryReport, WaitReport, WindowEnd},
    procfs,
    stacks::StackTable,
};

/// How long records may wait in the ring before userspace reads them: the kernel wakes
/// the reader only when the ring fills up. Short, because a stack's JS frames are named
/// from V8's heap when the sample is read, and young objects move within milliseconds.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// What one window learned, ready to be written.
#[derive(Debug)]
pub struct Window {
    pub memory: Option<MemoryReport>,
    pub waits: Option<WaitReport>,
    /// Event counters of this window only.
    pub counters: Counters,
    /// Seconds since the window started.
    pub window_secs: f64,
    /// Wall-clock end of the window, ns since the Unix epoch (None: a replay of a
    /// recording that did not keep it).
    pub ended_unix_ns: Option<i64>,
}

impl Window {
    /// The reports of the window `state` ended last (every target, or only `only`):
    /// the one path from the analysis state to what is written, live or replayed.
    /// None when no window has ended.
    pub fn of(state: &CaptureState, stacks: &StackTable, only: Option<u32>) -> Option<Self> {
        let end = state.window_end.as_ref()?;
        Some(Self {
            memory: end.memory.then(|| state.memory_report(end, stacks, only)),
            waits: end.waits.then(|| {
                state.wait_report(end.wait_threshold_ns, end.stall_threshold_ns, stacks, only)
            }),
            counters: end.counters,
            window_secs: end.window_secs,
            ended_unix_ns: end.ended_unix_ns,
        })
    }
}

/// Loaded, attached probes and the state they feed.
pub struct Capture {
    collector: Collector,
    pub session: Session,
    opts: RecordOptions,
    /// What is targeted, for titles (e.g. `pid 1234`).
    target_label: String,
    /// Which processes are targets; rescanned for new ones.
    selector: TargetSelector,
    /// When the probes were attached: memory growth is counted from here.
    attached: Instant,
    window_start: Instant,
    counters_at_start: Counters,
    /// Take the census of node targets' suspended async functions with every wait
    /// snapshot (`record`, `stalls`); the daemon takes it only for a stall snapshot.
    pub async_census: bool,
}

/// Say what this kernel could not give (always) and, with `verbose`, how every probe
/// was attached.
fn report_attachments(collector: &Collector, verbose: bool) {
    let regs = collector.regs_source();
    if let RegsSource::Unavailable(why) = regs {
        eprintln!("profiler: note: stacks are unavailable on this kernel ({why}); totals, waits and verdicts still work");
    }
    for line in collector.unavailable() {
        eprintln!("profiler: note: {line}");
    }
    if verbose {
        eprintln!("profiler: {}", regs.describe());
        for (program, how) in collector.attachments() {
            eprintln!("profiler: probe {program}: {how}");
        }
    }
}

impl Capture {
    /// Load the probes, seed the session with `targets` (selected by `selector`),
    /// attach. A process asked for by PID that cannot be attached is an error; one
    /// matched by a pattern and gone since is skipped.
    pub fn attach(
        opts: &RecordOptions,
        selector: TargetSelector,
        targets: &[ProcessInfo],
    ) -> anyhow::Result<Self> {
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
            empty_programs: opts.empty_programs,
        })?;
        let mut session = Session::new();
        if !opts.requests {
            session.without_connections();
        }
        if let Some(path) = &opts.save_records {
            session.record_to(super::records_file::RecordWriter::create(path)?);
        }
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
            selector.is_all() || !session.state.targets.is_empty(),
            "every process that matched {} exited before the probes attached",
            selector.describe()
        );
        if !selector.is_all() {
            collector.attach_fork_follower()?;
        }
        if opts.memory {
            // The allocator first: finding it reads the target's ELF files (seconds for
            // node's symbol table), and mappings seen meanwhile without their allocator
            // calls read as heap growth that no live allocation explains (a burst that
            // ended during that gap was called ALLOCATOR RETENTION).
            if opts.allocations && selector.is_all() {
                eprintln!("profiler: note: with --all the allocator is not probed (mappings only); select processes with --pid, --comm, --cgroup or --container for live allocations");
            } else if !selector.is_all() {
                let pids: Vec<u32> = session.state.targets.keys().copied().collect();
                for pid in pids {
                    super::allocators::join(&mut collector, &mut session, pid, opts);
                }
            }
            collector.attach_memory_probes()?;
            // kmem:rss_stat fires on every resident-page change, not per mapping: on a
            // storm that touches 16 pages per mmap it ran 240k times/s and cost the
            // target ~8 % (bench/results.md). Its per-kind peaks come with the deep-dive
            // mode; RSS by kind before -> after comes from /proc in any case.
            if opts.allocations && !collector.attach_rss_probe()? {
                eprintln!("profiler: note: this kernel has no tracepoint kmem:rss_stat; resident memory comes from /proc only");
            }
        }
        if opts.waits {
            for name in collector.attach_wait_probes(opts.requests)? {
                eprintln!("profiler: note: this kernel has no tracepoint syscalls:{name}; those waits are not seen");
            }
            if opts.requests {
                collector.attach_socket_probes()?;
            }
        }
        report_attachments(&collector, opts.verbose);
        session.apply(CaptureRecord::WindowStart {
            start_ns: monotonic_now_ns(),
        });
        let now = Instant::now();
        let mut capture = Self {
            collector,
            session,
            opts: opts.clone(),
            target_label: selector.describe().to_string(),
            selector,
            attached: now,
            window_start: now,
            counters_at_start: Counters::default(),
            async_census: true,
        };
        capture
            .session
            .apply(CaptureRecord::Baseline { only_new: false });
        Ok(capture)
    }

    /// The options the capture was attached with.
    pub fn options(&self) -> &RecordOptions {
        &self.opts
    }

    /// Name the targets in titles and reports (e.g. the daemon's selector).
    pub fn set_target_label(&mut self, label: String) {
        self.target_label = label;
    }

    /// Attach the OOM-kill probe; false when the kernel has no `oom:mark_victim`.
    pub fn attach_oom_probe(&mut self) -> Result<bool, CollectError> {
        self.collector.attach_oom_probe()
    }

    /// The target selector the capture follows.
    pub fn selector(&self) -> &TargetSelector {
        &self.selector
    }

    /// One rescan (see [`super::follow::update_targets`]): targets that are gone are
    /// finalised, new matches of the selectors become targets.
    pub fn update_targets(&mut self) -> anyhow::Result<()> {
        super::follow::update_targets(
            &mut self.collector,
            &mut self.session,
            &self.selector,
            &self.opts,
        )?;
        self.note_new_targets();
        Ok(())
    }

    /// Ingest a batch (draining it), following processes the session adopts.
    pub fn apply_batch(&mut self, batch: &mut Vec<Record>) -> anyhow::Result<()> {
        super::follow::apply_batch(
            &mut self.collector,
            &mut self.session,
            &self.selector,
            &self.opts,
            batch,
        )?;
        for (pid, fd, change) in self.session.take_capture_changes() {
            match change {
                CaptureChange::More => self.collector.capture_more(pid, fd),
                CaptureChange::CountOnly => self.collector.count_only(pid, fd),
                CaptureChange::CountExchanges { inbound } => {
                    self.collector.count_exchanges(pid, fd, inbound)
                }
            }
        }
        self.note_new_targets();
        Ok(())
    }

    /// Targets that joined mid-window: their "before" values are now.
    fn note_new_targets(&mut self) {
        let state = &self.session.state;
        if state
            .targets
            .values()
            .any(|t| t.committed_at_start.is_none())
        {
            self.session
                .apply(CaptureRecord::Baseline { only_new: true });
        }
    }

    /// Wait up to `timeout` for records and return them, not yet ingested.
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<Record>,
        timeout: Duration,
    ) -> Result<(), CollectError> {
        self.collector.next_batch(out, timeout).await
    }

    /// Take every record in the ring buffer now and apply it to the session.
    pub fn drain(&mut self) -> anyhow::Result<()> {
        let mut batch = Vec::new();
        self.collector.drain(&mut batch);
        self.apply_batch(&mut batch)
    }

    /// Stop tracing every target at once and detach the probes on a thread (detaching
    /// costs the kernel a grace period per probe), so output need not wait for it.
    pub fn detach_in_background(self) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let mut collector = self.collector;
        collector.forget_targets()?;
        Ok(std::thread::spawn(move || drop(collector)))
    }

    /// End the window: drain the ring, read the final RSS and build the reports of
    /// every target (or only `only`). The probes stay attached.
    pub fn finish(&mut self, only: Option<u32>) -> anyhow::Result<Window> {
        self.session.read_free_flow(&self.collector);
        self.drain()?;
        let now = Instant::now();
        self.session.read_final_rss();
        self.session.read_resident(&self.collector);
        self.session.read_js_frames();
        if self.opts.waits {
            if self.async_census {
                self.session.read_async_census(only);
            }
            // The census can take a second: the sockets are read after it, right before
            // the snapshot whose time ages the requests in flight. Read before it, a
            // request answered during the census counted as waiting all along.
            self.drain()?;
            self.settle_breaks()?;
            self.session.read_counted_sockets(&self.collector);
            self.snapshot_waits(only);
        } else {
            self.settle_breaks()?;
            self.session.read_counted_sockets(&self.collector);
        }
        self.session.apply(CaptureRecord::WindowEnd(WindowEnd {
            target: self.target_label.clone(),
            window_secs: (now - self.window_start).as_secs_f64(),
            attached_secs: (now - self.attached).as_secs_f64(),
            end_ns: monotonic_now_ns(),
            sample_bytes: self.opts.sample_bytes,
            alloc_sample_bytes: self.opts.alloc_sample_bytes,
            counters: since(self.collector.counters(), self.counters_at_start),
            memory: self.opts.memory,
            waits: self.opts.waits,
            wait_threshold_ns: self.opts.wait_threshold.as_nanos() as u64,
            stall_threshold_ns: self.opts.stall_threshold.as_nanos() as u64,
            ended_unix_ns: Some(unix_now_ns()),
        }));
        Ok(Window::of(&self.session.state, self.session.stacks(), only)
            .expect("the window end was just applied"))
    }

    /// Apply the break's moves the kernel folded (see [`Session::read_folded_breaks`]),
    /// then the records sent meanwhile, then the moves folded since.
    fn settle_breaks(&mut self) -> anyhow::Result<()> {
        self.session.read_folded_breaks(&self.collector);
        self.drain()?;
        self.session.read_folded_breaks(&self.collector);
        Ok(())
    }

    /// Judge memory growth by its trend over windows (the daemon), not by one window.
    pub fn judge_by_trend(&mut self) {
        self.session.apply(CaptureRecord::JudgeByTrend);
    }

    /// Start the next window with the probes still attached: reset the per-window
    /// counts, forget targets that exited (they were reported), and take the new
    /// "before" values.
    pub fn next_window(&mut self) {
        if self.session.state.trends {
            self.session.apply(CaptureRecord::IntervalEnd {
                end_ns: monotonic_now_ns(),
            });
        }
        let exited: Vec<u32> = self
            .session
            .state
            .targets
            .values()
            .filter(|t| t.exited)
            .map(|t| t.pid)
            .collect();
        for pid in exited {
            self.session.forget_process(pid);
            // Best effort: a target that stays in the map only costs a lookup.
            let _ = self.collector.remove_target(pid);
        }
        let rss_before = self
            .session
            .state
            .targets
            .values()
            .filter(|t| !t.exited)
            .map(|t| {
                let rss = t.rss_after.or_else(|| procfs::read_rss(t.pid).ok());
                (t.pid, rss)
            })
            .collect();
        self.session.apply(CaptureRecord::NextWindow { rss_before });
        self.collector.clear_futex_counts();
        self.counters_at_start = self.collector.counters();
        self.session.apply(CaptureRecord::WindowStart {
            start_ns: monotonic_now_ns(),
        });
        self.window_start = Instant::now();
        self.session
            .apply(CaptureRecord::Baseline { only_new: false });
    }

    /// Snapshot the blocked threads of every live target (or only `only`).
    fn snapshot_waits(&mut self, only: Option<u32>) {
        let observed_ns = self.window_start.elapsed().as_nanos() as u64;
        let pids: Vec<u32> = self
            .session
            .state
            .pids_grouped()
            .into_iter()
            .filter(|&p| only.is_none_or(|o| o == p))
            .collect();
        for pid in pids {
            let raw = inflight::read(&self.collector, pid);
            self.session.snapshot(pid, raw, observed_ns);
        }
        let count = self.collector.counters().short_waits;
        self.session.apply(CaptureRecord::ShortWaits { count });
    }

    /// The census of `pid`'s suspended async functions now (None: not node).
    pub fn async_census_of(&mut self, pid: u32) -> Option<crate::runtimes::v8::AsyncCensusReport> {
        self.session.async_census_of(pid)
    }

    /// Snapshot the in-flight waits of every live target (or only `only`) and judge
    /// stalls.
    pub fn wait_report(&mut self, only: Option<u32>) -> anyhow::Result<WaitReport> {
        if self.async_census {
            self.session.read_async_census(only);
        }
        // The census can take a second: what the sockets did meanwhile (records in the
        // ring, counts in the kernel's maps) is taken right before the snapshot whose
        // time ages the requests in flight.
        self.drain()?;
        self.session.read_counted_sockets(&self.collector);
        self.snapshot_waits(only);
        Ok(self.session.state.wait_report(
            self.opts.wait_threshold.as_nanos() as u64,
            self.opts.stall_threshold.as_nanos() as u64,
            self.session.stacks(),
            only,
        ))
    }
}

/// Wall-clock now, ns since the Unix epoch.
fn unix_now_ns() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// Counters accumulated since `start` (the kernel's counters only ever grow).
fn since(now: Counters, start: Counters) -> Counters {
    Counters {
        seen: now.seen.saturating_sub(start.seen),
        sampled: now.sampled.saturating_sub(start.sampled),
        lost: now.lost.saturating_sub(start.lost),
        stack_read_failed: now
            .stack_read_failed
            .saturating_sub(start.stack_read_failed),
        decode_errors: now.decode_errors.saturating_sub(start.decode_errors),
        short_waits: now.short_waits.saturating_sub(start.short_waits),
        futex_wakes: now.futex_wakes.saturating_sub(start.futex_wakes),
        alloc_calls: now.alloc_calls.saturating_sub(start.alloc_calls),
        alloc_table_full: now.alloc_table_full.saturating_sub(start.alloc_table_full),
        forks_followed: now.forks_followed.saturating_sub(start.forks_followed),
        sock_records: now.sock_records.saturating_sub(start.sock_records),
        sock_table_full: now.sock_table_full.saturating_sub(start.sock_table_full),
        sock_copy_failed: now.sock_copy_failed.saturating_sub(start.sock_copy_failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that a window's counters are the difference from its start, never negative.
    #[test]
    fn window_counters_are_differences() {
        let start = Counters {
            seen: 10,
            lost: 2,
            short_waits: 5,
            ..Default::default()
        };
        let now = Counters {
            seen: 25,
            lost: 2,
            short_waits: 4,
            sampled: 3,
            ..Default::default()
        };
        let d = since(now, start);
        assert_eq!((d.seen, d.lost, d.short_waits, d.sampled), (15, 0, 0, 3));
    }
}
