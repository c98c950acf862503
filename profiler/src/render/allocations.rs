//! The report's allocator-level parts: the live allocations by stack and resident
//! memory by kind.
use std::fmt::Write as _;

use super::{verdict, TOP_STACKS};
use crate::{
    analyze::frames::culprit,
    model::{ProbedAllocator, ProcessMemory},
    units::human_bytes,
};

/// Frames shown per stack in the text report.
const FRAMES_SHOWN: usize = 12;

/// `glibc malloc (/usr/lib/x86_64-linux-gnu/libc.so.6; 6 entry points)`.
fn allocator_label(a: &ProbedAllocator) -> String {
    format!(
        "{} ({}; {} entry points)",
        a.family.label(),
        a.path.display(),
        a.entry_points
    )
}

/// Whether this process's numbers count from its follow start (see `Numbers::span`).
fn since_follow(p: &ProcessMemory) -> bool {
    p.verdict.as_ref().is_some_and(|v| v.numbers.since_follow)
}

/// The span this process's numbers cover (see `Numbers::span`).
fn span(p: &ProcessMemory) -> &'static str {
    p.verdict
        .as_ref()
        .map_or("in the window", |v| verdict::span(&v.numbers))
}

/// The live allocations section.
pub fn allocations_text(out: &mut String, p: &ProcessMemory) {
    let Some(a) = &p.allocations else { return };
    let probed: Vec<String> = a.allocators.iter().map(allocator_label).collect();
    let _ = writeln!(out, "   allocator probes: {}", probed.join(", "));
    let _ = writeln!(
        out,
        "   live allocations grown {}: {} in ~{:.0} blocks (allocated {}, freed {}; {} samples, {} sampled frees{})",
        span(p),
        human_bytes(a.live_bytes),
        a.live_objects + 0.0, // + 0.0: an estimate of zero prints as 0, not -0
        human_bytes(a.allocated_bytes),
        human_bytes(a.freed_bytes),
        a.samples,
        a.frees,
        if a.replaced > 0 {
            format!(", {} frees missed", a.replaced)
        } else {
            String::new()
        }
    );
    for (i, g) in a.growth.iter().take(TOP_STACKS).enumerate() {
        let pct = if a.live_bytes > 0.0 {
            100.0 * g.bytes / a.live_bytes
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "   {:>2}. {:>10} {:>5.1}%  ~{:.0} blocks, in {}",
            i + 1,
            human_bytes(g.bytes),
            pct,
            g.objects,
            culprit(&g.frames)
        );
        if g.bytes > 0.0 && a.followed_secs > 0.0 {
            let _ = writeln!(out, "         {}", ages_text(g, a.followed_secs));
        }
        for f in g.frames.iter().rev().take(FRAMES_SHOWN) {
            let _ = writeln!(out, "         {f}");
        }
    }
}

/// `by age: <0.8 s 60% · 0.8-1.5 s 40% · 1.5-3.0 s 0% · >3.0 s 0%; oldest 1.4 s`: a
/// leak's blocks spread over the whole span, a cache's stay younger than its turnover.
fn ages_text(g: &crate::model::AllocGrowth, span_secs: f64) -> String {
    let edges = crate::allocator::live::AGE_BUCKETS.map(|e| e * span_secs);
    let pct = |b: f64| 100.0 * b / g.bytes;
    format!(
        "by age: <{:.1} s {:.0}% · {:.1}-{:.1} s {:.0}% · {:.1}-{:.1} s {:.0}% · >{:.1} s {:.0}%; oldest {:.1} s",
        edges[0],
        pct(g.by_age[0]),
        edges[0],
        edges[1],
        pct(g.by_age[1]),
        edges[1],
        edges[2],
        pct(g.by_age[2]),
        edges[2],
        pct(g.by_age[3]),
        g.oldest_secs
    )
}

/// Resident memory by kind from `kmem:rss_stat`.
pub fn resident_text(out: &mut String, p: &ProcessMemory) {
    let Some(r) = &p.resident else { return };
    let _ = writeln!(
        out,
        "   resident {} (kmem:rss_stat, {} updates): anon {} (peak {}), file {} (peak {}), shmem {} (peak {}), swapped {}; peak total {}",
        if since_follow(p) {
            span(p)
        } else {
            "during the window"
        },
        r.updates,
        human_bytes(r.anon as f64),
        human_bytes(r.peak_anon as f64),
        human_bytes(r.file as f64),
        human_bytes(r.peak_file as f64),
        human_bytes(r.shmem as f64),
        human_bytes(r.peak_shmem as f64),
        human_bytes(r.swap as f64),
        human_bytes(r.peak_total as f64),
    );
}

/// The same parts as JSON values, for `report.json`.
pub fn json_fields(p: &ProcessMemory) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "verdict".into(),
        p.verdict
            .as_ref()
            .map_or(serde_json::Value::Null, verdict::memory_json),
    );
    if let Some(a) = &p.allocations {
        m.insert(
            "allocations".into(),
            serde_json::json!({
                "allocators": a.allocators.iter().map(allocator_label).collect::<Vec<_>>(),
                "live_bytes": a.live_bytes.round() as u64,
                "live_objects": a.live_objects.round() as u64,
                "allocated_bytes": a.allocated_bytes.round() as u64,
                "freed_bytes": a.freed_bytes.round() as u64,
                "samples": a.samples,
                "frees": a.frees,
                "frees_missed": a.replaced,
                "net": a.net,
                "net_missing": a.net_missing,
                "followed_secs": a.followed_secs,
                "top_stacks": a.growth.iter().take(TOP_STACKS).map(|g| serde_json::json!({
                    "bytes": g.bytes.round() as u64,
                    "objects": g.objects.round() as u64,
                    "percent": if a.live_bytes > 0.0 { 100.0 * g.bytes / a.live_bytes } else { 0.0 },
                    "frames": g.frames,
                    "bytes_by_age": g.by_age,
                    "oldest_secs": g.oldest_secs,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    if let Some(r) = &p.resident {
        m.insert(
            "resident".into(),
            serde_json::to_value(r).unwrap_or_default(),
        );
    }
    m
}
