//! The memory and wait reports as [`ProfileModel`]s.
//!
//! Samples carry the same stacks as the folded files, minus the two synthetic root
//! frames (`comm (pid)` and the region or wait kind), which become labels. Values are
//! rounded so that each folded line's total equals the sum of its pprof samples: a
//! reader comparing `go tool pprof` with `memory.folded` sees the same numbers.
use std::collections::BTreeMap;

use super::model::{Label, ProfileModel, ProfileSample, ValueKind};
use crate::{
    model::{AllocGrowth, CodeLocation, MemoryReport, StackGrowth, WaitReport},
    render::folded::sanitize,
};

/// What a report does not say about its capture: when it started, and labels per
/// process that other stages know (container id, cgroup).
#[derive(Clone, Debug, Default)]
pub struct CaptureMeta {
    /// Start of the window, ns since the Unix epoch.
    pub start_unix_ns: i64,
    pub duration_ns: i64,
    /// Extra labels per pid, e.g. `container` and `cgroup`.
    pub process_labels: BTreeMap<u32, Vec<Label>>,
}

impl CaptureMeta {
    fn labels(&self, pid: u32, comm: &str) -> Vec<Label> {
        let mut labels = vec![Label::str("pid", pid.to_string()), Label::str("comm", comm)];
        labels.extend(self.process_labels.get(&pid).cloned().unwrap_or_default());
        labels
    }
}

/// A frame for samples without a stack, so viewers that drop empty stacks (flame
/// graphs) still count their value.
pub const NO_STACK: &str = "[no stack]";

/// Locations of a stack: the detailed ones when the report carries them, else one
/// named location per frame, else [`NO_STACK`].
fn stack(frames: &[String], locations: &[CodeLocation]) -> Vec<CodeLocation> {
    if !locations.is_empty() {
        return locations.to_vec();
    }
    if frames.is_empty() {
        return vec![CodeLocation::named(NO_STACK)];
    }
    frames
        .iter()
        .map(|f| CodeLocation::named(f.as_str()))
        .collect()
}

/// The folded line key of a stack, to group samples the way the folded file does.
fn folded_key(comm: &str, pid: u32, kind: &str, frames: &[String]) -> String {
    let mut key = format!("{} ({pid});{}", sanitize(comm), sanitize(kind));
    for f in frames {
        key.push(';');
        key.push_str(&sanitize(f));
    }
    key
}

/// Round a group's estimates so that their sum is the rounded group total
/// (cumulative rounding): `[0.4, 0.4, 0.4]` → `[0, 1, 0]`, total 1 as `round(1.2)`.
fn round_group(values: &[f64]) -> Vec<i64> {
    let mut cumulative = 0.0;
    let mut previous = 0i64;
    values
        .iter()
        .map(|v| {
            cumulative += v;
            let now = cumulative.round() as i64;
            let out = now - previous;
            previous = now;
            out
        })
        .collect()
}

/// `memory.pb.gz`: live bytes and estimated objects created in the window, by stack,
/// with `pid`, `comm` and `region` labels. Totals equal `memory.folded`.
pub fn memory_profile(report: &MemoryReport, meta: &CaptureMeta) -> ProfileModel {
    // Group like folded::memory_lines: (folded key) → entries.
    let mut groups: BTreeMap<String, Vec<(u32, &str, &StackGrowth)>> = BTreeMap::new();
    for p in &report.processes {
        for g in &p.growth {
            groups
                .entry(folded_key(&p.comm, p.pid, g.kind.label(), &g.frames))
                .or_default()
                .push((p.pid, &p.comm, g));
        }
    }
    let mut samples = Vec::new();
    for entries in groups.values() {
        let bytes = round_group(&entries.iter().map(|e| e.2.bytes).collect::<Vec<_>>());
        let objects = round_group(&entries.iter().map(|e| e.2.objects).collect::<Vec<_>>());
        for ((pid, comm, g), (b, o)) in entries.iter().zip(bytes.into_iter().zip(objects)) {
            if b <= 0 && o <= 0 {
                continue;
            }
            let mut labels = meta.labels(*pid, comm);
            labels.push(Label::str("region", g.kind.label()));
            samples.push(ProfileSample {
                stack: stack(&g.frames, &g.locations),
                values: vec![b.max(0), o.max(0)],
                labels,
            });
        }
    }
    ProfileModel {
        sample_types: vec![
            ValueKind::new("inuse_space", "bytes"),
            ValueKind::new("inuse_objects", "count"),
        ],
        default_sample_type: Some("inuse_space".into()),
        period_type: ValueKind::new("space", "bytes"),
        period: i64::try_from(report.sample_bytes).unwrap_or(i64::MAX),
        time_nanos: meta.start_unix_ns,
        duration_nanos: meta.duration_ns,
        comments: vec![format!(
            "profiler: memory growth of {}: mapped bytes created {} and still live, by stack (sampled every {} bytes on average)",
            report.target, crate::render::report::span(report), report.sample_bytes
        )],
        samples,
    }
}

