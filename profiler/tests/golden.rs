//! Golden outputs of the renderers: folded text, the flamegraph SVG and the text
//! report, from hand-made report models. Re-bless with `BLESS=1 cargo test --test golden`.
use std::path::PathBuf;

use profiler::{
    allocator::AllocatorFamily,
    analyze::memory::verdict::{judge, MappedStack, MemoryEvidence},
    ledger::RegionKind,
    model::{
        AllocGrowth, AllocationView, BlockedStack, Counters, Evidence, MemoryReport,
        ProbedAllocator, ProcessMemory, ProcessWaits, ResidentView, StackGrowth, StallVerdict,
        WaitGroup, WaitReport,
    },
    procfs::Rss,
    render::{folded, report, svg, waits},
};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(name)
}

/// Compare `actual` with the golden file, or rewrite it when BLESS is set.
fn check(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from its golden file; if the change is intended, re-bless with BLESS=1"
    );
}

fn frames(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn memory_report() -> MemoryReport {
    let mut before = std::collections::BTreeMap::new();
    before.insert("anon mmap".to_string(), 1 << 20);
    before.insert("brk heap".to_string(), 132 << 10);
    let mut after = before.clone();
    after.insert("anon mmap".to_string(), 41 << 20);
    let mut report = MemoryReport {
        target: "pid 4242".into(),
        window_secs: 5.0,
        since_follow_secs: None,
        sample_bytes: 256 << 10,
        alloc_sample_bytes: 256 << 10,
        counters: Counters {
            seen: 1200,
            sampled: 480,
            alloc_calls: 90_000,
            ..Default::default()
        },
        processes: vec![ProcessMemory {
            pid: 4242,
            comm: "session-svc".into(),
            mapped_before: before,
            mapped_after: after,
            rss_before: Some(Rss {
                total: 3 << 20,
                anon: 1 << 20,
                file: 2 << 20,
                shmem: 0,
            }),
            rss_after: Some(Rss {
                total: 43 << 20,
                anon: 41 << 20,
                file: 2 << 20,
                shmem: 0,
            }),
            growth: vec![
                StackGrowth {
                    kind: RegionKind::Anon,
                    frames: frames(&["_start", "main", "leak_sessions", "map_region", "__mmap64"]),
                    bytes: (39 << 20) as f64,
                    ..Default::default()
                },
                StackGrowth {
                    kind: RegionKind::Anon,
                    frames: frames(&["_start", "main", "scratch_work", "map_region", "__mmap64"]),
                    bytes: (1 << 20) as f64,
                    ..Default::default()
                },
            ],
            events: 1200,
            samples: 480,
            allocations: Some(allocation_view()),
            resident: Some(ResidentView {
                anon: 41 << 20,
                file: 2 << 20,
                peak_anon: 41 << 20,
                peak_file: 2 << 20,
                peak_total: 43 << 20,
                updates: 10_240,
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    // The verdict comes from the real judge, so its text is part of the golden report.
    let p = &mut report.processes[0];
    let mapped: Vec<_> = p
        .growth
        .iter()
        .map(|g| MappedStack {
            kind: g.kind,
            frames: &g.frames,
            bytes: g.bytes,
        })
        .collect();
    let a = p.allocations.as_ref().unwrap();
    let verdict = judge(&MemoryEvidence {
        allocator_probed: true,
        live_growth: a.live_bytes,
        allocated: a.allocated_bytes,
        freed: a.freed_bytes,
        mapped,
        resident_before: p.rss_before.map(|r| r.total),
        resident_after: p.rss_after.map(|r| r.total),
        allocator: Some(AllocatorFamily::Glibc),
        since_follow: false,
        growth: profiler::analyze::memory::series::growth_evidence(a, None, |_| Vec::new()),
    });
    p.verdict = Some(verdict);
    report
}

fn allocation_view() -> AllocationView {
    const MIB: f64 = 1048576.0;
    // Samples of 256 KiB: a leak spread over the 5 s and never freed, scratch all
    // younger than 0.3 s and freed as fast as it is allocated.
    let leak = AllocGrowth {
        frames: frames(&["_start", "main", "cache_insert_session"]),
        bytes: 30.0 * MIB,
        objects: 960.0,
        variance: 30.0 * MIB * 262144.0,
        by_age: [3.75 * MIB, 3.75 * MIB, 7.5 * MIB, 15.0 * MIB],
        oldest_secs: 4.9,
        ..Default::default()
    };
    let scratch = AllocGrowth {
        frames: frames(&["_start", "main", "handle_request_scratch"]),
        bytes: MIB,
        objects: 16.0,
        variance: MIB * 262144.0,
        by_age: [MIB, 0.0, 0.0, 0.0],
        oldest_secs: 0.3,
        freed: 268.0 * MIB,
        ..Default::default()
    };
    AllocationView {
        allocators: vec![ProbedAllocator {
            family: AllocatorFamily::Glibc,
            path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            entry_points: 6,
        }],
        live_bytes: (31 << 20) as f64,
        live_objects: 976.0,
        allocated_bytes: (300 << 20) as f64,
        freed_bytes: (269 << 20) as f64,
        samples: 1200,
        frees: 1076,
        replaced: 0,
        growth: vec![leak.clone(), scratch.clone()],
        first_half: vec![AllocGrowth {
            bytes: (12 << 20) as f64,
            ..leak.clone()
        }],
        second_half: vec![
            AllocGrowth {
                bytes: (18 << 20) as f64,
                ..leak
            },
            scratch,
        ],
        split_secs: 2.5,
        followed_secs: 5.0,
        net: Some(profiler::allocator::net::NetGrowth {
            bytes: 29.5 * MIB,
            sigma: 4.0 * MIB,
            allocated: 300.0 * MIB,
            freed: 270.5 * MIB,
            unseen_frees: 70_000,
            unseen_freed: 200.0 * MIB,
            unseen_freed_sampled: 201.0 * MIB,
            unseen_freed_sampled_sigma: 5.0 * MIB,
            ..Default::default()
        }),
        net_missing: None,
    }
}

/// Check the live-allocation folded lines and the differential lines of the halves.
#[test]
fn allocations_folded_matches_golden() {
    let report = memory_report();
    let whole = folded::allocation_lines(&report, folded::Half::Whole);
    check("allocations.folded", &(whole.join("\n") + "\n"));
    let diff = profiler::render::diff::differential_lines(
        &folded::allocation_lines(&report, folded::Half::First),
        &folded::allocation_lines(&report, folded::Half::Second),
    )
    .unwrap();
    check("memory-diff.folded", &(diff.join("\n") + "\n"));
}

fn wait_report() -> WaitReport {
    let stack = frames(&[
        "clone3",
        "start_thread",
        "worker",
        "handle_request",
        "acquire_nested",
        "pool_acquire",
        "___pthread_cond_wait",
    ]);
    WaitReport {
        threshold_ns: 1_000_000,
        stall_threshold_ns: 10_000_000_000,
        short_waits: 17,
        processes: vec![ProcessWaits {
            pid: 77,
            comm: "pool".into(),
            identity: Default::default(),
            threads: 5,
            verdict: StallVerdict::Stalled {
                stuck: 4,
                threads: 5,
                on: "futex 0x5000".into(),
                frame_below_lock: Some("pool_acquire".into()),
                blocked_at_least_ns: 12_000_000_000,
                evidence: vec![Evidence::QueuedConnections {
                    listener: "127.0.0.1:8080".into(),
                    queued: 2,
                }],
            },
            completed: vec![BlockedStack {
                kind: "socket 127.0.0.1:5432".into(),
                on: "recvfrom on socket 127.0.0.1:5432".into(),
                frames: frames(&["main", "run_query", "recvfrom"]),
                ns: 2_500_000,
                count: 2,
                ..Default::default()
            }],
            in_flight: vec![WaitGroup {
                on: "futex 0x5000".into(),
                kind: "futex".into(),
                tids: vec![78, 79, 80, 81],
                blocked_at_least_ns: 12_000_000_000,
                wakes: Some(0),
                stuck: true,
                frame_below_lock: Some("pool_acquire".into()),
                stack,
                locations: Vec::new(),
            }],
            futexes: vec![(0x5000, 4, 0)],
            observed_ns: 5_000_000_000,
            async_census: None,
            requests: Vec::new(),
            peers: Vec::new(),
        }],
    }
}

/// Check the folded memory growth lines against the golden file.
#[test]
fn memory_folded_matches_golden() {
    let lines = folded::memory_lines(&memory_report());
    check("memory.folded", &(lines.join("\n") + "\n"));
}

/// Check that the memory flamegraph SVG is deterministic and matches the golden file.
#[test]
fn memory_svg_matches_golden() {
    let lines = folded::memory_lines(&memory_report());
    let render = || {
        let mut out = Vec::new();
        svg::flamegraph(
            &lines,
            "Memory growth: session-svc (4242)",
            "golden",
            "bytes",
            svg::Flavor::Memory,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    let first = render();
    assert_eq!(first, render(), "SVG output is not deterministic");
    check("memory.svg", &first);
}

/// Check the memory report text against the golden file.
#[test]
fn memory_report_text_matches_golden() {
    check("report-memory.txt", &report::text(&memory_report()));
}

/// Check the blocked-on folded lines (completed and in-flight waits) and the wait report.
#[test]
fn waits_match_golden() {
    let r = wait_report();
    check("waits.folded", &(waits::folded_lines(&r).join("\n") + "\n"));
    check("report-waits.txt", &waits::text(&r));
}
