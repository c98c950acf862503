//! The analysis state of a capture: every [`CaptureRecord`] is applied here, live or
//! replayed, and the window's memory and wait models are built from it.
//!
//! Pure: the records carry every `/proc` fact and every interned stack the analysis
//! needs, so replaying a saved stream rebuilds the same state.
use std::collections::BTreeMap;

use super::{
    memory::{self, MemoryWindow},
    waits::{self, WaitProfile},
    Target,
};
use crate::{
    allocator::live::LiveBlock,
    ledger::{ProcessLedger, Provenance},
    model::{
        BlockOp, CaptureRecord, Followed, MemoryReport, ThreadSnapshot, WaitReport, WindowEnd,
    },
    procfs::Rss,
    stacks::StackTable,
    targets::{cgroup, ProcessIdentity},
};

/// What a capture has learned so far.
#[derive(Default)]
pub struct CaptureState {
    /// Followed processes by PID.
    pub targets: BTreeMap<u32, Target>,
    /// Exited targets whose PID a new target took (PIDs are reused): still reported.
    pub retired: Vec<Target>,
    /// Completed waits by (process, what, stack).
    pub waits: WaitProfile,
    /// Monotonic time (ns, the clock of `bpf_ktime_get_ns`) when the window started.
    pub window_start_ns: u64,
    /// A later window of a capture that keeps its probes (the daemon): stacks and the
    /// memory verdict count from when each process was first followed.
    pub since_follow: bool,
    /// The latest snapshot of each process's blocked threads (None: it was gone), with
    /// how long the probes had watched.
    pub snapshots: BTreeMap<u32, (u64, Option<ThreadSnapshot>)>,
    /// Waits shorter than the threshold, counted in the kernel.
    pub short_waits: u64,
    /// How the last window ended.
    pub window_end: Option<WindowEnd>,
    /// Judge memory growth by its trend over intervals (the daemon).
    pub trends: bool,
}

