//! A capture session's userspace state: the followed processes (their ledgers, live
//! allocations and waits), the stacks stage, and the completed waits.
//!
//! `ingest` is the per-event path: a record from `collect` has its stack resolved by
//! the [`StackResolver`] and lands in its process's [`Target`]; the `analyze` stage
//! reads those at the end of a window.
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    allocator::live::LiveBlock,
    analyze::{
        self,
        memory::MemoryWindow,
        waits::{ThreadSnapshot, WaitProfile},
        Target,
    },
    collect::{inflight::InFlight, Record},
    events::{linux, AllocOp, AllocRecord, MemOp, MemRecord, StackId, StackSample, WaitRecord},
    ledger::{ProcessLedger, Provenance},
    model::MemoryReport,
    procfs,
    stacks::{StackResolver, StackTable},
    targets,
};

/// Everything the capture keeps in userspace.
pub struct Session {
    pub targets: BTreeMap<u32, Target>,
    resolver: StackResolver,
    pub waits: WaitProfile,
    /// Monotonic time (ns, the clock of `bpf_ktime_get_ns`) when the probes attached.
    pub window_start_ns: u64,
    /// Processes whose events are dropped: could not be added (gone already), kernel
    /// threads.
    ignored: BTreeSet<u32>,
    /// Processes added because their events arrived (forked children of targets, any
    /// process with `--all`), with their program break, for [`Session::take_adopted`].
    adopted: Vec<(u32, Option<u64>)>,
    /// Exited targets whose PID a new target took (PIDs are reused): still reported.
    retired: Vec<Target>,
    /// A later window of a capture that keeps its probes (the daemon): stacks and the
    /// memory verdict count from when each process was first followed.
    pub since_follow: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Self {
            targets: BTreeMap::new(),
            resolver: StackResolver::new(),
            waits: WaitProfile::default(),
            window_start_ns: 0,
            ignored: BTreeSet::new(),
            adopted: Vec::new(),
            retired: Vec::new(),
            since_follow: false,
        }
    }

    /// Start tracking `pid`: read its maps (seeding the ledger with pre-existing
    /// mappings), RSS and name. Returns the current program break for the kernel side.
    /// An exited target with the same PID (the PID was reused) is kept for the report.
    pub fn add_target(&mut self, pid: u32) -> Result<Option<u64>, procfs::ProcError> {
        let maps = procfs::read_maps(pid)?;
        let start_brk = procfs::read_start_brk(pid)?;
        let comm = procfs::read_comm(pid)?;
        let rss_before = procfs::read_rss(pid).ok();
        let identity = targets::read_identity(pid);
        let mut ledger = ProcessLedger::new();
        ledger.seed(&maps, start_brk);
        let brk = maps
            .iter()
            .find(|m| m.path == "[heap]")
            .map(|m| m.end)
            .or(start_brk);
        self.resolver.add_process(pid, &maps);
        if self.targets.get(&pid).is_some_and(|t| t.exited) {
            self.retired.extend(self.targets.remove(&pid));
        }
        self.targets
            .insert(pid, Target::new(pid, comm, identity, ledger, rss_before));
        Ok(brk)
    }

    /// Whether `pid` is a live target or was ignored: a rescan need not look at it
    /// again. (An exited target's PID may come back as a new process.)
    pub fn knows(&self, pid: u32) -> bool {
        self.targets.get(&pid).is_some_and(|t| !t.exited) || self.ignored.contains(&pid)
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
        if self.targets.contains_key(&pid) {
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
        if let Some(t) = self.targets.get_mut(&pid) {
            t.mark_exited();
        }
    }

    /// Stop following `pid` (an exited target after its last report).
    pub fn remove_target(&mut self, pid: u32) {
        self.targets.remove(&pid);
        self.resolver.remove_process(pid);
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
        }
    }

    fn ingest_alloc(&mut self, a: AllocRecord) {
        if !self.targets.contains_key(&a.pid) {
            return;
        }
        match a.op {
            AllocOp::Alloc {
                addr,
                size,
                weight,
                stack,
            } => {
                let stack = stack.as_ref().and_then(|s| self.stack_of(a.pid, s));
                if let Some(t) = self.targets.get_mut(&a.pid) {
                    t.allocs.alloc(
                        addr,
                        LiveBlock {
                            stack,
                            size,
                            weight,
                            time_ns: a.time_ns,
                        },
                    );
                }
            }
            AllocOp::Free { addr } => {
                if let Some(t) = self.targets.get_mut(&a.pid) {
                    t.allocs.free(addr);
                }
            }
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
                Record::Oom(_) => continue,
            };
            self.resolver.prepare(pid, sample);
        }
    }

    /// Forget what [`Session::prepare_stacks`] read and no record used.
    pub fn forget_prepared(&mut self) {
        self.resolver.forget_prepared();
    }

    /// Unwind a stack of target `pid` and intern it; None if `pid` is not a target.
    pub fn stack_of(&mut self, pid: u32, sample: &StackSample) -> Option<StackId> {
        let t = self.targets.get_mut(&pid)?;
        let resolved = self.resolver.resolve(pid, sample)?;
        t.truncated += u64::from(resolved.truncated);
        Some(resolved.id)
    }

    /// The snapshot of a target's blocked threads: waits named, stacks resolved.
    pub fn thread_snapshot(&mut self, raw: InFlight, observed_ns: u64) -> Option<ThreadSnapshot> {
        let pid = raw.pid;
        let t = self.targets.get_mut(&pid)?;
        let comm = t.comm.clone();
        let mut on = Vec::with_capacity(raw.blocked.len());
        for b in &raw.blocked {
            on.push(t.classifier.classify(b.syscall, b.fd, b.futex_addr));
        }
        let mut on = on.into_iter();
        Some(analyze::waits::snapshot(
            raw,
            comm,
            observed_ns,
            |sample| self.stack_of(pid, sample),
            |_, _, _| on.next().expect("one classification per blocked thread"),
        ))
    }

    fn ingest_wait(&mut self, w: WaitRecord) {
        if !self.adopt(w.pid) {
            return;
        }
        let stack = w.stack.as_ref().and_then(|s| self.stack_of(w.pid, s));
        let Some(t) = self.targets.get_mut(&w.pid) else {
            return;
        };
        t.waits += 1;
        let on = t.classifier.classify(w.syscall, w.fd, w.futex_addr);
        // Only the part of the wait inside the window counts.
        let in_window = w.end_ns.saturating_sub(self.window_start_ns);
        let ns = if self.window_start_ns > 0 {
            w.blocked_ns.min(in_window)
        } else {
            w.blocked_ns
        };
        self.waits.add(w.pid, on, stack, ns);
    }

    fn ingest_memory(&mut self, m: MemRecord) {
        // A process whose first event is its exit has nothing left to show.
        if !(self.targets.contains_key(&m.pid) || m.op != MemOp::Exit && self.adopt(m.pid)) {
            return;
        }
        let Some(t) = self.targets.get_mut(&m.pid) else {
            return;
        };
        t.events += 1;
        let provenance = match &m.sample {
            Some(sample) => {
                t.samples += 1;
                let scale = sample.scale();
                let stack = self.stack_of(m.pid, &sample.stack);
                Provenance::Window { stack, scale }
            }
            None => Provenance::Window {
                stack: None,
                scale: 1.0,
            },
        };
        let Some(t) = self.targets.get_mut(&m.pid) else {
            return;
        };
        match &m.op {
            MemOp::Mmap { prot, fd, .. } if *fd >= 0 && prot & linux::PROT_EXEC != 0 => {
                self.resolver.code_changed(m.pid);
            }
            MemOp::Exec => {
                self.resolver.code_changed(m.pid);
                if let Ok(comm) = procfs::read_comm(t.pid) {
                    t.comm = comm;
                }
            }
            MemOp::Exit => t.mark_exited(),
            _ => {}
        }
        t.ledger.apply(&m.op, provenance);
    }

    /// Target PIDs in report order: processes outside containers first, then container
    /// by container, each by PID, so reports group the processes of one container.
    pub fn pids_grouped(&self) -> Vec<u32> {
        let mut pids: Vec<(Option<&str>, u32)> = self
            .targets
            .values()
            .map(|t| (t.identity.container.as_ref().map(|c| c.id.as_str()), t.pid))
            .collect();
        pids.sort_unstable();
        pids.into_iter().map(|(_, pid)| pid).collect()
    }

    /// Whether every target has exited (the window can end early).
    pub fn all_exited(&self) -> bool {
        !self.targets.is_empty() && self.targets.values().all(|t| t.exited)
    }

    /// Read end-of-window RSS of live targets.
    pub fn read_final_rss(&mut self) {
        for t in self.targets.values_mut() {
            if !t.exited {
                t.rss_after = procfs::read_rss(t.pid).ok();
                if t.rss_after.is_none() {
                    t.exited = true;
                }
            }
        }
    }

    /// Read what `kmem:rss_stat` saw of each target.
    pub fn read_resident(&mut self, collector: &crate::collect::Collector) {
        for t in self.targets.values_mut() {
            t.resident = collector.resident_track(t.pid);
        }
    }

    /// Build the memory report of every target, retired ones included: outside
    /// containers first, then container by container; by PID, exited first.
    pub fn report(&self, mut window: MemoryWindow) -> MemoryReport {
        window.start_ns = self.window_start_ns;
        window.since_follow = self.since_follow;
        let mut all: Vec<&Target> = self.targets.values().chain(&self.retired).collect();
        all.sort_by_key(|t| {
            (
                t.identity.container.as_ref().map(|c| &c.id),
                t.pid,
                !t.exited,
            )
        });
        let mut report = analyze::memory::report(&window, all, self.stacks());
        for p in &mut report.processes {
            p.js_frames = self.resolver.js_report(p.pid);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let report = session.report(MemoryWindow {
            target: String::new(),
            window_secs: 1.0,
            sample_bytes: 1,
            alloc_sample_bytes: 0,
            counters: Default::default(),
            start_ns: 0,
            end_ns: 0,
            since_follow: false,
        });
        let exited: Vec<bool> = report.processes.iter().map(|p| p.exited).collect();
        assert_eq!(exited, vec![true, false]);
        assert!(report.processes.iter().all(|p| p.pid == pid));
    }
}
