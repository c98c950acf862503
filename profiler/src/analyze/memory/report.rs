//! The memory model of a window: per process, the ledger's growth by stack, the live
//! allocations by stack (in halves, for the differential view), resident memory by
//! kind, and the verdict judged from them.
use std::collections::BTreeMap;

use super::{
    series,
    verdict::{self, MappedStack, MemoryEvidence},
};
use crate::{
    allocator::{net, LiveGrowth},
    analyze::Target,
    events::StackId,
    ledger::RegionKind,
    model::{
        growth::Point, AllocGrowth, AllocationView, Counters, MemoryReport, ProcessMemory,
        ResidentView, StackGrowth,
    },
    stacks::{locations, StackTable},
};

/// The window a memory model covers.
#[derive(Clone, Debug)]
pub struct MemoryWindow {
    /// What was targeted, for titles (e.g. `pid 1234`).
    pub target: String,
    pub window_secs: f64,
    /// See [`MemoryReport::since_follow_secs`].
    pub since_follow_secs: Option<f64>,
    pub sample_bytes: u64,
    pub alloc_sample_bytes: u64,
    pub counters: Counters,
    /// Monotonic ns of the window's start and end (the allocation halves split there).
    pub start_ns: u64,
    pub end_ns: u64,
    /// A later window of a capture that keeps its probes (the daemon): stacks and the
    /// verdict count from when each process was first followed.
    pub since_follow: bool,
    /// Judge growth by its trend over the windows so far (the daemon), not by one.
    pub trends: bool,
}

/// Build the memory report of `targets`, in the order given.
pub fn report<'a>(
    window: &MemoryWindow,
    targets: impl IntoIterator<Item = &'a Target>,
    stacks: &StackTable,
) -> MemoryReport {
    MemoryReport {
        target: window.target.clone(),
        window_secs: window.window_secs,
        since_follow_secs: window.since_follow_secs,
        sample_bytes: window.sample_bytes,
        alloc_sample_bytes: window.alloc_sample_bytes,
        counters: window.counters,
        processes: targets
            .into_iter()
            .map(|t| process(window, t, stacks))
            .collect(),
    }
}

/// Committed bytes by region kind, keyed by the kind's label (the report's order).
pub fn labelled(m: &BTreeMap<RegionKind, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.label().to_string(), *v)).collect()
}

/// The committed heap and anonymous mappings now, exact: the level the daemon's
/// committed trend follows.
pub fn committed_anon(t: &Target) -> f64 {
    let now = t.ledger.committed_by_kind();
    [RegionKind::Heap, RegionKind::Anon]
        .iter()
        .map(|kind| now.get(kind).copied().unwrap_or(0) as f64)
        .sum()
}

/// Exact net growth of the heap and anonymous mappings since the window began, from
/// the ledger's totals by kind.
fn committed_growth(t: &Target) -> f64 {
    let before = t
        .committed_at_start
        .clone()
        .unwrap_or_else(|| labelled(t.ledger.seeded_by_kind()));
    let before: f64 = [RegionKind::Heap, RegionKind::Anon]
        .iter()
        .map(|kind| before.get(kind.label()).copied().unwrap_or(0) as f64)
        .sum();
    (committed_anon(t) - before).max(0.0)
}

/// One process's memory over the window, with its verdict.
pub fn process(window: &MemoryWindow, t: &Target, stacks: &StackTable) -> ProcessMemory {
    let mut growth = Vec::new();
    let mut unsampled = 0.0;
    for g in t.ledger.window_growth() {
        match g.stack.and_then(|id| stacks.get(id)) {
            Some(stack) if g.bytes > 0.0 => growth.push(StackGrowth {
                kind: g.kind,
                frames: stack.names.clone(),
                bytes: g.bytes,
                objects: g.objects,
                locations: stack.locations.clone(),
            }),
            None => unsampled += g.bytes,
            _ => {}
        }
    }
    let allocations = (!t.allocators.is_empty()).then(|| allocation_view(window, t, stacks));
    let mapped: Vec<MappedStack<'_>> = growth
        .iter()
        .map(|g| MappedStack {
            kind: g.kind,
            frames: &g.frames,
            bytes: g.bytes,
        })
        .collect();
    let verdict = verdict::judge(&MemoryEvidence {
        allocator_probed: allocations.is_some(),
        live_growth: allocations.as_ref().map_or(0.0, |a| a.live_bytes),
        growth: allocations.as_ref().map_or_else(Default::default, |a| {
            let mut g =
                series::growth_evidence(a, window.trends.then_some(&t.series), |id| {
                    match id.and_then(|id| stacks.get(id)) {
                        Some(stack) => stack.names.clone(),
                        None => vec!["[stack not sampled]".to_string()],
                    }
                });
            g.committed_growth = committed_growth(t);
            if window.trends {
                g.committed_trend = Some(t.series.committed_trend(Point {
                    secs: a.followed_secs,
                    bytes: committed_anon(t),
                    sigma: 0.0,
                }));
            }
            g
        }),
        allocated: allocations.as_ref().map_or(0.0, |a| a.allocated_bytes),
        freed: allocations.as_ref().map_or(0.0, |a| a.freed_bytes),
        mapped,
        resident_before: t.rss_at_follow,
        resident_after: t.rss_after.filter(|_| !t.exited).map(|r| r.total),
        allocator: t.allocators.first().map(|a| a.family).or(t.allocator_seen),
        since_follow: window.since_follow,
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
        mapped_before: t
            .committed_at_start
            .clone()
            .unwrap_or_else(|| labelled(t.ledger.seeded_by_kind())),
        mapped_after: labelled(&t.ledger.committed_by_kind()),
        reserved_after: t.ledger.reserved_bytes(),
        rss_before: t.rss_before,
        rss_after: t.rss_after,
        growth,
        unsampled_live_bytes: unsampled.max(0.0).round() as u64,
        events: t.events,
        samples: t.samples,
        truncated_stacks: t.truncated,
        js_frames: t.js_frames.clone(),
        // The daemon adds its forecast: it alone has the levels across intervals.
        oom: None,
    }
}

/// Live allocations by stack: the whole window, with the age of their bytes, and its
/// two halves; the net growth since the process was first followed.
pub fn allocation_view(window: &MemoryWindow, t: &Target, stacks: &StackTable) -> AllocationView {
    let names = |id: Option<StackId>| -> Vec<String> {
        match id.and_then(|id| stacks.get(id)) {
            Some(stack) => stack.names.clone(),
            None => vec!["[stack not sampled]".to_string()],
        }
    };
    let to_rows = |m: BTreeMap<Option<StackId>, LiveGrowth>| {
        let mut rows: Vec<AllocGrowth> = m
            .into_iter()
            .map(|(id, g)| AllocGrowth {
                frames: names(id),
                bytes: g.bytes,
                objects: g.objects,
                variance: g.variance,
                by_age: g.by_age,
                oldest_secs: g.oldest_secs,
                freed: g.freed,
                stack: id,
                locations: locations::of_stack(stacks, id),
            })
            .collect();
        rows.sort_by(|a, b| b.bytes.total_cmp(&a.bytes).then(a.frames.cmp(&b.frames)));
        rows
    };
    let start = window.start_ns;
    let split = start + window.end_ns.saturating_sub(start) / 2;
    let growth = to_rows(t.allocs.growth_with_age(t.followed_ns, window.end_ns));
    let net = net::net_growth(&t.allocs, t.free_flow.as_ref(), t.heap_layout);
    AllocationView {
        net: net.ok(),
        net_missing: net.err(),
        followed_secs: window.end_ns.saturating_sub(t.followed_ns) as f64 / 1e9,
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
