//! inferno's folded format: `frame;frame;leaf COUNT`, root first, one stack per line.
use std::collections::BTreeMap;

use super::MemoryReport;

/// Make a frame name safe for the folded format (`;` separates frames, a space before
/// the count ends the stack; newlines end the line).
pub fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// Folded lines of memory growth: `comm (pid);<region kind>;frames… BYTES`.
/// Identical stacks are merged, lines are sorted, zero-byte lines are dropped.
pub fn memory_lines(report: &MemoryReport) -> Vec<String> {
    let mut merged: BTreeMap<String, f64> = BTreeMap::new();
    for p in &report.processes {
        for g in &p.growth {
            let mut key = format!("{} ({});{}", sanitize(&p.comm), p.pid, g.kind);
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
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

/// Folded lines of live allocation growth: `comm (pid);frames… BYTES`, from the
/// whole window (`Half::Whole`) or one half of it (for the differential view).
pub fn allocation_lines(report: &MemoryReport, half: Half) -> Vec<String> {
    let mut merged: BTreeMap<String, f64> = BTreeMap::new();
    for p in &report.processes {
        let Some(a) = &p.allocations else { continue };
        let rows = match half {
            Half::Whole => &a.growth,
            Half::First => &a.first_half,
            Half::Second => &a.second_half,
        };
        for g in rows {
            let mut key = format!("{} ({})", sanitize(&p.comm), p.pid);
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
        .map(|(k, v)| format!("{k} {v}"))
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
    use crate::render::{ProcessMemory, StackGrowth};

    /// Check that growth renders root first, merges duplicates and drops zeros.
    #[test]
    fn renders_merged_sorted_lines() {
        let report = MemoryReport {
            processes: vec![ProcessMemory {
                pid: 7,
                comm: "svc;x".into(),
                growth: vec![
                    StackGrowth {
                        kind: "anon mmap".into(),
                        frames: vec!["main".into(), "leak".into()],
                        bytes: 100.4,
                    },
                    StackGrowth {
                        kind: "anon mmap".into(),
                        frames: vec!["main".into(), "leak".into()],
                        bytes: 50.0,
                    },
                    StackGrowth {
                        kind: "brk heap".into(),
                        frames: vec!["main".into()],
                        bytes: 0.2,
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
}
