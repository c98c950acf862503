//! A capture session's userspace state: one ledger, address space and unwinder per
//! target process, the stack table, and the symbolizer.
//!
//! `ingest` is the per-event path; `finish` turns the state into a [`MemoryReport`].
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    aggregate::{StackTable, UnwindCache},
    allocator::{live::LiveBlock, LiveAllocations},
    collect::{Counters, Record, ResidentTrack},
    events::{linux, AllocOp, AllocRecord, MemOp, MemRecord, StackId, StackSample, WaitRecord},
    ledger::{ProcessLedger, Provenance, RegionKind},
    memory_verdict::{self, MappedStack, MemoryEvidence, NamedStack},
    offcpu::{classify::FdClassifier, WaitProfile},
    procfs::{self, Rss},
    render::{AllocGrowth, AllocationView, MemoryReport, ProcessMemory, ResidentView, StackGrowth},
    symbolize::{Frame, Symbolizer},
    targets::{self, ProcessIdentity},
    unwind::{AddressSpace, ElfCache, Unwinder},
};

use super::js_frames::{JsFrames, V8Binaries};

/// State of one target process.
pub struct Target {
    pub pid: u32,
    pub comm: String,
    /// Container, cgroup and namespace PID, read when the target was added.
    pub identity: ProcessIdentity,
    pub ledger: ProcessLedger,
    space: AddressSpace,
    unwinder: Unwinder,
    /// An executable file was mapped since `space` was read: re-read before unwinding.
    space_stale: bool,
    /// When `space` was last read, to re-read at most once a second for unknown code.
    space_read_at: std::time::Instant,
    /// Stacks already unwound in this address space.
    unwind_cache: UnwindCache,
    pub rss_before: Option<Rss>,
    pub rss_after: Option<Rss>,
    /// Resident bytes when the process was first followed: the memory verdict's
    /// baseline, since its other numbers count from then too.
    pub rss_at_follow: Option<u64>,
    pub events: u64,
    pub samples: u64,
    pub truncated: u64,
    pub exited: bool,
    pub classifier: FdClassifier,
    /// Completed waits (at least the threshold long) seen in the window.
    pub waits: u64,
    /// Sampled live blocks (allocator probes).
    pub allocs: LiveAllocations,
    /// What the allocator probes attached to, e.g. `glibc malloc (/usr/lib/…/libc.so.6)`;
    /// empty when they are off or could not attach.
    pub allocators: Vec<String>,
    /// Why the allocator probes are not running for this process, if they are not.
    pub allocator_note: Option<String>,
    /// Resident memory by kind from `kmem:rss_stat`, read at the end of the window.
    pub resident: Option<ResidentTrack>,
    /// The kernel's `[uprobes]` mapping (uretprobe trampoline), once it exists.
    uprobes_vma: Option<(u64, u64)>,
    /// JavaScript frames named from V8's heap, when the process runs node.
    js: JsFrames,
    uprobes_checked_at: Option<std::time::Instant>,
}