impl CaptureState {
    /// Apply one record.
    pub fn apply(&mut self, record: &CaptureRecord) {
        match record {
            CaptureRecord::WindowStart { start_ns } => {
                self.window_start_ns = *start_ns;
                for t in self.targets.values_mut() {
                    t.requests.new_window(*start_ns);
                }
            }
            CaptureRecord::Conn {
                pid,
                fd,
                time_ns,
                event,
            } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.requests.apply(*fd, *time_ns, event);
                }
            }
            CaptureRecord::Follow(f) => self.follow(f),
            CaptureRecord::Allocator { pid, probed } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.allocators.push(probed.clone());
                }
            }
            CaptureRecord::AllocatorNote { pid, note } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.allocator_note = Some(note.clone());
                }
            }
            CaptureRecord::AllocatorSeen { pid, family } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.allocator_seen = Some(*family);
                }
            }
            CaptureRecord::Baseline { only_new } => {
                for t in self.targets.values_mut() {
                    if !only_new || t.committed_at_start.is_none() {
                        t.committed_at_start =
                            Some(memory::report::labelled(&t.ledger.committed_by_kind()));
                    }
                }
            }
            CaptureRecord::Mem { pid, op, sample } => {
                let Some(t) = self.targets.get_mut(pid) else {
                    return;
                };
                t.events += 1;
                let provenance = match sample {
                    Some(s) => {
                        t.samples += 1;
                        t.truncated += u64::from(s.stack.is_some_and(|s| s.truncated));
                        Provenance::Window {
                            stack: s.stack.map(|s| s.id),
                            scale: s.scale,
                        }
                    }
                    None => Provenance::Window {
                        stack: None,
                        scale: 1.0,
                    },
                };
                if *op == crate::events::MemOp::Exit {
                    t.mark_exited();
                }
                t.ledger.apply(op, provenance);
            }
            CaptureRecord::Comm { pid, comm } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.comm = comm.clone();
                }
            }
            CaptureRecord::Block { pid, time_ns, op } => {
                let Some(t) = self.targets.get_mut(pid) else {
                    return;
                };
                match *op {
                    BlockOp::Alloc {
                        addr,
                        size,
                        usable_size,
                        weight,
                        stack,
                    } => {
                        t.truncated += u64::from(stack.is_some_and(|s| s.truncated));
                        t.allocs.alloc(
                            addr,
                            LiveBlock {
                                stack: stack.map(|s| s.id),
                                size,
                                usable: if usable_size > 0 {
                                    u64::from(usable_size)
                                } else {
                                    size
                                },
                                weight,
                                time_ns: *time_ns,
                            },
                        );
                    }
                    BlockOp::Free { addr } => t.allocs.free(addr, *time_ns),
                }
            }
            CaptureRecord::HeapLayout { pid, layout } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.heap_layout = *layout;
                }
            }
            CaptureRecord::FreeFlow { pid, flow } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.allocs.cut(flow.read_ns);
                    t.free_flow = Some(profiler_common::FreeFlow {
                        frees: flow.frees,
                        unsized_frees: flow.unsized_frees,
                        sampled: flow.sampled,
                        weight: flow.weight,
                        variance: flow.variance,
                        sized_bytes: flow.sized_bytes,
                    });
                }
            }
            CaptureRecord::JudgeByTrend => self.trends = true,
            CaptureRecord::IntervalEnd { end_ns } => {
                for t in self.targets.values_mut() {
                    if !t.allocators.is_empty() {
                        let levels = t.allocs.growth_with_age(t.followed_ns, *end_ns);
                        let secs = end_ns.saturating_sub(t.followed_ns) as f64 / 1e9;
                        t.series.push(secs, &levels);
                        let committed = memory::report::committed_anon(t);
                        t.series.push_committed(secs, committed);
                    }
                }
            }
            CaptureRecord::Wait {
                pid,
                on,
                stack,
                blocked_ns,
                end_ns,
            } => {
                let Some(t) = self.targets.get_mut(pid) else {
                    return;
                };
                t.truncated += u64::from(stack.is_some_and(|s| s.truncated));
                t.waits += 1;
                // Only the part of the wait inside the window counts.
                let in_window = end_ns.saturating_sub(self.window_start_ns);
                let ns = if self.window_start_ns > 0 {
                    (*blocked_ns).min(in_window)
                } else {
                    *blocked_ns
                };
                self.waits.add(*pid, on.clone(), stack.map(|s| s.id), ns);
            }
            CaptureRecord::Exited { pid } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.mark_exited();
                }
            }
            CaptureRecord::FinalRss { pid, rss } => {
                if let Some(t) = self.targets.get_mut(pid).filter(|t| !t.exited) {
                    t.rss_after = *rss;
                    if rss.is_none() {
                        t.exited = true;
                    }
                }
            }
            CaptureRecord::Resident { pid, track } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.resident = *track;
                }
            }
            CaptureRecord::AsyncCensus { pid, report } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.async_census.clone_from(report);
                }
            }
            CaptureRecord::JsFrames { pid, report } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.js_frames.clone_from(report);
                }
            }
            CaptureRecord::Snapshot {
                pid,
                observed_ns,
                snapshot,
                truncated,
            } => {
                if let Some(t) = self.targets.get_mut(pid) {
                    t.truncated += truncated;
                }
                self.snapshots
                    .insert(*pid, (*observed_ns, snapshot.clone()));
            }
            CaptureRecord::ShortWaits { count } => self.short_waits = *count,
            CaptureRecord::WindowEnd(end) => self.window_end = Some(end.clone()),
            CaptureRecord::NextWindow { rss_before } => self.next_window(rss_before),
        }
    }

    /// Start the next window: forget exited targets (they were reported), count from
    /// zero, and take each target's RSS "before" from `rss_before`.
    fn next_window(&mut self, rss_before: &[(u32, Option<Rss>)]) {
        self.targets.retain(|_, t| !t.exited);
        self.retired.clear();
        self.waits = WaitProfile::default();
        self.snapshots.clear();
        self.since_follow = true;
        for t in self.targets.values_mut() {
            t.rss_before = rss_before
                .iter()
                .find(|(pid, _)| *pid == t.pid)
                .and_then(|(_, rss)| *rss);
            t.rss_after = None;
            t.events = 0;
            t.samples = 0;
            t.truncated = 0;
            t.waits = 0;
        }
    }

    /// Follow a process: its ledger seeded with its mappings. An exited target with the
    /// same PID (the PID was reused) is kept for the report.
    fn follow(&mut self, f: &Followed) {
        let mut ledger = ProcessLedger::new();
        ledger.seed(&f.maps, f.start_brk);
        let lines = f
            .identity
            .cgroup
            .as_deref()
            .map(cgroup::parse_proc_cgroup)
            .unwrap_or_default();
        let identity = ProcessIdentity::from_cgroups(&lines, f.identity.ns_pid);
        if self.targets.get(&f.pid).is_some_and(|t| t.exited) {
            self.retired.extend(self.targets.remove(&f.pid));
        }
        let mut target = Target::new(f.pid, f.comm.clone(), identity, ledger, f.rss);
        target.followed_ns = f.followed_ns;
        self.targets.insert(f.pid, target);
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

    /// The memory report of every target (or only `only`), retired ones included:
    /// outside containers first, then container by container; by PID, exited first.
    pub fn memory_report(
        &self,
        end: &WindowEnd,
        stacks: &StackTable,
        only: Option<u32>,
    ) -> MemoryReport {
        let window = MemoryWindow {
            target: end.target.clone(),
            // A daemon's interval is the window; what is live counts from the attach.
            window_secs: end.window_secs,
            since_follow_secs: self.trends.then_some(end.attached_secs),
            sample_bytes: end.sample_bytes,
            alloc_sample_bytes: end.alloc_sample_bytes,
            counters: end.counters,
            start_ns: self.window_start_ns,
            end_ns: end.end_ns,
            since_follow: self.since_follow,
            trends: self.trends,
        };
        let mut all: Vec<&Target> = self
            .targets
            .values()
            .chain(&self.retired)
            .filter(|t| only.is_none_or(|o| o == t.pid))
            .collect();
        all.sort_by_key(|t| {
            (
                t.identity.container.as_ref().map(|c| &c.id),
                t.pid,
                !t.exited,
            )
        });
        let mut report = memory::report(&window, all, stacks);
        if let Some(pid) = only {
            report.target = format!("pid {pid}");
        }
        report
    }

    /// The wait report of every target (or only `only`), from the latest snapshots.
    pub fn wait_report(
        &self,
        threshold_ns: u64,
        stall_threshold_ns: u64,
        stacks: &StackTable,
        only: Option<u32>,
    ) -> WaitReport {
        let processes = self
            .pids_grouped()
            .into_iter()
            .filter(|&p| only.is_none_or(|o| o == p))
            .map(|pid| {
                let (observed_ns, snap) = self.snapshots.get(&pid).cloned().unwrap_or_default();
                waits::report::process(
                    pid,
                    self.targets.get(&pid),
                    snap,
                    &self.waits,
                    stacks,
                    stall_threshold_ns,
                    observed_ns,
                )
            })
            .collect();
        WaitReport {
            threshold_ns,
            stall_threshold_ns,
            short_waits: self.short_waits,
            processes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{
            linux::{MAP_ANONYMOUS, MAP_PRIVATE},
            MemOp,
        },
        model::{MemSampleRef, StackRef, WaitOn},
    };

    fn follow(pid: u32) -> CaptureRecord {
        CaptureRecord::Follow(Followed {
            pid,
            comm: "app".into(),
            identity: Default::default(),
            maps: Vec::new(),
            start_brk: None,
            rss: None,
            followed_ns: 0,
        })
    }

    /// Check that records build the per-process counts (a wait counted only inside the
    /// window), and that the next window forgets exited targets and counts from zero.
    #[test]
    fn records_build_the_state_and_next_window_resets_it() {
        let mut s = CaptureState::default();
        for r in [
            CaptureRecord::WindowStart { start_ns: 1_000 },
            follow(7),
            follow(8),
            CaptureRecord::Mem {
                pid: 7,
                op: MemOp::Mmap {
                    addr: 0x10000,
                    len: 1 << 20,
                    prot: 3,
                    flags: MAP_PRIVATE | MAP_ANONYMOUS,
                    fd: -1,
                },
                sample: Some(MemSampleRef {
                    stack: Some(StackRef {
                        id: 0,
                        truncated: true,
                    }),
                    scale: 1.0,
                }),
            },
            CaptureRecord::Wait {
                pid: 7,
                on: WaitOn::Futex { addr: 1 },
                stack: None,
                blocked_ns: 5_000,
                end_ns: 3_000,
            },
            CaptureRecord::Mem {
                pid: 8,
                op: MemOp::Exit,
                sample: None,
            },
            // A process never followed: ignored.
            CaptureRecord::Exited { pid: 9 },
        ] {
            s.apply(&r);
        }
        let t = &s.targets[&7];
        assert_eq!((t.events, t.samples, t.truncated, t.waits), (1, 1, 1, 1));
        assert_eq!(
            s.waits.of_process(7)[0].2.ns,
            2_000,
            "only the part in the window"
        );
        assert!(s.targets[&8].exited);
        s.apply(&CaptureRecord::NextWindow {
            rss_before: vec![(
                7,
                Some(Rss {
                    total: 5,
                    ..Default::default()
                }),
            )],
        });
        assert!(!s.targets.contains_key(&8));
        let t = &s.targets[&7];
        assert_eq!((t.events, t.waits, t.truncated), (0, 0, 0));
        assert_eq!(t.rss_before.map(|r| r.total), Some(5));
        assert!(s.since_follow && s.waits.of_process(7).is_empty());
        // PID 7 exits and a new process takes its PID: both are reported in this
        // window, and only the new one in the next (a daemon once kept reporting the
        // old one in every later interval).
        s.apply(&CaptureRecord::Exited { pid: 7 });
        s.apply(&follow(7));
        assert_eq!(s.retired.len(), 1);
        assert!(!s.targets[&7].exited);
        s.apply(&CaptureRecord::NextWindow {
            rss_before: Vec::new(),
        });
        assert!(s.retired.is_empty() && s.targets.contains_key(&7));
    }

    /// Check that a daemon interval's memory report gives the interval's own length,
    /// not the time since the probes attached (3 s, not 12 s), and says its live memory
    /// counts from the attach: in report.txt, report.json and the pprof comments. A
    /// `record` window keeps its words.
    #[test]
    fn daemon_interval_reports_its_own_length() {
        let end = WindowEnd {
            target: "pid 7".into(),
            window_secs: 3.0,
            attached_secs: 12.0,
            end_ns: 12_000_000_000,
            memory: true,
            ..Default::default()
        };
        let mut s = CaptureState::default();
        for r in [
            CaptureRecord::JudgeByTrend,
            CaptureRecord::WindowStart {
                start_ns: 9_000_000_000,
            },
            follow(7),
        ] {
            s.apply(&r);
        }
        let report = s.memory_report(&end, &StackTable::default(), None);
        assert_eq!(
            (report.window_secs, report.since_follow_secs),
            (3.0, Some(12.0))
        );
        let text = crate::render::report::text(&report);
        assert!(
            text.starts_with("profiler daemon: pid 7, interval 3.0 s; live memory counted since the probes attached 12.0 s ago\n"),
            "{text}"
        );
        assert!(!text.contains("window 12.0"), "{text}");
        let json = crate::render::report::json(&report);
        assert_eq!(json["window_secs"], 3.0);
        assert_eq!(json["since_follow_secs"], 12.0);
        let meta = crate::render::pprof::CaptureMeta::default();
        for comment in [
            &crate::render::pprof::memory_profile(&report, &meta).comments[0],
            &crate::render::pprof::allocations_profile(&report, &meta).comments[0],
        ] {
            assert!(
                comment.contains("since the process was first followed")
                    && !comment.contains("in the window"),
                "{comment}"
            );
        }

        let mut record = CaptureState::default();
        record.apply(&follow(7));
        let report = record.memory_report(&end, &StackTable::default(), None);
        assert_eq!((report.window_secs, report.since_follow_secs), (3.0, None));
        assert!(crate::render::report::text(&report)
            .starts_with("profiler record: pid 7, window 3.0 s\n"));
    }
}
