//! Verdicts in words: the one place that turns the memory and stall verdicts (plain
//! facts from [`crate::analyze`]) into the sentences of reports, subtitles, snapshots
//! and `report.json`'s `headline`.
use std::fmt::Write as _;

pub use super::stall_verdict::{
    evidence_clause, evidence_short, requests_line, stall_line, stall_short,
};

use crate::{
    allocator::AllocatorFamily,
    analyze::memory::verdict::MIN_GROWTH_BYTES,
    model::{AlsoGrew, MemoryVerdict, MemoryVerdictKind, Numbers, ProcessMemory, RetentionAdvice},
    render::growth::signed,
    units::human_bytes,
};

/// The verdict's name as the headline starts with it.
pub fn memory_label(kind: MemoryVerdictKind) -> &'static str {
    match kind {
        MemoryVerdictKind::Leak => "LEAK",
        MemoryVerdictKind::Retention => "ALLOCATOR RETENTION / FRAGMENTATION",
        MemoryVerdictKind::MappedGrowth => "MAPPED GROWTH (not through the allocator)",
        MemoryVerdictKind::NoGrowth => "NO GROWTH",
        MemoryVerdictKind::HeapGrowthUnexplained => "HEAP GROWTH (allocator probes off)",
        MemoryVerdictKind::GrowthStopped => "GROWTH THAT STOPPED",
        MemoryVerdictKind::Periodic => "PERIODIC GROWTH AND RELEASE",
        MemoryVerdictKind::Growing => "GROWING (not judged yet)",
    }
}

/// The span the numbers cover, for sentences.
pub fn span(n: &Numbers) -> &'static str {
    if n.since_follow {
        "since the process was first followed"
    } else {
        "in the window"
    }
}

/// `live +32.0 MiB (allocated 40.0 MiB, freed 8.0 MiB) · heap +1.0 MiB · …`
pub fn numbers_line(n: &Numbers) -> String {
    let mut parts = Vec::new();
    match n.live_growth {
        Some(live) => parts.push(format!(
            "live allocations +{} (allocated {}, freed {} {})",
            human_bytes(live),
            human_bytes(n.allocated.unwrap_or(0.0)),
            human_bytes(n.freed.unwrap_or(0.0)),
            span(n)
        )),
        None => parts.push("live allocations: not measured".into()),
    }
    if let (Some(net), Some(sigma)) = (n.net_growth, n.net_sigma) {
        parts.push(format!(
            "net live {} ± {} (2σ; frees of older blocks counted)",
            signed(net),
            human_bytes(2.0 * sigma)
        ));
    }
    parts.push(format!("allocator heap +{}", human_bytes(n.heap_growth)));
    if let (Some(net), Some(sigma)) = (n.net_growth, n.net_sigma) {
        // What the heap grew by beyond the live bytes: kept by the allocator (negative:
        // live bytes grew into memory the allocator already held).
        parts.push(format!(
            "allocator-retained {} ± {}",
            signed(n.heap_growth - net),
            human_bytes(2.0 * sigma)
        ));
    }
    parts.push(format!(
        "direct mappings +{}",
        human_bytes(n.direct_mapped_growth)
    ));
    if let Some(d) = n.resident_delta {
        let sign = if d < 0 { "-" } else { "+" };
        parts.push(format!(
            "resident {sign}{}",
            human_bytes(d.unsigned_abs() as f64)
        ));
    }
    parts.join(" · ")
}

