//! The memory verdict: leak, allocator retention / fragmentation, mapped growth, or no
//! growth, judged per process from three views of the same window.
//!
//! - live allocations: sampled blocks allocated in the window and not freed (allocator
//!   probes) — what the program holds;
//! - mapped memory by region kind (ledger): what the process took from the kernel,
//!   split into the allocator's heap (brk, and anonymous mappings made from inside the
//!   allocator) and direct mappings (a JIT, a runtime's own heap, a hand-made mmap);
//! - resident memory (`/proc` and `kmem:rss_stat`).
//!
//! A leak is live blocks growing. Retention is the heap growing while live blocks do
//! not keep up: the allocator holds freed memory it cannot give back (fragmentation,
//! per-thread arenas, a high-water mark). Mapped growth is memory that never went
//! through the allocator. Every verdict carries the numbers it rests on.
use super::growth::{self, Growth, GrowthEvidence};
use crate::{
    allocator::AllocatorFamily,
    analyze::frames::{culprit_with_caller, is_allocator_frame},
    ledger::RegionKind,
    model::{AlsoGrew, MemoryVerdict, MemoryVerdictKind, NamedStack, Numbers, RetentionAdvice},
};

pub use super::growth::MIN_GROWTH_BYTES;
/// Live growth at least this share of the heap growth makes a leak (smaller live growth
/// next to a growing heap is retention).
pub const LEAK_SHARE_OF_HEAP: f64 = 0.25;
/// How many stacks a verdict names.
pub const VERDICT_STACKS: usize = 3;

/// One growing stack from the mapping ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedStack<'a> {
    pub kind: RegionKind,
    pub frames: &'a [String],
    pub bytes: f64,
}

/// The inputs of a verdict, already reduced to plain numbers and stacks.
#[derive(Clone, Debug, Default)]
pub struct MemoryEvidence<'a> {
    /// Whether the allocator probes ran for this process.
    pub allocator_probed: bool,
    /// Estimated live bytes allocated in the window and not freed (by stack, with
    /// their age and trend: `growth`).
    pub live_growth: f64,
    /// Estimated bytes allocated and freed in the window (sampled blocks).
    pub allocated: f64,
    pub freed: f64,
    /// Growing mapped stacks (ledger).
    pub mapped: Vec<MappedStack<'a>>,
    /// Resident bytes at the start and end of the window.
    pub resident_before: Option<u64>,
    pub resident_after: Option<u64>,
    /// The allocator the process uses, for advice.
    pub allocator: Option<AllocatorFamily>,
    /// The numbers cover the time since the process was first followed rather than one
    /// window: the daemon keeps what is live across its intervals, since a slow leak
    /// shows over hours, not within one interval.
    pub since_follow: bool,
    /// Live allocations by stack with their age and trend, and the net growth: what
    /// decides LEAK (see [`growth`]). Its heap, direct and resident numbers are filled
    /// in by [`judge`].
    pub growth: GrowthEvidence,
}

fn is_heap_stack(s: &MappedStack<'_>) -> bool {
    s.kind == RegionKind::Heap
        || (s.kind == RegionKind::Anon && s.frames.iter().any(|f| is_allocator_frame(f)))
}

fn is_direct_stack(s: &MappedStack<'_>) -> bool {
    s.kind == RegionKind::Anon && !is_heap_stack(s)
}

/// Merge identical stacks and keep the largest `n`.
fn top(stacks: impl Iterator<Item = NamedStack>, n: usize) -> Vec<NamedStack> {
    let mut merged: Vec<NamedStack> = Vec::new();
    for s in stacks {
        match merged.iter_mut().find(|m| m.frames == s.frames) {
            Some(m) => m.bytes += s.bytes,
            None => merged.push(s),
        }
    }
    merged.sort_by(|a, b| b.bytes.total_cmp(&a.bytes).then(a.frames.cmp(&b.frames)));
    merged.truncate(n);
    merged
}

/// The headline name of the first (largest) stack.
fn top_culprit(stacks: &[NamedStack]) -> String {
    stacks.first().map_or_else(
        || "[unknown]".to_string(),
        |s| culprit_with_caller(&s.frames),
    )
}

