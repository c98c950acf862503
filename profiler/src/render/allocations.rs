//! The report's allocator-level parts: the memory verdict, the live allocations by
//! stack and resident memory by kind.
use std::fmt::Write as _;

use super::{report::TOP_STACKS, ProcessMemory};
use crate::{memory_verdict::culprit, units::human_bytes};

/// Frames shown per stack in the text report.
const FRAMES_SHOWN: usize = 12;

/// `verdict: …` with its numbers, stacks, advice and secondary findings.
pub fn verdict_text(out: &mut String, p: &ProcessMemory) {
    let Some(v) = &p.verdict else { return };
    let _ = writeln!(out, "   verdict: {}", v.headline);
    if let Some(confidence) = &v.confidence {
        let _ = writeln!(out, "     {confidence}");
    }
    // A daemon's later intervals count from the follow start: say so whatever the
    // verdict, since the headline of some verdicts has no span of its own.
    if v.numbers.since_follow {
        let _ = writeln!(
            out,
            "     numbers {}: {}",
            v.numbers.span(),
            v.numbers.line()
        );
    } else {
        let _ = writeln!(out, "     numbers: {}", v.numbers.line());
    }
    for s in &v.stacks {
        let _ = writeln!(
            out,
            "     {:>10}  {}",
            human_bytes(s.bytes),
            short_stack(&s.frames)
        );
    }
    if let Some(advice) = &v.advice {
        let _ = writeln!(out, "     what usually helps: {advice}");
    }
    for a in &v.also {
        let _ = writeln!(out, "     also: {a}");
    }
}

/// `main > handle > cache_insert_session` (the innermost frames, root first).
fn short_stack(frames: &[String]) -> String {
    let start = frames.len().saturating_sub(6);
    let mut s = frames[start..].join(" > ");
    if start > 0 {
        s.insert_str(0, "… > ");
    }
    if frames.is_empty() {
        s.push_str("[unknown]");
    }
    s
}

/// Whether this process's numbers count from its follow start (see `Numbers::span`).
fn since_follow(p: &ProcessMemory) -> bool {
    p.verdict.as_ref().is_some_and(|v| v.numbers.since_follow)
}

/// The span this process's numbers cover (see `Numbers::span`).
fn span(p: &ProcessMemory) -> &'static str {
    p.verdict
        .as_ref()
        .map_or("in the window", |v| v.numbers.span())
}

/// The live allocations section.
pub fn allocations_text(out: &mut String, p: &ProcessMemory) {
    let Some(a) = &p.allocations else { return };
    let _ = writeln!(out, "   allocator probes: {}", a.allocators.join(", "));
    let _ = writeln!(
        out,
        "   live allocations grown {}: {} in ~{:.0} blocks (allocated {}, freed {}; {} samples, {} sampled frees{})",
        span(p),
        human_bytes(a.live_bytes),
        a.live_objects,
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
        for f in g.frames.iter().rev().take(FRAMES_SHOWN) {
            let _ = writeln!(out, "         {f}");
        }
    }
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
        serde_json::to_value(&p.verdict).unwrap_or_default(),
    );
    if let Some(a) = &p.allocations {
        m.insert(
            "allocations".into(),
            serde_json::json!({
                "allocators": a.allocators,
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