/// Everything the capture keeps in userspace.
pub struct Session {
    pub targets: BTreeMap<u32, Target>,
    pub stacks: StackTable,
    symbolizer: Symbolizer,
    elf_cache: ElfCache,
    v8_binaries: V8Binaries,
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
            stacks: StackTable::new(),
            symbolizer: Symbolizer::new(),
            elf_cache: ElfCache::new(),
            v8_binaries: V8Binaries::default(),
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
        let space = AddressSpace::from_maps(pid, &maps);
        let unwinder = Unwinder::new(&space, &mut self.elf_cache);
        let js = JsFrames::attach(pid, &space, &mut self.v8_binaries);
        if self.targets.get(&pid).is_some_and(|t| t.exited) {
            self.retired.extend(self.targets.remove(&pid));
        }
        self.targets.insert(
            pid,
            Target {
                pid,
                comm,
                identity,
                ledger,
                space,
                unwinder,
                space_stale: false,
                space_read_at: std::time::Instant::now(),
                unwind_cache: UnwindCache::default(),
                rss_before,
                rss_at_follow: rss_before.map(|r| r.total),
                rss_after: None,
                events: 0,
                samples: 0,
                truncated: 0,
                exited: false,
                classifier: FdClassifier::new(pid),
                waits: 0,
                allocs: LiveAllocations::new(),
                allocators: Vec::new(),
                allocator_note: None,
                resident: None,
                uprobes_vma: None,
                uprobes_checked_at: None,
                js,
            },
        );
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
            t.exited = true;
            t.rss_after = t.rss_after.or(t.rss_before.map(|_| Rss::default()));
        }
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

    /// Unwind a stack of target `pid` and intern it; None if `pid` is not a target.
    pub fn stack_of(&mut self, pid: u32, sample: &StackSample) -> Option<StackId> {
        let t = self.targets.get_mut(&pid)?;
        if t.space_stale {
            t.refresh_space(&mut self.elf_cache);
            if !t.js.active() {
                t.js = JsFrames::attach(pid, &t.space, &mut self.v8_binaries);
            }
        }
        if sample.ret_fix.is_some() {
            t.find_uprobes_vma();
        }
        if let Some((id, truncated)) = t.unwind_cache.get(sample) {
            t.truncated += u64::from(truncated);
            return Some(id);
        }
        let (mut unwound, mut read_end) = t.unwind_tracking_reads(sample);
        if t.space_read_at.elapsed() > std::time::Duration::from_secs(1)
            && unwound
                .frames
                .iter()
                .any(|&a| t.space.module_for(a).is_none())
        {
            // Code we do not know yet (a dlopen or JIT since the last read).
            t.refresh_space(&mut self.elf_cache);
            (unwound, read_end) = t.unwind_tracking_reads(sample);
        }
        if unwound.truncated {
            t.truncated += 1;
        }
        let truncated = unwound.truncated;
        let symbolizer = &mut self.symbolizer;
        let space = &t.space;
        let js = &mut t.js;
        js.name_stack(space, &mut unwound, sample);
        let id = self
            .stacks
            .intern_located(pid, unwound.frames, truncated, |addrs| {
                let code: Vec<u64> = addrs.iter().map(|&a| js.original(a)).collect();
                let mut per_addr = symbolizer.symbolize_process(pid, space, &code);
                js.apply(addrs, &mut per_addr);
                let locations = super::locations::root_first_locations(space, &code, &per_addr);
                (root_first_names(per_addr), locations)
            });
        t.unwind_cache.insert(sample, read_end, id, truncated);
        Some(id)
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
                t.space_stale = true;
            }
            MemOp::Exec => {
                t.space_stale = true;
                if let Ok(comm) = procfs::read_comm(t.pid) {
                    t.comm = comm;
                }
            }
            MemOp::Exit => {
                t.exited = true;
                t.rss_after = t.rss_after.or(t.rss_before.map(|_| Rss::default()));
            }
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

    /// Build the memory report.
    pub fn report(
        &self,
        target: String,
        window_secs: f64,
        sample_bytes: u64,
        counters: Counters,
    ) -> MemoryReport {
        let window_end_ns = crate::collect::monotonic_now_ns();
        let mut all: Vec<&Target> = self.targets.values().chain(&self.retired).collect();
        // Outside containers first, then container by container; by PID, exited first.
        all.sort_by_key(|t| {
            (
                t.identity.container.as_ref().map(|c| &c.id),
                t.pid,
                !t.exited,
            )
        });
        let processes = all
            .into_iter()
            .map(|t| self.process_report(t, window_end_ns))
            .collect();
        MemoryReport {
            target,
            window_secs,
            sample_bytes,
            alloc_sample_bytes: 0,
            counters,
            processes,
        }
    }

    fn process_report(&self, t: &Target, window_end_ns: u64) -> ProcessMemory {
        let label = |m: &BTreeMap<RegionKind, u64>| -> BTreeMap<String, u64> {
            m.iter().map(|(k, v)| (k.label().to_string(), *v)).collect()
        };
        let mut growth = Vec::new();
        let mut unsampled = 0.0;
        for g in t.ledger.window_growth() {
            match g.stack.and_then(|id| self.stacks.get(id)) {
                Some(stack) if g.bytes > 0.0 => growth.push(StackGrowth {
                    kind: g.kind.label().to_string(),
                    frames: stack.names.clone(),
                    bytes: g.bytes,
                    objects: g.objects,
                    locations: stack.locations.clone(),
                }),
                None => unsampled += g.bytes,
                _ => {}
            }
        }
        let allocations =
            (!t.allocators.is_empty()).then(|| self.allocation_view(t, window_end_ns));
        let mapped: Vec<MappedStack<'_>> = growth
            .iter()
            .map(|g| MappedStack {
                kind: &g.kind,
                frames: &g.frames,
                bytes: g.bytes,
            })
            .collect();
        let verdict = memory_verdict::judge(&MemoryEvidence {
            allocator_probed: allocations.is_some(),
            live_growth: allocations.as_ref().map_or(0.0, |a| a.live_bytes),
            live_stacks: allocations.as_ref().map_or_else(Vec::new, |a| {
                a.growth
                    .iter()
                    .map(|g| NamedStack {
                        frames: g.frames.clone(),
                        bytes: g.bytes,
                    })
                    .collect()
            }),
            allocated: allocations.as_ref().map_or(0.0, |a| a.allocated_bytes),
            freed: allocations.as_ref().map_or(0.0, |a| a.freed_bytes),
            mapped,
            resident_before: t.rss_at_follow,
            resident_after: t.rss_after.filter(|_| !t.exited).map(|r| r.total),
            allocator: t.allocators.first().cloned(),
            since_follow: self.since_follow,
        });
        let resident = t.resident.map(|r| ResidentView {
            file: r.now[0],
            anon: r.now[1],
            swap: r.now[2],
            shmem: r.now[3],
            peak_file: r.peak[0],
            peak_anon: r.peak[1],
            peak_shmem: r.peak[3],
            peak_total: r.peak_total,
            updates: r.updates,
        });
        ProcessMemory {
            allocations,
            resident,
            verdict: Some(verdict),
            pid: t.pid,
            comm: t.comm.clone(),
            identity: t.identity.clone(),
            exited: t.exited,
            mapped_before: label(t.ledger.seeded_by_kind()),
            mapped_after: label(&t.ledger.committed_by_kind()),
            reserved_after: t.ledger.reserved_bytes(),
            rss_before: t.rss_before,
            rss_after: t.rss_after,
            growth,
            unsampled_live_bytes: unsampled.max(0.0).round() as u64,
            events: t.events,
            samples: t.samples,
            truncated_stacks: t.truncated,
            js_frames: t.js.report(),
        }
    }
}