/// Judge one process.
pub fn judge(e: &MemoryEvidence<'_>) -> MemoryVerdict {
    let heap: f64 = e
        .mapped
        .iter()
        .filter(|s| is_heap_stack(s))
        .map(|s| s.bytes)
        .sum();
    let direct: f64 = e
        .mapped
        .iter()
        .filter(|s| is_direct_stack(s))
        .map(|s| s.bytes)
        .sum();
    let resident_delta = match (e.resident_before, e.resident_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    let probed = e.allocator_probed;
    let evidence = GrowthEvidence {
        heap_growth: heap,
        direct_growth: direct,
        resident_delta,
        ..e.growth.clone()
    };
    let numbers = Numbers {
        live_growth: probed.then_some(e.live_growth),
        allocated: probed.then_some(e.allocated),
        freed: probed.then_some(e.freed),
        heap_growth: heap,
        direct_mapped_growth: direct,
        resident_delta,
        since_follow: e.since_follow,
        net_growth: evidence.net.filter(|_| probed).map(|n| n.bytes),
        net_sigma: evidence.net.filter(|_| probed).map(|n| n.sigma),
        churn_per_sec: evidence.churn_per_sec().filter(|_| probed),
    };
    let mapped_stacks = |keep: fn(&MappedStack<'_>) -> bool| {
        top(
            e.mapped.iter().filter(|s| keep(s)).map(|s| NamedStack {
                frames: s.frames.to_vec(),
                bytes: s.bytes,
            }),
            VERDICT_STACKS,
        )
    };
    let heap_stacks = || mapped_stacks(is_heap_stack);
    let direct_stacks = || mapped_stacks(is_direct_stack);
    let mut also = Vec::new();
    let verdict = |kind: MemoryVerdictKind,
                   growth: f64,
                   stacks: Vec<NamedStack>,
                   advice: Option<RetentionAdvice>,
                   also: Vec<AlsoGrew>| MemoryVerdict {
        kind,
        growth,
        top_share_pct: 0.0,
        culprit: top_culprit(&stacks),
        numbers: numbers.clone(),
        stacks,
        advice,
        also,
        assessment: None,
        heap_unseen: false,
    };
    if !probed {
        if heap >= MIN_GROWTH_BYTES && heap >= direct {
            return verdict(
                MemoryVerdictKind::HeapGrowthUnexplained,
                heap,
                heap_stacks(),
                None,
                also,
            );
        }
        if direct >= MIN_GROWTH_BYTES {
            let mut v = verdict(
                MemoryVerdictKind::MappedGrowth,
                direct,
                direct_stacks(),
                None,
                also,
            );
            // musl's malloc has no CFI: its frames are not in mapping stacks, so its heap
            // looks direct here, and only the allocator probes can tell them apart.
            v.heap_unseen = e.allocator == Some(AllocatorFamily::Musl);
            return v;
        }
        return verdict(MemoryVerdictKind::NoGrowth, 0.0, Vec::new(), None, also);
    }
    let assessment = growth::assess(&evidence);
    let named = |indices: &[usize]| -> Vec<NamedStack> {
        top(
            indices.iter().map(|&i| NamedStack {
                frames: evidence.stacks[i].frames.clone(),
                bytes: evidence.stacks[i].bytes,
            }),
            VERDICT_STACKS,
        )
    };
    // Live growth the verdict stands by: a leak's, else the net growth (never below 0).
    let live = match &assessment.growth {
        Growth::Leak { bytes, .. } => *bytes,
        _ => evidence.net.map_or(0.0, |n| n.bytes.max(0.0)),
    };
    // An allocator whose internals are missing from mapping stacks (musl without CFI)
    // makes heap mappings look direct; live growth the heap does not explain is taken
    // out of the direct share before it counts as a finding of its own.
    let direct_unexplained = (direct - (live - heap).max(0.0)).max(0.0);
    let assessed = |v: MemoryVerdict| MemoryVerdict {
        assessment: Some(assessment.clone()),
        ..v
    };
    match &assessment.growth {
        Growth::Leak { stacks, bytes } => {
            let stacks = named(stacks);
            let share = stacks
                .first()
                .map(|s| s.bytes / bytes * 100.0)
                .unwrap_or(0.0);
            // A residue next to the live growth is the allocator's own overhead.
            if direct_unexplained >= MIN_GROWTH_BYTES.max(LEAK_SHARE_OF_HEAP * live) {
                also.push(AlsoGrew {
                    bytes: direct_unexplained,
                    culprit: Some(top_culprit(&direct_stacks())),
                });
            }
            return assessed(MemoryVerdict {
                top_share_pct: share,
                ..verdict(MemoryVerdictKind::Leak, *bytes, stacks, None, also)
            });
        }
        Growth::Stopped { stack, grew } => {
            return assessed(verdict(
                MemoryVerdictKind::GrowthStopped,
                *grew,
                named(&[*stack]),
                None,
                also,
            ));
        }
        Growth::Periodic {
            stack, amplitude, ..
        } => {
            return assessed(verdict(
                MemoryVerdictKind::Periodic,
                *amplitude,
                named(&[*stack]),
                None,
                also,
            ));
        }
        Growth::Pending { bytes } => {
            let all: Vec<usize> = (0..evidence.stacks.len()).collect();
            return assessed(verdict(
                MemoryVerdictKind::Growing,
                *bytes,
                named(&all),
                None,
                also,
            ));
        }
        Growth::Balanced => {}
    }
    // Retention: the heap grew beyond what live allocations explain. With a net
    // estimate that is the heap less the net growth, beyond the net's error.
    let retained = match evidence.net {
        Some(n) => heap - n.bytes.max(0.0) - growth::Z * n.sigma,
        None => heap - live,
    };
    if heap >= MIN_GROWTH_BYTES && retained >= MIN_GROWTH_BYTES {
        if direct_unexplained >= MIN_GROWTH_BYTES {
            also.push(AlsoGrew {
                bytes: direct_unexplained,
                culprit: None,
            });
        }
        return assessed(verdict(
            MemoryVerdictKind::Retention,
            heap,
            heap_stacks(),
            Some(RetentionAdvice {
                allocator: e.allocator,
            }),
            also,
        ));
    }
    if direct_unexplained >= MIN_GROWTH_BYTES {
        return assessed(verdict(
            MemoryVerdictKind::MappedGrowth,
            direct_unexplained,
            direct_stacks(),
            None,
            also,
        ));
    }
    assessed(verdict(
        MemoryVerdictKind::NoGrowth,
        0.0,
        Vec::new(),
        None,
        also,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{frames::culprit, memory::growth::StackEvidence};

    const MIB: f64 = 1024.0 * 1024.0;

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Live allocations by stack: frames, bytes, share older than half the span.
    fn growth(stacks: &[(&[&str], f64, f64)]) -> GrowthEvidence {
        GrowthEvidence {
            stacks: stacks
                .iter()
                .map(|(f, bytes, old)| StackEvidence {
                    frames: frames(f),
                    bytes: *bytes,
                    variance: bytes * 262144.0,
                    old_bytes: old * bytes,
                    oldest_secs: 5.0,
                    freed: if *old > 0.0 { 0.0 } else { 3.0 * bytes },
                    trend: None,
                })
                .collect(),
            span_secs: 5.0,
            ..Default::default()
        }
    }

    /// Check the glibc leak-with-churn case: the brk view blames the churn path, the
    /// live allocations name the leak, and the verdict is a leak.
    #[test]
    fn leak_beats_misleading_brk_blame() {
        let churn = frames(&[
            "main",
            "handle_request_scratch",
            "malloc",
            "_int_malloc",
            "sysmalloc",
            "__brk",
        ]);
        let leak = frames(&[
            "main",
            "cache_insert_session",
            "malloc",
            "_int_malloc",
            "sysmalloc",
            "__brk",
        ]);
        let e = MemoryEvidence {
            allocator_probed: true,
            live_growth: 26.0 * MIB,
            growth: growth(&[
                (&["main", "cache_insert_session"], 25.0 * MIB, 0.5),
                (&["main", "handle_request_scratch"], 1.0 * MIB, 0.0),
            ]),
            allocated: 300.0 * MIB,
            freed: 274.0 * MIB,
            mapped: vec![
                MappedStack {
                    kind: RegionKind::Heap,
                    frames: &churn,
                    bytes: 24.7 * MIB,
                },
                MappedStack {
                    kind: RegionKind::Heap,
                    frames: &leak,
                    bytes: 1.6 * MIB,
                },
            ],
            resident_before: Some(10 << 20),
            resident_after: Some(37 << 20),
            allocator: Some(AllocatorFamily::Glibc),
            since_follow: false,
        };
        let v = judge(&e);
        assert_eq!(v.kind, MemoryVerdictKind::Leak);
        assert_eq!(culprit(&v.stacks[0].frames), "cache_insert_session");
        // Only the stack whose blocks persist is the leak's.
        assert_eq!(v.top_share_pct.round(), 100.0);
        assert_eq!(v.culprit, "cache_insert_session (from main)");
        assert_eq!(v.growth, 25.0 * MIB);
        assert!(!v.numbers.since_follow);
        assert_eq!(v.numbers.resident_delta, Some(27 << 20));

        // A daemon's later interval says what span its numbers cover.
        let v = judge(&MemoryEvidence {
            since_follow: true,
            ..e
        });
        assert!(v.numbers.since_follow);
        assert_eq!(v.growth, 25.0 * MIB);
    }

    /// Check retention: the heap grows, live blocks stay small, no leak stack named.
    #[test]
    fn retention_when_live_stays_flat() {
        let fill = frames(&[
            "main",
            "load_batch",
            "malloc",
            "_int_malloc",
            "sysmalloc",
            "__brk",
        ]);
        let e = MemoryEvidence {
            allocator_probed: true,
            live_growth: 1.5 * MIB,
            growth: growth(&[(&["main", "load_batch"], 1.5 * MIB, 0.0)]),
            allocated: 320.0 * MIB,
            freed: 318.5 * MIB,
            mapped: vec![MappedStack {
                kind: RegionKind::Heap,
                frames: &fill,
                bytes: 64.0 * MIB,
            }],
            allocator: Some(AllocatorFamily::Glibc),
            ..Default::default()
        };
        let v = judge(&e);
        assert_eq!(v.kind, MemoryVerdictKind::Retention);
        assert_eq!(culprit(&v.stacks[0].frames), "load_batch");
        let glibc = frames(&[
            "main",
            "load_batch",
            "__GI___libc_malloc",
            "_int_malloc",
            "sysmalloc",
            "__glibc_morecore",
            "__GI___sbrk",
            "__brk",
        ]);
        assert_eq!(culprit(&glibc), "load_batch");
        assert_eq!(
            v.advice,
            Some(RetentionAdvice {
                allocator: Some(AllocatorFamily::Glibc)
            })
        );
    }

    /// Check mapped growth: direct mmap in a named function, nothing allocated.
    #[test]
    fn mapped_growth_names_the_mapping_function() {
        let jit = frames(&["main", "leak_sessions", "map_region", "__mmap64"]);
        let e = MemoryEvidence {
            allocator_probed: true,
            mapped: vec![MappedStack {
                kind: RegionKind::Anon,
                frames: &jit,
                bytes: 100.0 * MIB,
            }],
            ..Default::default()
        };
        let v = judge(&e);
        assert_eq!(v.kind, MemoryVerdictKind::MappedGrowth);
        assert_eq!(v.culprit, "map_region (from leak_sessions)");
        assert_eq!(v.growth, 100.0 * MIB);
    }

    /// Check that without the allocator probes, direct growth in a musl process says its
    /// heap may be part of it, and in a glibc process does not.
    #[test]
    fn unprobed_mapped_growth_under_musl_names_the_allocator() {
        let stack = frames(&["main", "JS:rememberSession /app/leak.js:4", "mmap"]);
        let evidence = |allocator| MemoryEvidence {
            allocator_probed: false,
            allocator,
            mapped: vec![MappedStack {
                kind: RegionKind::Anon,
                frames: &stack,
                bytes: 100.0 * MIB,
            }],
            ..Default::default()
        };
        let musl = judge(&evidence(Some(AllocatorFamily::Musl)));
        assert_eq!(musl.kind, MemoryVerdictKind::MappedGrowth);
        assert!(musl.heap_unseen);
        assert_eq!(musl.advice, None);
        let glibc = judge(&evidence(Some(AllocatorFamily::Glibc)));
        assert_eq!(glibc.kind, MemoryVerdictKind::MappedGrowth);
        assert!(!glibc.heap_unseen);
    }

    /// Check that an allocator whose frames are missing from mapping stacks (musl) is
    /// still a leak and not also reported as direct mapped growth.
    #[test]
    fn musl_leak_is_not_double_counted_as_mapped() {
        let musl = frames(&["main", "cache_insert_session"]);
        let e = MemoryEvidence {
            allocator_probed: true,
            live_growth: 30.0 * MIB,
            growth: growth(&[(&["main", "cache_insert_session"], 30.0 * MIB, 0.5)]),
            mapped: vec![MappedStack {
                kind: RegionKind::Anon,
                frames: &musl,
                bytes: 31.0 * MIB,
            }],
            ..Default::default()
        };
        let v = judge(&e);
        assert_eq!(v.kind, MemoryVerdictKind::Leak);
        assert!(v.also.is_empty(), "{:?}", v.also);
    }

    /// Check the quiet cases: no growth, and heap growth without allocator probes.
    #[test]
    fn no_growth_and_unexplained_heap() {
        let v = judge(&MemoryEvidence {
            allocator_probed: true,
            live_growth: 0.2 * MIB,
            ..Default::default()
        });
        assert_eq!(v.kind, MemoryVerdictKind::NoGrowth);
        let heap = frames(&["main", "grow", "sbrk"]);
        let v = judge(&MemoryEvidence {
            mapped: vec![MappedStack {
                kind: RegionKind::Heap,
                frames: &heap,
                bytes: 8.0 * MIB,
            }],
            ..Default::default()
        });
        assert_eq!(v.kind, MemoryVerdictKind::HeapGrowthUnexplained);
        assert_eq!(v.numbers.live_growth, None);
    }
}
