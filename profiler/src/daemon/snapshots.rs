//! When to take a snapshot outside the interval schedule, and what an OOM snapshot
//! says about its victim.
//!
//! - OOM: every `oom:mark_victim` of a target, once per process.
//! - RSS: when a target's RSS crosses `--rss-threshold` upwards; re-armed once it has
//!   fallen below 90 % of the threshold, so a process hovering at the line does not
//!   write a snapshot every second.
//! - Stall: when the stall verdict fires for a target.
//!
//! RSS and stall snapshots are also rate-limited per process by a cool-down.
use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    time::{Duration, Instant},
};

use super::layout::CaptureKind;
use crate::events::OomRecord;

/// Snapshot decisions, one per (kind, process).
#[derive(Debug)]
pub struct Triggers {
    cooldown: Duration,
    last: HashMap<(CaptureKind, u32), Instant>,
    /// Processes above the RSS threshold (not re-armed yet).
    above: HashSet<u32>,
    oom_done: HashSet<u32>,
}

impl Triggers {
    pub fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            last: HashMap::new(),
            above: HashSet::new(),
            oom_done: HashSet::new(),
        }
    }

    /// Whether an OOM kill of `pid` gets a snapshot (the first one does).
    pub fn oom(&mut self, pid: u32) -> bool {
        self.oom_done.insert(pid)
    }

    /// Whether `pid`, with resident bytes `rss`, just crossed `threshold` upwards.
    pub fn rss(&mut self, pid: u32, rss: u64, threshold: u64, now: Instant) -> bool {
        if rss < threshold - threshold / 10 {
            self.above.remove(&pid);
            return false;
        }
        if rss < threshold || self.above.contains(&pid) {
            return false;
        }
        if !self.cooled_down(CaptureKind::Rss, pid, now) {
            return false;
        }
        self.above.insert(pid);
        self.last.insert((CaptureKind::Rss, pid), now);
        true
    }

    /// Whether a stall of `pid` gets a snapshot now (rate-limited).
    pub fn stall(&mut self, pid: u32, now: Instant) -> bool {
        if !self.cooled_down(CaptureKind::Stall, pid, now) {
            return false;
        }
        self.last.insert((CaptureKind::Stall, pid), now);
        true
    }

    /// Forget a process that is gone.
    pub fn forget(&mut self, pid: u32) {
        self.above.remove(&pid);
        self.last.retain(|(_, p), _| *p != pid);
    }

    fn cooled_down(&self, kind: CaptureKind, pid: u32, now: Instant) -> bool {
        self.last
            .get(&(kind, pid))
            .is_none_or(|&t| now.duration_since(t) >= self.cooldown)
    }
}

/// The text of `oom.txt`: who was killed, where, how big, and the allocation that hit
/// the limit when the victim ran the OOM killer itself.
pub fn oom_text(
    oom: &OomRecord,
    comm: &str,
    cgroup: Option<&str>,
    trigger: Option<&[String]>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "OOM kill: {comm} (pid {}) was chosen by the OOM killer",
        oom.victim_pid
    );
    let _ = writeln!(out, "cgroup: {}", cgroup.unwrap_or("unknown"));
    let _ = writeln!(
        out,
        "at the kill: total-vm {} kB, anon-rss {} kB, file-rss {} kB, shmem-rss {} kB",
        oom.total_vm_kb, oom.anon_rss_kb, oom.file_rss_kb, oom.shmem_rss_kb
    );
    if oom.by_pid == oom.victim_pid {
        let _ = writeln!(out, "the OOM killer ran in the victim's own allocation");
    } else {
        let _ = writeln!(out, "the OOM killer ran in pid {}", oom.by_pid);
    }
    match trigger {
        Some(frames) if !frames.is_empty() => {
            let _ = writeln!(out, "\nallocation that hit the limit (root first):");
            for f in frames {
                let _ = writeln!(out, "  {f}");
            }
        }
        _ => {}
    }
    let _ = writeln!(
        out,
        "\nmemory.folded / memory.svg / report.txt: the victim's memory ledger as it was \
         before the kill: live mappings by the stack that created them."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that an RSS snapshot fires once per upward crossing and re-arms below 90 %.
    #[test]
    fn rss_fires_once_per_crossing() {
        let mut t = Triggers::new(Duration::ZERO);
        let now = Instant::now();
        assert!(!t.rss(1, 50, 100, now));
        assert!(t.rss(1, 120, 100, now));
        assert!(!t.rss(1, 130, 100, now));
        assert!(!t.rss(1, 95, 100, now)); // below, but not re-armed
        assert!(!t.rss(1, 101, 100, now));
        assert!(!t.rss(1, 80, 100, now)); // re-armed
        assert!(t.rss(1, 100, 100, now));
    }

    /// Check that stall snapshots of one process are rate-limited, others independent.
    #[test]
    fn stall_snapshots_are_rate_limited() {
        let mut t = Triggers::new(Duration::from_secs(60));
        let now = Instant::now();
        assert!(t.stall(1, now));
        assert!(!t.stall(1, now + Duration::from_secs(30)));
        assert!(t.stall(2, now + Duration::from_secs(30)));
        assert!(t.stall(1, now + Duration::from_secs(61)));
        assert!(t.oom(1) && !t.oom(1));
    }

    /// Check that the OOM text names the victim, its cgroup and the triggering stack.
    #[test]
    fn oom_text_names_victim_and_stack() {
        let oom = OomRecord {
            victim_pid: 42,
            by_pid: 42,
            time_ns: 0,
            total_vm_kb: 70000,
            anon_rss_kb: 65000,
            file_rss_kb: 1000,
            shmem_rss_kb: 0,
            cgroup_id: 1,
            stack: None,
        };
        let frames = vec!["main".to_string(), "grow_forever".to_string()];
        let text = oom_text(&oom, "oom_grow", Some("memory:/t"), Some(&frames));
        assert!(text.contains("oom_grow (pid 42)"));
        assert!(text.contains("cgroup: memory:/t"));
        assert!(text.contains("anon-rss 65000 kB"));
        assert!(text.contains("  grow_forever\n"));
    }
}