/// One line: the verdict and its main number.
pub fn headline(v: &MemoryVerdict) -> String {
    let label = memory_label(v.kind);
    match v.kind {
        MemoryVerdictKind::Leak => format!(
            "{label}: live allocations grew +{} {} and were not freed; {:.0}% under {}",
            human_bytes(v.growth),
            span(&v.numbers),
            v.top_share_pct,
            v.culprit
        ),
        MemoryVerdictKind::Retention => {
            let live = v
                .numbers
                .net_growth
                .or(v.numbers.live_growth)
                .unwrap_or(0.0)
                .max(0.0);
            format!(
                "{label}: the allocator's heap grew +{} while live allocations grew only +{} ({:.0}%); \
                 freed memory is kept by the allocator. Heap extended under {}",
                human_bytes(v.growth),
                human_bytes(live),
                live / v.growth * 100.0,
                v.culprit
            )
        }
        MemoryVerdictKind::MappedGrowth if v.heap_unseen => format!(
            "MAPPED GROWTH (allocator probes off): anonymous mappings grew +{}, most under {}; \
             musl's malloc leaves no frames in these stacks, so its heap shows here beside \
             direct mappings: run with the allocator probes (--allocations) to tell them \
             apart and a leak from retention",
            human_bytes(v.growth),
            v.culprit
        ),
        MemoryVerdictKind::MappedGrowth => format!(
            "{label}: anonymous mappings made outside the allocator grew +{}, most under {} \
             (a JIT, a runtime's own heap, or mmap called directly)",
            human_bytes(v.growth),
            v.culprit
        ),
        MemoryVerdictKind::HeapGrowthUnexplained => format!(
            "{label}: the heap grew +{}, most under {}; run with the allocator probes to tell a leak from retention",
            human_bytes(v.growth),
            v.culprit
        ),
        MemoryVerdictKind::NoGrowth => match v.numbers.churn_per_sec {
            Some(churn) if churn >= MIN_GROWTH_BYTES / 60.0 => format!(
                "{label}: allocations and frees balance (churn of ~{}/s); nothing grew by {} or more {}",
                human_bytes(churn),
                human_bytes(MIN_GROWTH_BYTES),
                span(&v.numbers)
            ),
            _ => format!(
                "{label}: nothing grew by {} or more {}",
                human_bytes(MIN_GROWTH_BYTES),
                span(&v.numbers)
            ),
        },
        MemoryVerdictKind::GrowthStopped => format!(
            "{label}: live allocations grew +{} and then stayed level under {} \
             (a warm-up or a cache filling up, not a leak)",
            human_bytes(v.growth),
            v.culprit
        ),
        MemoryVerdictKind::Periodic => format!(
            "{label}: live allocations under {} rise by ~{} and are released again \
             (batches, not a leak)",
            v.culprit,
            human_bytes(v.growth)
        ),
        MemoryVerdictKind::Growing => format!(
            "{label}: {} of live allocations {}, most under {}; a leak is called only on \
             steady growth over the daemon's intervals",
            human_bytes(v.growth),
            span(&v.numbers),
            v.culprit
        ),
    }
}

/// A short form for a flamegraph subtitle (one line shared with other processes):
/// the verdict's name, its growth and where.
pub fn memory_short(v: &MemoryVerdict) -> String {
    let growth = human_bytes(v.growth);
    match v.kind {
        MemoryVerdictKind::Leak => format!("LEAK +{growth} under {}", v.culprit),
        MemoryVerdictKind::Retention => format!(
            "ALLOCATOR RETENTION: heap +{growth}, live +{}",
            human_bytes(
                v.numbers
                    .net_growth
                    .or(v.numbers.live_growth)
                    .unwrap_or(0.0)
                    .max(0.0)
            )
        ),
        MemoryVerdictKind::MappedGrowth => format!("MAPPED GROWTH +{growth} under {}", v.culprit),
        MemoryVerdictKind::NoGrowth => "NO GROWTH".into(),
        MemoryVerdictKind::HeapGrowthUnexplained => {
            format!(
                "HEAP GROWTH +{growth} under {} (allocator probes off)",
                v.culprit
            )
        }
        MemoryVerdictKind::GrowthStopped => {
            format!("GROWTH THAT STOPPED +{growth} under {}", v.culprit)
        }
        MemoryVerdictKind::Periodic => format!("PERIODIC GROWTH AND RELEASE under {}", v.culprit),
        MemoryVerdictKind::Growing => {
            format!("GROWING +{growth} under {} (not judged yet)", v.culprit)
        }
    }
}

/// What usually helps against retention, for this allocator.
pub fn advice(a: &RetentionAdvice) -> String {
    let glibc = "glibc: cap arenas with MALLOC_ARENA_MAX=2, return free memory with \
                 malloc_trim(0) after bursts, or lower M_MMAP_THRESHOLD so big blocks are \
                 mapped and unmapped";
    let other = "try another allocator (jemalloc or mimalloc, e.g. via LD_PRELOAD), and keep \
                 long-lived objects out of the churn (allocate them together, or from a pool)";
    match a.allocator {
        Some(AllocatorFamily::Glibc) => format!("{glibc}; or {other}"),
        _ => other.to_string(),
    }
}