impl Session {
    fn allocation_view(&self, t: &Target, window_end_ns: u64) -> AllocationView {
        let names = |id: Option<StackId>| -> Vec<String> {
            match id.and_then(|id| self.stacks.get(id)) {
                Some(stack) => stack.names.clone(),
                None => vec!["[stack not sampled]".to_string()],
            }
        };
        let to_rows = |m: BTreeMap<Option<StackId>, crate::allocator::LiveGrowth>| {
            let mut rows: Vec<AllocGrowth> = m
                .into_iter()
                .map(|(id, g)| AllocGrowth {
                    frames: names(id),
                    bytes: g.bytes,
                    objects: g.objects,
                    locations: super::locations::of_stack(&self.stacks, id),
                })
                .collect();
            rows.sort_by(|a, b| b.bytes.total_cmp(&a.bytes).then(a.frames.cmp(&b.frames)));
            rows
        };
        let start = self.window_start_ns;
        let split = start + window_end_ns.saturating_sub(start) / 2;
        let growth = to_rows(t.allocs.growth());
        AllocationView {
            allocators: t.allocators.clone(),
            live_bytes: growth.iter().map(|g| g.bytes).sum(),
            live_objects: growth.iter().map(|g| g.objects).sum(),
            allocated_bytes: t.allocs.allocated_bytes,
            freed_bytes: t.allocs.freed_bytes,
            samples: t.allocs.allocations,
            frees: t.allocs.frees,
            replaced: t.allocs.replaced,
            growth,
            first_half: to_rows(t.allocs.growth_by_stack(0, split)),
            second_half: to_rows(t.allocs.growth_by_stack(split, u64::MAX)),
            split_secs: split.saturating_sub(start) as f64 / 1e9,
        }
    }
}

