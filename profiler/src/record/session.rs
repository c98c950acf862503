//! The live side of a capture: kernel records in, [`CaptureRecord`]s out.
//!
//! A record from `collect` has its stack resolved by the [`StackResolver`], its
//! process's `/proc` facts read (mappings and RSS when it is first followed, its name
//! after an exec, what a descriptor is), and becomes a [`CaptureRecord`] that the
//! [`CaptureState`] applies (and that `--save-records` writes, for `profiler replay`).
use std::collections::{BTreeSet, HashMap};

use super::records_file::RecordWriter;
use crate::{
    analyze::{self, waits::classify::FdClassifier, CaptureState},
    collect::{inflight::InFlight, Collector, Record},
    events::{
        linux, AllocOp, AllocRecord, FoldedBreak, MemOp, MemRecord, StackId, StackSample,
        TxBeginRecord, WaitRecord,
    },
    model::{
        BlockOp, CaptureRecord, ConnEvent, Followed, FreeFlowRead, IdentityFacts, MemSampleRef,
        StackRef, ThreadSnapshot,
    },
    procfs,
    stacks::{StackResolver, StackTable},
    targets,
};

/// Everything the capture keeps in userspace.
pub struct Session {
    /// What the analysis has learned (every record below is applied to it).
    pub state: CaptureState,
    resolver: StackResolver,
    /// Names the descriptors of each target.
    classifiers: HashMap<u32, FdClassifier>,
    /// Processes whose events are dropped: could not be added (gone already), kernel
    /// threads.
    ignored: BTreeSet<u32>,
    /// Processes added because their events arrived (forked children of targets, any
    /// process with `--all`), with their program break, for [`Session::take_adopted`].
    adopted: Vec<(u32, Option<u64>)>,
    /// `--save-records`: every record applied is also written here.
    recorder: Option<RecordWriter>,
    /// The framers of the targets' connections (the request ledger's live side).
    connections: super::connections::Connections,
    /// False with `--no-requests`: no connection is seeded, so the kernel follows none
    /// and the ledger stays empty.
    follow_connections: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Self {
            state: CaptureState::default(),
            resolver: StackResolver::new(),
            classifiers: HashMap::new(),
            ignored: BTreeSet::new(),
            adopted: Vec::new(),
            recorder: None,
            connections: Default::default(),
            follow_connections: true,
        }
    }

    /// Follow no connection (`--no-requests`).
    pub fn without_connections(&mut self) {
        self.follow_connections = false;
    }

    /// Write every record from now on to `writer` too.
    pub fn record_to(&mut self, writer: RecordWriter) {
        self.recorder = Some(writer);
    }

    /// Stop recording; the writer, to finish the file.
    pub fn take_recorder(&mut self) -> Option<RecordWriter> {
        self.recorder.take()
    }

    /// Apply a record to the state (and save it when recording).
    pub fn apply(&mut self, record: CaptureRecord) {
        if let Some(w) = &mut self.recorder {
            w.write(self.resolver.table(), &record);
        }
        self.state.apply(&record);
    }

    /// Start tracking `pid`: read its maps (seeding the ledger with pre-existing
    /// mappings), RSS and name. Returns the current program break for the kernel side.
    /// An exited target with the same PID (the PID was reused) is kept for the report.
    pub fn add_target(&mut self, pid: u32) -> Result<Option<u64>, procfs::ProcError> {
        let maps = procfs::read_maps(pid)?;
        let start_brk = procfs::read_start_brk(pid)?;
        let comm = procfs::read_comm(pid)?;
        let rss = procfs::read_rss(pid).ok();
        let identity = IdentityFacts {
            cgroup: targets::proc_scan::read_cgroup_text(pid),
            ns_pid: targets::proc_scan::read_ns_pid(pid),
        };
        let brk = maps
            .iter()
            .find(|m| m.path == "[heap]")
            .map(|m| m.end)
            .or(start_brk);
        self.resolver.add_process(pid, &maps);
        self.classifiers.insert(pid, FdClassifier::new(pid));
        self.apply(CaptureRecord::Follow(Followed {
            pid,
            comm,
            identity,
            maps,
            start_brk,
            rss,
            followed_ns: crate::collect::monotonic_now_ns(),
        }));
        if self.follow_connections {
            let seeded = self
                .connections
                .seed(pid, crate::collect::monotonic_now_ns());
            self.apply_conn(pid, seeded);
        }
        Ok(brk)
    }

    /// Whether `pid` is a live target or was ignored: a rescan need not look at it
    /// again. (An exited target's PID may come back as a new process.)
    pub fn knows(&self, pid: u32) -> bool {
        self.state.targets.get(&pid).is_some_and(|t| !t.exited) || self.ignored.contains(&pid)
    }

    /// Processes adopted since the last call, with their program break when known, so
    /// the caller can tell the kernel side (`Collector::seed_brk`).
    pub fn take_adopted(&mut self) -> Vec<(u32, Option<u64>)> {
        std::mem::take(&mut self.adopted)
    }

    /// Events of a process that is not a target yet come from a target's forked child
    /// (the kernel side added it) or, with `--all`, from any process: add it now. The
    /// first event itself is applied after the seeding, so it is not lost.
    fn adopt(&mut self, pid: u32) -> bool {
        if self.state.targets.contains_key(&pid) {
            return true;
        }
        if self.ignored.contains(&pid) {
            return false;
        }
        let user_process =
            targets::proc_scan::read_stat(pid).is_some_and(|s| !s.kernel_thread && !s.is_dead());
        match user_process.then(|| self.add_target(pid)) {
            Some(Ok(brk)) => {
                self.adopted.push((pid, brk));
                true
            }
            _ => {
                self.ignored.insert(pid);
                false
            }
        }
    }

    /// Forget ignored processes that are gone, so that a new process that gets one of
    /// their PIDs is looked at again.
    pub fn forget_dead_ignored(&mut self) {
        self.ignored.retain(|&pid| procfs::is_alive(pid));
    }

    /// A target found gone (by a rescan; waits-only captures see no exit event).
    pub fn mark_exited(&mut self, pid: u32) {
        self.apply(CaptureRecord::Exited { pid });
    }

    /// Stop unwinding and naming the descriptors of `pid` (an exited target after its
    /// last report; the state forgets it at the next window).
    pub fn forget_process(&mut self, pid: u32) {
        self.resolver.remove_process(pid);
        self.classifiers.remove(&pid);
        self.connections.forget_process(pid);
    }

    /// Connections whose kernel capture should change since the last call (HTTP/2
    /// found: copy more; nothing framable: count only), by (pid, fd).
    pub fn take_capture_changes(
        &mut self,
    ) -> Vec<(u32, i32, crate::analyze::requests::framing::CaptureChange)> {
        self.connections.take_capture_changes()
    }

    /// Hand the kernel's totals of the count-only connections and of the HTTP/1
    /// connections whose exchanges it counts to the ledger (at a window's end and at
    /// each wait report: their transfers send no records).
    pub fn read_counted_sockets(&mut self, collector: &Collector) {
        for (pid, fd, totals) in collector.counted_sockets() {
            if self.state.targets.contains_key(&pid) {
                let events = self.connections.counted(pid, fd, totals);
                self.apply_conn(pid, events);
            }
        }
        for (pid, fd, now) in collector.counted_exchanges() {
            if self.state.targets.contains_key(&pid) {
                let events = self.connections.exchanges(pid, fd, &now);
                self.apply_conn(pid, events);
            }
        }
    }

    fn apply_conn(&mut self, pid: u32, events: Vec<super::connections::Emitted>) {
        for (fd, time_ns, event) in events {
            self.apply(CaptureRecord::Conn {
                pid,
                fd,
                time_ns,
                event,
            });
        }
    }

    /// The interned stacks.
    pub fn stacks(&self) -> &StackTable {
        self.resolver.table()
    }

    /// Apply one record from the kernel.
    pub fn ingest(&mut self, record: Record) {
        match record {
            Record::Mem(m) => self.ingest_memory(m),
            Record::Wait(w) => self.ingest_wait(w),
            // OOM kills are handled by the daemon, which sees records before the session.
            Record::Oom(_) => {}
            Record::Alloc(a) => self.ingest_alloc(a),
            Record::Sock(s) => {
                if self.adopt(s.pid) {
                    let events = self.connections.ingest(&s);
                    self.apply_conn(s.pid, events);
                }
            }
            Record::TxBegin(t) => self.ingest_tx_begin(t),
        }
    }

    /// The stack that wrote a `BEGIN`, for the connection's open transaction.
    fn ingest_tx_begin(&mut self, t: TxBeginRecord) {
        let Some(stack) = t.stack.as_ref().and_then(|s| self.resolve(t.pid, s)) else {
            return;
        };
        self.apply(CaptureRecord::Conn {
            pid: t.pid,
            fd: t.fd,
            time_ns: t.time_ns,
            event: ConnEvent::TransactionBegun { stack },
        });
    }

    /// Unwind a stack of target `pid` and intern it; None if `pid` is not a target.
    fn resolve(&mut self, pid: u32, sample: &StackSample) -> Option<StackRef> {
        if !self.state.targets.contains_key(&pid) {
            return None;
        }
        let r = self.resolver.resolve(pid, sample)?;
        Some(StackRef {
            id: r.id,
            truncated: r.truncated,
        })
    }

    /// The interned stack of target `pid` (the OOM victim's, for its snapshot).
    pub fn stack_of(&mut self, pid: u32, sample: &StackSample) -> Option<StackId> {
        self.resolve(pid, sample).map(|s| s.id)
    }

    fn ingest_alloc(&mut self, a: AllocRecord) {
        if !self.state.targets.contains_key(&a.pid) {
            return;
        }
        let op = match a.op {
            AllocOp::Alloc {
                addr,
                size,
                usable_size,
                weight,
                stack,
            } => BlockOp::Alloc {
                addr,
                size,
                usable_size,
                weight,
                stack: stack.as_ref().and_then(|s| self.resolve(a.pid, s)),
            },
            AllocOp::Free { addr } => BlockOp::Free { addr },
        };
        self.apply(CaptureRecord::Block {
            pid: a.pid,
            time_ns: a.time_ns,
            op,
        });
    }

    fn ingest_wait(&mut self, w: WaitRecord) {
        if !self.adopt(w.pid) {
            return;
        }
        let stack = w.stack.as_ref().and_then(|s| self.resolve(w.pid, s));
        let Some(classifier) = self.classifiers.get_mut(&w.pid) else {
            return;
        };
        let on = classifier.classify(w.syscall, w.fd, w.futex_addr);
        self.apply(CaptureRecord::Wait {
            pid: w.pid,
            on,
            stack,
            blocked_ns: w.blocked_ns,
            end_ns: w.end_ns,
        });
    }

    fn ingest_memory(&mut self, m: MemRecord) {
        // A process whose first event is its exit has nothing left to show.
        if !(self.state.targets.contains_key(&m.pid) || m.op != MemOp::Exit && self.adopt(m.pid)) {
            return;
        }
        let sample = m.sample.as_ref().map(|s| MemSampleRef {
            stack: self.resolve(m.pid, &s.stack),
            scale: s.scale(),
        });
        let exec = m.op == MemOp::Exec;
        match &m.op {
            MemOp::Mmap { prot, fd, .. } if *fd >= 0 && prot & linux::PROT_EXEC != 0 => {
                self.resolver.code_changed(m.pid);
            }
            MemOp::Exec => self.resolver.code_changed(m.pid),
            _ => {}
        }
        // The break's moves the kernel folded come first, as the unsampled moves they
        // stand for.
        for op in m.folded.iter().flat_map(|f| f.moves()) {
            self.apply(CaptureRecord::Mem {
                pid: m.pid,
                op,
                sample: None,
            });
        }
        self.apply(CaptureRecord::Mem {
            pid: m.pid,
            op: m.op,
            sample,
        });
        if exec {
            if let Ok(comm) = procfs::read_comm(m.pid) {
                self.apply(CaptureRecord::Comm { pid: m.pid, comm });
            }
        }
    }

    /// Snapshot the blocked threads of target `pid` (`raw`: None when it is gone):
    /// waits named, stacks resolved.
    pub fn snapshot(&mut self, pid: u32, raw: Option<InFlight>, observed_ns: u64) {
        let mut truncated = 0;
        let snapshot: Option<ThreadSnapshot> = raw.and_then(|raw| {
            let comm = self.state.targets.get(&pid)?.comm.clone();
            let classifier = self.classifiers.get_mut(&pid)?;
            let on: Vec<_> = raw
                .blocked
                .iter()
                .map(|b| classifier.classify(b.syscall, b.fd, b.futex_addr))
                .collect();
            let mut on = on.into_iter();
            Some(analyze::waits::snapshot(
                raw,
                comm,
                observed_ns,
                |sample| {
                    let r = self.resolve(pid, sample)?;
                    truncated += u64::from(r.truncated);
                    Some(r.id)
                },
                |_, _, _| on.next().expect("one classification per blocked thread"),
            ))
        });
        self.apply(CaptureRecord::Snapshot {
            pid,
            observed_ns,
            snapshot,
            truncated,
        });
    }

    /// Whether every target has exited (the window can end early).
    pub fn all_exited(&self) -> bool {
        !self.state.targets.is_empty() && self.state.targets.values().all(|t| t.exited)
    }

    /// Read end-of-window RSS of live targets.
    pub fn read_final_rss(&mut self) {
        let live: Vec<u32> = self
            .state
            .targets
            .values()
            .filter(|t| !t.exited)
            .map(|t| t.pid)
            .collect();
        for pid in live {
            let rss = procfs::read_rss(pid).ok();
            self.apply(CaptureRecord::FinalRss { pid, rss });
        }
    }

    /// Take the census of the suspended async functions of each live node target
    /// (or only `only`), reading their heaps now.
    pub fn read_async_census(&mut self, only: Option<u32>) {
        let live: Vec<u32> = self
            .state
            .targets
            .values()
            .filter(|t| !t.exited && only.is_none_or(|o| o == t.pid))
            .map(|t| t.pid)
            .collect();
        for pid in live {
            let report = self
                .resolver
                .async_census(pid, crate::runtimes::v8::ScanLimits::default());
            if report.is_some() {
                self.apply(CaptureRecord::AsyncCensus { pid, report });
            }
        }
    }

    /// The census of `pid`'s suspended async functions now, not recorded.
    pub fn async_census_of(&self, pid: u32) -> Option<crate::runtimes::v8::AsyncCensusReport> {
        self.resolver
            .async_census(pid, crate::runtimes::v8::ScanLimits::default())
    }

    /// Record how each target's JavaScript frames were named from V8's heap.
    pub fn read_js_frames(&mut self) {
        let pids: Vec<u32> = self.state.targets.keys().copied().collect();
        for pid in pids {
            let report = self.resolver.js_report(pid);
            self.apply(CaptureRecord::JsFrames { pid, report });
        }
    }

    /// Read the JS frames of a batch's stacks before any of them is symbolized (see
    /// `StackResolver::prepare`); [`Session::ingest`] then uses what was read.
    pub fn prepare_stacks(&mut self, batch: &[Record]) {
        for record in batch {
            let (pid, sample) = match record {
                Record::Alloc(a) => match &a.op {
                    AllocOp::Alloc { stack: Some(s), .. } => (a.pid, s),
                    _ => continue,
                },
                Record::Mem(m) => match &m.sample {
                    Some(s) => (m.pid, &s.stack),
                    None => continue,
                },
                Record::Wait(w) => match &w.stack {
                    Some(s) => (w.pid, s),
                    None => continue,
                },
                Record::TxBegin(t) => match &t.stack {
                    Some(s) => (t.pid, s),
                    None => continue,
                },
                Record::Oom(_) | Record::Sock(_) => continue,
            };
            self.resolver.prepare(pid, sample);
        }
    }

    /// Forget what [`Session::prepare_stacks`] read and no record used.
    pub fn forget_prepared(&mut self) {
        self.resolver.forget_prepared();
    }

    /// Read the kernel's counters of frees of blocks not sampled live, with the moment:
    /// call before draining the ring, whose allocations up to now are paired with these
    /// counters (see `LiveAllocations::cut`).
    pub fn read_free_flow(&mut self, collector: &Collector) {
        let pids: Vec<u32> = self.state.targets.keys().copied().collect();
        for pid in pids {
            self.read_free_flow_of(collector, pid);
        }
    }

    /// [`Session::read_free_flow`] for one target (before it leaves the kernel's maps).
    pub fn read_free_flow_of(&mut self, collector: &Collector, pid: u32) {
        let probed = self
            .state
            .targets
            .get(&pid)
            .is_some_and(|t| !t.allocators.is_empty());
        if !probed {
            return;
        }
        let read_ns = crate::collect::monotonic_now_ns();
        if let Some(f) = collector.free_flow(pid) {
            self.apply(CaptureRecord::FreeFlow {
                pid,
                flow: FreeFlowRead {
                    read_ns,
                    frees: f.frees,
                    unsized_frees: f.unsized_frees,
                    sampled: f.sampled,
                    weight: f.weight,
                    variance: f.variance,
                    sized_bytes: f.sized_bytes,
                },
            });
        }
    }

    /// Bring each target's heap up to date with the break's moves the kernel folded
    /// since its last brk record ([`profiler_common::BrkState`]). Applying them again
    /// later leaves the same heap, and so does a brk record sent after them: each
    /// record and each state says where the break went since the previous record. A
    /// record sent before them but drained after takes the heap back to that record's
    /// time, so the window's end reads them, drains, and reads them again.
    pub fn read_folded_breaks(&mut self, collector: &Collector) {
        let pids: Vec<u32> = self.state.targets.keys().copied().collect();
        for pid in pids {
            let Some(state) = collector.brk_state(pid) else {
                continue;
            };
            let folded = FoldedBreak {
                low: state.low.min(state.last),
                before: state.last,
            };
            for op in folded.moves() {
                self.apply(CaptureRecord::Mem {
                    pid,
                    op,
                    sample: None,
                });
            }
        }
    }

    /// Read what `kmem:rss_stat` saw of each target.
    pub fn read_resident(&mut self, collector: &Collector) {
        let pids: Vec<u32> = self.state.targets.keys().copied().collect();
        for pid in pids {
            let track = collector.resident_track(pid);
            self.apply(CaptureRecord::Resident { pid, track });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WindowEnd;

    /// Check that a target whose PID comes back as a new process after it exited stays
    /// in the report next to the new one, and that rescans look at the PID again.
    #[test]
    fn reused_pid_keeps_the_exited_target() {
        let pid = std::process::id();
        let mut session = Session::new();
        session.add_target(pid).unwrap();
        assert!(session.knows(pid));
        session.mark_exited(pid);
        assert!(
            !session.knows(pid),
            "an exited target's PID must be looked at again"
        );
        session.add_target(pid).unwrap();
        assert!(session.knows(pid));
        let report = session
            .state
            .memory_report(&WindowEnd::default(), session.stacks(), None);
        let exited: Vec<bool> = report.processes.iter().map(|p| p.exited).collect();
        assert_eq!(exited, vec![true, false]);
        assert!(report.processes.iter().all(|p| p.pid == pid));
    }
}