/// `direct mappings also grew +X[, most under F]`.
pub fn also(a: &AlsoGrew) -> String {
    match &a.culprit {
        Some(c) => format!(
            "direct mappings also grew +{}, most under {c}",
            human_bytes(a.bytes)
        ),
        None => format!("direct mappings also grew +{}", human_bytes(a.bytes)),
    }
}

/// `verdict: …` with its numbers, stacks, advice and secondary findings.
pub fn memory_text(out: &mut String, p: &ProcessMemory) {
    let Some(v) = &p.verdict else { return };
    let _ = writeln!(out, "   verdict: {}", headline(v));
    if let Some(a) = &v.assessment {
        let _ = writeln!(out, "     {}", super::growth::confidence_line(a));
    }
    // A daemon's later intervals count from the follow start: say so whatever the
    // verdict, since the headline of some verdicts has no span of its own.
    if v.numbers.since_follow {
        let _ = writeln!(
            out,
            "     numbers {}: {}",
            span(&v.numbers),
            numbers_line(&v.numbers)
        );
    } else {
        let _ = writeln!(out, "     numbers: {}", numbers_line(&v.numbers));
    }
    if let Some(split) = runtime_split(p, &v.numbers) {
        let _ = writeln!(out, "     {split}");
    }
    for s in &v.stacks {
        let _ = writeln!(
            out,
            "     {:>10}  {}",
            human_bytes(s.bytes),
            short_stack(&s.frames)
        );
    }
    if let Some(a) = &v.advice {
        let _ = writeln!(out, "     what usually helps: {}", advice(a));
    }
    for a in &v.also {
        let _ = writeln!(out, "     also: {}", also(a));
    }
}

/// In a process that runs V8 (Node.js), which of its memories moved: the V8 heap and
/// code (mappings V8 makes itself, outside the allocator), native live allocations
/// (the net growth) and what the allocator keeps (its heap less the net growth). None
/// for other processes, or without a net growth.
pub fn runtime_split(p: &ProcessMemory, n: &Numbers) -> Option<String> {
    let runtime = |frames: &[String]| {
        frames
            .iter()
            .any(|f| f.starts_with("v8::") || f.starts_with("node::"))
    };
    let v8 = p.growth.iter().any(|g| runtime(&g.frames))
        || p.allocations
            .as_ref()
            .is_some_and(|a| a.growth.iter().any(|g| runtime(&g.frames)));
    let (net, sigma) = (n.net_growth?, n.net_sigma?);
    v8.then(|| {
        format!(
            "split {}: V8 heap and code (its own mappings) {} · native live allocations {} ± {} \
             · allocator-retained {} ± {}",
            span(n),
            signed(n.direct_mapped_growth),
            signed(net),
            human_bytes(2.0 * sigma),
            signed(n.heap_growth - net),
            human_bytes(2.0 * sigma)
        )
    })
}