/// `allocations.pb.gz`: allocator-level blocks allocated in the window and still
/// live, by stack (where the allocation returned): estimated bytes and blocks, with
/// `pid` and `comm` labels. Totals equal `allocations.folded` exactly.
pub fn allocations_profile(report: &MemoryReport, meta: &CaptureMeta) -> ProfileModel {
    let mut groups: BTreeMap<String, Vec<(u32, &str, &AllocGrowth)>> = BTreeMap::new();
    for p in &report.processes {
        let Some(a) = &p.allocations else { continue };
        for g in &a.growth {
            let mut key = format!("{} ({})", sanitize(&p.comm), p.pid);
            for f in &g.frames {
                key.push(';');
                key.push_str(&sanitize(f));
            }
            groups.entry(key).or_default().push((p.pid, &p.comm, g));
        }
    }
    let mut samples = Vec::new();
    for entries in groups.values() {
        let bytes = round_group(&entries.iter().map(|e| e.2.bytes).collect::<Vec<_>>());
        let objects = round_group(&entries.iter().map(|e| e.2.objects).collect::<Vec<_>>());
        for ((pid, comm, g), (b, o)) in entries.iter().zip(bytes.into_iter().zip(objects)) {
            if b <= 0 && o <= 0 {
                continue;
            }
            samples.push(ProfileSample {
                stack: stack(&g.frames, &g.locations),
                values: vec![b.max(0), o.max(0)],
                labels: meta.labels(*pid, comm),
            });
        }
    }
    ProfileModel {
        sample_types: vec![
            ValueKind::new("inuse_space", "bytes"),
            ValueKind::new("inuse_objects", "count"),
        ],
        default_sample_type: Some("inuse_space".into()),
        period_type: ValueKind::new("space", "bytes"),
        period: i64::try_from(report.sample_bytes).unwrap_or(i64::MAX),
        time_nanos: meta.start_unix_ns,
        duration_nanos: meta.duration_ns,
        comments: vec![format!(
            "profiler: live allocations of {}: heap blocks allocated {} and not freed, by stack (sampled every {} bytes on average)",
            report.target, crate::render::report::span(report), report.alloc_sample_bytes
        )],
        samples,
    }
}

/// `waits.pb.gz`: blocked nanoseconds and number of waits by stack, completed waits
/// and waits still in progress at the end (label `state`), with `pid`, `comm` and
/// `wait` (futex, socket peer, …) labels. The futex address is left out: a label with
/// that many values would make one Pyroscope series per lock. Totals equal
/// `waits.folded` up to its rounding to whole microseconds per line.
pub fn waits_profile(report: &WaitReport, meta: &CaptureMeta) -> ProfileModel {
    let mut samples = Vec::new();
    for p in &report.processes {
        let labels = |kind: &str, state: &str| {
            let mut l = meta.labels(p.pid, &p.comm);
            l.push(Label::str("wait", kind));
            l.push(Label::str("state", state));
            l
        };
        for b in &p.completed {
            if b.ns == 0 {
                continue;
            }
            samples.push(ProfileSample {
                stack: stack(&b.frames, &b.locations),
                values: vec![i64::try_from(b.ns).unwrap_or(i64::MAX), b.count as i64],
                labels: labels(&b.kind, "completed"),
            });
        }
        for g in &p.in_flight {
            let ns = g.blocked_at_least_ns.min(p.observed_ns) * g.tids.len() as u64;
            if ns == 0 {
                continue;
            }
            samples.push(ProfileSample {
                stack: stack(&g.stack, &g.locations),
                values: vec![i64::try_from(ns).unwrap_or(i64::MAX), g.tids.len() as i64],
                labels: labels(&g.kind, "in progress"),
            });
        }
    }
    ProfileModel {
        sample_types: vec![
            ValueKind::new("blocked", "nanoseconds"),
            ValueKind::new("count", "count"),
        ],
        default_sample_type: Some("blocked".into()),
        period_type: ValueKind::new("blocked", "nanoseconds"),
        period: i64::try_from(report.threshold_ns).unwrap_or(i64::MAX).max(1),
        time_nanos: meta.start_unix_ns,
        duration_nanos: meta.duration_ns,
        comments: vec![format!(
            "profiler: blocked time by stack; waits shorter than {} ns are only counted ({} of them)",
            report.threshold_ns, report.short_waits
        )],
        samples,
    }
}
