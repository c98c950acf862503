//! inferno's folded format: `frame;frame;leaf COUNT`, root first, one stack per line.
use std::collections::BTreeMap;

use crate::model::MemoryReport;
use crate::targets::ProcessIdentity;

/// Make a frame name safe for the folded format (`;` separates frames, a space before
/// the count ends the stack; newlines end the line).
pub fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// The root frames of a process: `comm (pid)`, under `container <short id>` when the
/// process runs in a container, so a flamegraph groups by container, then process.
pub fn process_root(comm: &str, pid: u32, identity: &ProcessIdentity) -> String {
    match &identity.container {
        Some(c) => format!("container {};{} ({pid})", c.short(), sanitize(comm)),
        None => format!("{} ({pid})", sanitize(comm)),
    }
}

/// Folded lines of memory growth: `[container ID;]comm (pid);<region kind>;frames… BYTES`.
/// Identical stacks are merged, lines are sorted, zero-byte lines are dropped.
pub fn memory_lines(report: &MemoryReport) -> Vec<String> {
    lines(memory_counts(report))
}

/// `stack count` lines of (stack, count) pairs.
pub fn lines(counts: Vec<(String, u64)>) -> Vec<String> {
    counts
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

/// [`memory_lines`] as (folded stack, bytes) pairs, for totals without parsing text.
pub fn memory_counts(report: &MemoryReport) -> Vec<(String, u64)> {
    let mut merged: BTreeMap<String, f64> = BTreeMap::new();
    for p in &report.processes {
        for g in &p.growth {
            let mut key = format!(
                "{};{}",
                process_root(&p.comm, p.pid, &p.identity),
                g.kind.label()
            );
            for f in &g.frames {
                key.push(';');
                key.push_str(&sanitize(f));
            }
            *merged.entry(key).or_insert(0.0) += g.bytes;
        }
    }
    merged
        .into_iter()
        .map(|(k, v)| (k, v.round() as u64))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Folded lines of live allocation growth: `[container ID;]comm (pid);frames… BYTES`, from the
/// whole window (`Half::Whole`) or one half of it (for the differential view).
pub fn allocation_lines(report: &MemoryReport, half: Half) -> Vec<String> {
    lines(allocation_counts(report, half))
}

/// [`allocation_lines`] as (folded stack, bytes) pairs.
pub fn allocation_counts(report: &MemoryReport, half: Half) -> Vec<(String, u64)> {
    let mut merged: BTreeMap<String, f64> = BTreeMap::new();
    for p in &report.processes {
        let Some(a) = &p.allocations else { continue };
        let rows = match half {
            Half::Whole => &a.growth,
            Half::First => &a.first_half,
            Half::Second => &a.second_half,
        };
        for g in rows {
            let mut key = process_root(&p.comm, p.pid, &p.identity);
            for f in &g.frames {
                key.push(';');
                key.push_str(&sanitize(f));
            }
            *merged.entry(key).or_insert(0.0) += g.bytes;
        }
    }
    merged
        .into_iter()
        .map(|(k, v)| (k, v.round() as u64))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Which part of the window a view covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Whole,
    First,
    Second,
}

/// Parse a folded line into (frames, count). Used by tests and by `diff`.
pub fn parse_line(line: &str) -> Option<(Vec<&str>, u64)> {
    let (stack, count) = line.rsplit_once(' ')?;
    Some((stack.split(';').collect(), count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ledger::RegionKind,
        model::{ProcessMemory, StackGrowth},
    };

    /// Check that growth renders root first, merges duplicates and drops zeros.
    #[test]
    fn renders_merged_sorted_lines() {
        let report = MemoryReport {
            processes: vec![ProcessMemory {
                pid: 7,
                comm: "svc;x".into(),
                growth: vec![
                    StackGrowth {
                        kind: RegionKind::Anon,
                        frames: vec!["main".into(), "leak".into()],
                        bytes: 100.4,
                        ..Default::default()
                    },
                    StackGrowth {
                        kind: RegionKind::Anon,
                        frames: vec!["main".into(), "leak".into()],
                        bytes: 50.0,
                        ..Default::default()
                    },
                    StackGrowth {
                        kind: RegionKind::Heap,
                        frames: vec!["main".into()],
                        bytes: 0.2,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            memory_lines(&report),
            vec!["svc:x (7);anon mmap;main;leak 150"]
        );
        assert_eq!(parse_line("a;b c 12"), Some((vec!["a", "b c"], 12)));
    }

    /// Check that a process in a container is rooted under its short container ID.
    #[test]
    fn container_processes_root_under_container() {
        let identity = ProcessIdentity {
            container: crate::targets::container::from_cgroup_path(&format!(
                "/system.slice/docker-{}.scope",
                "ab12".repeat(16)
            )),
            cgroup: Some("/system.slice/docker-x.scope".into()),
            ns_pid: Some(1),
        };
        let report = MemoryReport {
            processes: vec![ProcessMemory {
                pid: 9,
                comm: "app".into(),
                identity,
                growth: vec![StackGrowth {
                    kind: RegionKind::Anon,
                    frames: vec!["main".into()],
                    bytes: 4096.0,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            memory_lines(&report),
            vec!["container ab12ab12ab12;app (9);anon mmap;main 4096"]
        );
    }
}