/// The verdict as `report.json` carries it: its facts and its words.
pub fn memory_json(v: &MemoryVerdict) -> serde_json::Value {
    serde_json::json!({
        "kind": v.kind,
        "headline": headline(v),
        "confidence": v.assessment.as_ref().map(super::growth::confidence_line),
        "numbers": v.numbers,
        "stacks": v.stacks,
        "advice": v.advice.as_ref().map(advice),
        "also": v.also.iter().map(also).collect::<Vec<_>>(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Evidence, NamedStack, StallVerdict};

    const MIB: f64 = 1024.0 * 1024.0;

    /// Check that the evidence clauses carry the numbers and addresses.
    #[test]
    fn words_stall_evidence() {
        let e = Evidence::QueuedConnections {
            listener: "127.0.0.1:8080".into(),
            queued: 2,
        };
        assert_eq!(
            evidence_clause(&e),
            "2 connection(s) queued unaccepted on 127.0.0.1:8080"
        );
        assert_eq!(evidence_short(&e), "2 queued on 127.0.0.1:8080");
        let e = Evidence::LockCycle { tids: vec![10, 20] };
        assert_eq!(
            evidence_clause(&e),
            "lock cycle (deadlock): TID 10 waits for 20 waits for 10"
        );
    }

    fn leak(since_follow: bool) -> MemoryVerdict {
        MemoryVerdict {
            kind: MemoryVerdictKind::Leak,
            growth: 26.0 * MIB,
            top_share_pct: 96.2,
            culprit: "cache_insert_session (from main)".into(),
            numbers: Numbers {
                live_growth: Some(26.0 * MIB),
                allocated: Some(300.0 * MIB),
                freed: Some(274.0 * MIB),
                since_follow,
                ..Default::default()
            },
            stacks: vec![NamedStack {
                frames: vec!["main".into(), "cache_insert_session".into()],
                bytes: 25.0 * MIB,
            }],
            advice: None,
            also: Vec::new(),
            assessment: None,
            heap_unseen: false,
        }
    }

    /// Check that a leak's headline names its share, culprit and span, and that a
    /// daemon's later interval says its numbers count since the follow start.
    #[test]
    fn leak_headline_names_share_culprit_and_span() {
        let h = headline(&leak(false));
        assert!(
            h.starts_with("LEAK: live allocations grew +26.0 MiB in the window"),
            "{h}"
        );
        assert!(
            h.contains("96% under cache_insert_session (from main)"),
            "{h}"
        );
        let v = leak(true);
        assert!(
            headline(&v).contains("grew +26.0 MiB since the process was first followed"),
            "{}",
            headline(&v)
        );
        assert!(numbers_line(&v.numbers).contains("since the process was first followed"));
    }

    /// Check that mapped growth which may hold musl's heap (probes off) says so and
    /// points to the allocator probes, and that other mapped growth keeps its words.
    #[test]
    fn mapped_growth_with_the_heap_unseen_points_to_the_probes() {
        let mapped = MemoryVerdict {
            kind: MemoryVerdictKind::MappedGrowth,
            advice: None,
            ..leak(false)
        };
        let plain = headline(&mapped);
        assert!(
            plain.starts_with("MAPPED GROWTH (not through the allocator): "),
            "{plain}"
        );
        let unseen = headline(&MemoryVerdict {
            heap_unseen: true,
            ..mapped
        });
        assert!(
            unseen.starts_with("MAPPED GROWTH (allocator probes off): "),
            "{unseen}"
        );
        assert!(
            unseen.contains("musl's malloc leaves no frames"),
            "{unseen}"
        );
        assert!(unseen.contains("--allocations"), "{unseen}");
        assert!(!unseen.contains("not through the allocator"), "{unseen}");
    }

    /// Check that a subtitle's short verdict names the kind, the growth and the culprit.
    #[test]
    fn memory_short_form() {
        assert_eq!(
            memory_short(&leak(false)),
            "LEAK +26.0 MiB under cache_insert_session (from main)"
        );
        let quiet = MemoryVerdict {
            kind: MemoryVerdictKind::NoGrowth,
            ..leak(false)
        };
        assert_eq!(memory_short(&quiet), "NO GROWTH");
    }

    /// Check the words of the quiet cases and of retention advice: unmeasured live
    /// growth says so, glibc gets its tunables, another allocator does not.
    #[test]
    fn advice_and_unmeasured_numbers() {
        assert!(numbers_line(&Numbers::default()).contains("not measured"));
        let glibc = advice(&RetentionAdvice {
            allocator: Some(AllocatorFamily::Glibc),
        });
        assert!(glibc.contains("MALLOC_ARENA_MAX"), "{glibc}");
        let musl = advice(&RetentionAdvice {
            allocator: Some(AllocatorFamily::Musl),
        });
        assert!(!musl.contains("MALLOC_ARENA_MAX"), "{musl}");
        assert_eq!(
            also(&AlsoGrew {
                bytes: 2.0 * MIB,
                culprit: None
            }),
            "direct mappings also grew +2.0 MiB"
        );
    }

    /// Check the requests verdict's sentence: count, unit, route, port, ages, what was
    /// answered meanwhile and the silent pool; and its short form for a subtitle.
    #[test]
    fn requests_line_names_route_health_and_pool() {
        use crate::model::{PeerPool, RequestStall};
        let r = RequestStall {
            port: 50051,
            routes: vec!["/orders.Orders/CreateOrder".into()],
            unanswered: 214,
            unit: "gRPC streams".into(),
            oldest_ns: 43_000_000_000,
            none_answered_ns: 40_000_000_000,
            while_answered: Some((":8080".into(), 38)),
            pool: Some(PeerPool {
                peer: "127.0.0.1:5432".into(),
                protocol: None,
                open: 10,
                silent: 10,
                in_transaction: 0,
                in_transaction_ns: 0,
                in_transaction_least_ns: 0,
                begun_under: Vec::new(),
            }),
            window_ns: 2_000_000_000,
        };
        let v = StallVerdict::Requests(r.clone());
        assert_eq!(
            stall_line(&v),
            "STALLED (requests): 214 gRPC streams (/orders.Orders/CreateOrder) on :50051 unanswered, oldest 43.0 s, none answered in 40.0 s (while :8080 answered 38); pool to 127.0.0.1:5432: 10/10 connections idle for the whole 2.0 s window — the pool is exhausted by requests that hold a connection and wait for another"
        );
        assert_eq!(
            stall_short(&v),
            "STALLED (requests): 214 gRPC streams on :50051 unanswered, oldest 43 s; pool to 127.0.0.1:5432: 10/10 idle"
        );
        assert!(v.is_stalled());
        let seen = RequestStall {
            pool: Some(PeerPool {
                in_transaction: 10,
                in_transaction_ns: 43_000_000_000,
                in_transaction_least_ns: 42_000_000_000,
                silent: 0,
                protocol: Some("postgres".into()),
                begun_under: vec![crate::model::TxOrigin {
                    function: "JS:insertOrder /srv/app/orders.js:63".into(),
                    connections: 10,
                }],
                ..r.pool.clone().unwrap()
            }),
            while_answered: None,
            ..r
        };
        assert!(
            stall_short(&StallVerdict::Requests(seen.clone()))
                .ends_with("; pool to 127.0.0.1:5432: 10/10 idle in transaction"),
            "{}",
            stall_short(&StallVerdict::Requests(seen.clone()))
        );
        let line = stall_line(&StallVerdict::Requests(seen.clone()));
        assert!(
            line.contains("unanswered, oldest 43.0 s, none answered in 40.0 s; pool to 127.0.0.1:5432 (postgres): 10/10 connections idle in transaction for 43.0 s, each begun under insertOrder (orders.js:63) — "),
            "{line}"
        );
        // Two functions: each with its count.
        let mut pool = seen.pool.clone().unwrap();
        pool.begun_under = vec![
            crate::model::TxOrigin {
                function: "JS:insertOrder /srv/app/orders.js:63".into(),
                connections: 6,
            },
            crate::model::TxOrigin {
                function: "refund".into(),
                connections: 3,
            },
        ];
        let line = stall_line(&StallVerdict::Requests(RequestStall {
            pool: Some(pool),
            ..seen
        }));
        assert!(
            line.contains("10/10 connections idle in transaction for 43.0 s, begun under insertOrder (orders.js:63) (6), refund (3) — "),
            "{line}"
        );
    }

    /// Check the stall verdict's report line and its short form for a subtitle.
    #[test]
    fn stall_line_and_short_form() {
        let v = StallVerdict::Stalled {
            stuck: 4,
            threads: 5,
            on: "futex 0xabc".into(),
            frame_below_lock: Some("acquire_nested".into()),
            blocked_at_least_ns: 12_000_000_000,
            evidence: vec![Evidence::PileUp {
                on: "futex 0xabc".into(),
                arrived: 4,
                over_ns: 3_000_000_000,
            }],
        };
        assert_eq!(
            stall_line(&v),
            "STALLED: 4 of 5 threads blocked for at least 12.0 s on futex 0xabc with no wake, \
             waiting in acquire_nested; unmet demand: 4 threads began waiting on futex 0xabc \
             over 3.0 s while watched, none woken"
        );
        assert_eq!(
            stall_short(&v),
            "STALLED: 4/5 threads on futex 0xabc in acquire_nested (4 waiters piled up)"
        );
        let idle = StallVerdict::Idle {
            threads: 9,
            detail: "8 threads waiting for work in worker_wait_for_job on futex 0x10 with no \
                     wake; no unmet demand: no listening socket"
                .into(),
        };
        assert_eq!(
            stall_short(&idle),
            "idle: 8 threads waiting for work in worker_wait_for_job"
        );
        let epoll = StallVerdict::Idle {
            threads: 1,
            detail: "idle in epoll_wait, 3 sockets".into(),
        };
        assert_eq!(stall_short(&epoll), "idle in epoll_wait");
    }
}