impl Target {
    /// Unwind `sample`, also returning the end of the highest 8 bytes the walk read.
    fn unwind_tracking_reads(
        &mut self,
        sample: &StackSample,
    ) -> (crate::unwind::UnwoundStack, u64) {
        let mut end = sample.sp;
        let trampoline = self.uprobes_vma;
        let unwound = self
            .unwinder
            .unwind_with(sample.ip, sample.sp, sample.bp, &mut |addr| {
                let v = sample.read_u64(addr)?;
                end = end.max(addr + 8);
                match (sample.ret_fix, trampoline) {
                    (Some(fix), Some((lo, hi))) if (lo..hi).contains(&v) => {
                        Some(fix.original(addr).unwrap_or(v))
                    }
                    _ => Some(v),
                }
            });
        (unwound, end)
    }

    /// Look up the `[uprobes]` mapping, which the kernel creates at the first hijacked
    /// return; re-read at most every 100 ms until it exists.
    fn find_uprobes_vma(&mut self) {
        if self.uprobes_vma.is_some()
            || self
                .uprobes_checked_at
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100))
        {
            return;
        }
        self.uprobes_checked_at = Some(std::time::Instant::now());
        if let Ok(maps) = procfs::read_maps(self.pid) {
            self.uprobes_vma = maps
                .iter()
                .find(|m| m.path == "[uprobes]")
                .map(|m| (m.start, m.end));
        }
    }

    fn refresh_space(&mut self, cache: &mut ElfCache) {
        self.unwind_cache.clear();
        if let Ok(maps) = procfs::read_maps(self.pid) {
            self.space = AddressSpace::from_maps(self.pid, &maps);
            self.unwinder = Unwinder::new(&self.space, cache);
        }
        self.space_stale = false;
        self.space_read_at = std::time::Instant::now();
    }
}

/// Flatten per-address frames (leaf address first; within one address, the function
/// and then its inlined callees) into names, root first.
/// An inlined frame with the same name as the frame it is inlined into (glibc's
/// `__GI___mmap64` is reported that way) is one frame to a reader, so it is shown once.
fn root_first_names(per_addr: Vec<Vec<Frame>>) -> Vec<String> {
    let mut names = Vec::new();
    for frames in per_addr.into_iter().rev() {
        let mut previous: Option<String> = None;
        for f in frames {
            if previous.as_deref() != Some(f.function.as_str()) {
                names.push(f.function.clone());
            }
            previous = Some(f.function);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, inlined: bool) -> Frame {
        Frame {
            function: name.into(),
            module: "m".into(),
            file_line: None,
            inlined,
        }
    }

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
        let report = session.report(String::new(), 1.0, 1, Counters::default());
        let exited: Vec<bool> = report.processes.iter().map(|p| p.exited).collect();
        assert_eq!(exited, vec![true, false]);
        assert!(report.processes.iter().all(|p| p.pid == pid));
    }

    /// Check that names come out root first, with inlined callees after their caller and
    /// a same-named inlined frame shown once.
    #[test]
    fn names_root_first_without_self_inlined_duplicates() {
        let per_addr = vec![
            vec![frame("__mmap64", false), frame("__mmap64", true)],
            vec![frame("map_region", false), frame("touch", true)],
            vec![frame("main", false)],
        ];
        assert_eq!(
            root_first_names(per_addr),
            vec!["main", "map_region", "touch", "__mmap64"]
        );
    }
}
