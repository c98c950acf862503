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
use serde::Serialize;

use crate::units::human_bytes;

/// Growth below this is noise for a verdict.
pub const MIN_GROWTH_BYTES: f64 = 1024.0 * 1024.0;
/// Live growth at least this share of the heap growth makes a leak (smaller live growth
/// next to a growing heap is retention).
pub const LEAK_SHARE_OF_HEAP: f64 = 0.25;
/// How many stacks a verdict names.
pub const VERDICT_STACKS: usize = 3;

/// What the numbers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryVerdictKind {
    Leak,
    Retention,
    MappedGrowth,
    NoGrowth,
    /// The heap grew but the allocator probes were off: leak and retention look alike.
    HeapGrowthUnexplained,
}

impl MemoryVerdictKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Leak => "LEAK",
            Self::Retention => "ALLOCATOR RETENTION / FRAGMENTATION",
            Self::MappedGrowth => "MAPPED GROWTH (not through the allocator)",
            Self::NoGrowth => "NO GROWTH",
            Self::HeapGrowthUnexplained => "HEAP GROWTH (allocator probes off)",
        }
    }
}

/// A stack and the bytes it contributes to the verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedStack {
    /// Frame names, root first.
    pub frames: Vec<String>,
    pub bytes: f64,
}

/// One growing stack from the mapping ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedStack<'a> {
    /// Region kind label (`brk heap`, `anon mmap`, …).
    pub kind: &'a str,
    pub frames: &'a [String],
    pub bytes: f64,
}

/// The inputs of a verdict, already reduced to plain numbers and stacks.
#[derive(Clone, Debug, Default)]
pub struct MemoryEvidence<'a> {
    /// Whether the allocator probes ran for this process.
    pub allocator_probed: bool,
    /// Estimated live bytes allocated in the window and not freed, and by stack.
    pub live_growth: f64,
    pub live_stacks: Vec<NamedStack>,
    /// Estimated bytes allocated and freed in the window (sampled blocks).
    pub allocated: f64,
    pub freed: f64,
    /// Growing mapped stacks (ledger).
    pub mapped: Vec<MappedStack<'a>>,
    /// Resident bytes at the start and end of the window.
    pub resident_before: Option<u64>,
    pub resident_after: Option<u64>,
    /// Allocator family label, for advice.
    pub allocator: Option<String>,
    /// The numbers cover the time since the process was first followed rather than one
    /// window: the daemon keeps what is live across its intervals, since a slow leak
    /// shows over hours, not within one interval.
    pub since_follow: bool,
}

/// The verdict for one process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryVerdict {
    pub kind: MemoryVerdictKind,
    /// One line: the verdict and its main number.
    pub headline: String,
    /// The numbers it rests on.
    pub numbers: Numbers,
    /// The stacks it names (leaking, heap-extending, or mapping).
    pub stacks: Vec<NamedStack>,
    /// What usually helps, for retention.
    pub advice: Option<String>,
    /// Secondary findings, e.g. direct mapped growth next to a leak.
    pub also: Vec<String>,
}

/// The numbers behind a verdict, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Numbers {
    pub live_growth: Option<f64>,
    pub allocated: Option<f64>,
    pub freed: Option<f64>,
    /// brk heap plus anonymous mappings made by the allocator.
    pub heap_growth: f64,
    /// Anonymous mappings made outside the allocator.
    pub direct_mapped_growth: f64,
    pub resident_delta: Option<i64>,
    /// See `MemoryEvidence::since_follow`.
    pub since_follow: bool,
}

impl Numbers {
    /// The span the numbers cover, for sentences.
    pub fn span(&self) -> &'static str {
        if self.since_follow {
            "since the process was first followed"
        } else {
            "in the window"
        }
    }

    /// `live +32.0 MiB (allocated 40.0 MiB, freed 8.0 MiB) · heap +1.0 MiB · …`
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        match self.live_growth {
            Some(live) => parts.push(format!(
                "live allocations +{} (allocated {}, freed {} {})",
                human_bytes(live),
                human_bytes(self.allocated.unwrap_or(0.0)),
                human_bytes(self.freed.unwrap_or(0.0)),
                self.span()
            )),
            None => parts.push("live allocations: not measured".into()),
        }
        parts.push(format!("allocator heap +{}", human_bytes(self.heap_growth)));
        parts.push(format!(
            "direct mappings +{}",
            human_bytes(self.direct_mapped_growth)
        ));
        if let Some(d) = self.resident_delta {
            let sign = if d < 0 { "-" } else { "+" };
            parts.push(format!(
                "resident {sign}{}",
                human_bytes(d.unsigned_abs() as f64)
            ));
        }
        parts.join(" · ")
    }
}

/// Whether a frame belongs to an allocator's internals or entry points.
pub fn is_allocator_frame(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "free",
        "memalign",
        "aligned_alloc",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "sysmalloc",
        "sysmalloc_mmap",
        "new_heap",
        "alloc_new_heap",
        "grow_heap",
        "arena_get2",
        "tcache_init",
        "alloc_meta",
        "alloc_group",
        "alloc_slot",
        "expand_heap",
        "operator new",
        "operator new[]",
    ];
    let base = name.split('(').next().unwrap_or(name).trim();
    // glibc's internal aliases: __GI___libc_malloc is __libc_malloc.
    let base = base.strip_prefix("__GI_").unwrap_or(base);
    let stripped = base.trim_start_matches('_');
    NAMES.contains(&base)
        || NAMES.contains(&stripped)
        || base.starts_with("__libc_")
            && (base.contains("alloc") || base.contains("memalign") || base.ends_with("free"))
        || base.starts_with("_int_")
        || base.ends_with("morecore")
        || base.starts_with("__malloc_")
        || base.starts_with("je_")
        || base.starts_with("_rjem_")
        || base.starts_with("tcmalloc::")
        || base.starts_with("tc_")
        || base.starts_with("mi_")
        || base.starts_with("_mi_")
}

fn is_heap_stack(s: &MappedStack<'_>) -> bool {
    s.kind == "brk heap"
        || (s.kind == "anon mmap" && s.frames.iter().any(|f| is_allocator_frame(f)))
}

fn is_direct_stack(s: &MappedStack<'_>) -> bool {
    s.kind == "anon mmap" && !is_heap_stack(s)
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

/// The frame a headline names: the innermost frame of the application's own code, or,
/// when the stack has none (all runtime), the innermost that is not allocator or libc
/// plumbing.
pub fn culprit(frames: &[String]) -> &str {
    culprit_index(frames)
        .map(|i| frames[i].as_str())
        .unwrap_or("[unknown]")
}

/// Where [`culprit`] is in `frames`; None only for an empty stack.
fn culprit_index(frames: &[String]) -> Option<usize> {
    // Between a JS function and the allocator lie V8 stubs and labels whose names
    // follow no pattern (`construct_stub_create_deopt_addr`): when the application's
    // JavaScript is on the stack, its innermost frame is the answer.
    frames
        .iter()
        .rposition(|f| is_application_js(f))
        .or_else(|| {
            frames
                .iter()
                .rposition(|f| !is_plumbing(f) && !is_runtime_frame(f))
        })
        .or_else(|| frames.iter().rposition(|f| !is_plumbing(f)))
        .or(frames.len().checked_sub(1))
}

/// Allocator internals, system-call wrappers and unknown frames.
fn is_plumbing(frame: &str) -> bool {
    is_allocator_frame(frame)
        || frame.starts_with('[')
        || frame.contains("mmap")
        || frame.contains("brk")
}

/// Code of a language runtime or of process start-up rather than of the application:
/// V8 and Node internals (including Node's own JavaScript, `node:` modules), libuv,
/// Rust's standard library, thread and process entry points. A leak in a Node service
/// shows as `AllocateUninitialized` under `Buffer.alloc`; what the engineer needs named
/// is the JavaScript function that called it.
fn is_runtime_frame(frame: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "v8::",
        "node::",
        "Builtins_",
        "Builtin:",
        "Bytecode",
        "uv_",
        "uv__",
        "std::",
        "core::",
        "alloc::",
        "<alloc::",
        "<core::",
        "<std::",
        "__rust_",
        "__rdl_",
        "_start",
        "__libc_start",
        "start_thread",
        "clone",
    ];
    if is_js(frame) {
        return !is_application_js(frame);
    }
    PREFIXES.iter().any(|p| frame.starts_with(p))
}

/// A JavaScript frame, as V8 names it in its perf map.
fn is_js(frame: &str) -> bool {
    ["JS:", "Script:", "Eval:"]
        .iter()
        .any(|p| frame.starts_with(p))
}

/// A JavaScript frame from a perf map (`JS:*handle /app/server.js:40:3`) or from V8's
/// heap (`JS:handle /app/server.js:40`) that is not one of Node's own modules, nor one
/// of V8's builtins, which have no script (`JS:Uint8Array`).
fn is_application_js(frame: &str) -> bool {
    is_js(frame) && frame.contains(' ') && !frame.contains(" node:")
}

/// The culprit with its caller, e.g. `map_region (from leak_sessions)`: the innermost
/// frame of user code is often a shared helper that the growing and the churning paths
/// both go through, and its caller is what tells them apart. Runtime frames between
/// the two are skipped.
pub fn culprit_with_caller(frames: &[String]) -> String {
    let Some(at) = culprit_index(frames) else {
        return "[unknown]".to_string();
    };
    let name = &frames[at];
    let caller = frames[..at]
        .iter()
        .rev()
        .find(|f| !is_runtime_frame(f) && !f.starts_with('['))
        .filter(|f| !is_process_root(f));
    match caller {
        Some(caller) => format!("{name} (from {caller})"),
        None => name.to_string(),
    }
}

/// A flamegraph root such as `node (4242)`, not a function.
fn is_process_root(frame: &str) -> bool {
    frame
        .strip_suffix(')')
        .and_then(|f| f.rsplit_once(" ("))
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The headline name of the first (largest) stack.
fn top_culprit(stacks: &[NamedStack]) -> String {
    stacks.first().map_or_else(
        || "[unknown]".to_string(),
        |s| culprit_with_caller(&s.frames),
    )
}

fn advice(allocator: Option<&str>) -> String {
    let glibc = "glibc: cap arenas with MALLOC_ARENA_MAX=2, return free memory with \
                 malloc_trim(0) after bursts, or lower M_MMAP_THRESHOLD so big blocks are \
                 mapped and unmapped";
    let other = "try another allocator (jemalloc or mimalloc, e.g. via LD_PRELOAD), and keep \
                 long-lived objects out of the churn (allocate them together, or from a pool)";
    match allocator {
        Some(a) if a.contains("glibc") => format!("{glibc}; or {other}"),
        _ => other.to_string(),
    }
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
    let numbers = Numbers {
        live_growth: e.allocator_probed.then_some(e.live_growth),
        allocated: e.allocator_probed.then_some(e.allocated),
        freed: e.allocator_probed.then_some(e.freed),
        heap_growth: heap,
        direct_mapped_growth: direct,
        resident_delta: match (e.resident_before, e.resident_after) {
            (Some(b), Some(a)) => Some(a as i64 - b as i64),
            _ => None,
        },
        since_follow: e.since_follow,
    };
    let heap_stacks = || {
        top(
            e.mapped
                .iter()
                .filter(|s| is_heap_stack(s))
                .map(|s| NamedStack {
                    frames: s.frames.to_vec(),
                    bytes: s.bytes,
                }),
            VERDICT_STACKS,
        )
    };
    let direct_stacks = || {
        top(
            e.mapped
                .iter()
                .filter(|s| is_direct_stack(s))
                .map(|s| NamedStack {
                    frames: s.frames.to_vec(),
                    bytes: s.bytes,
                }),
            VERDICT_STACKS,
        )
    };
    // An allocator whose internals are missing from mapping stacks (musl without CFI)
    // makes heap mappings look direct; live growth the heap does not explain is taken
    // out of the direct share before it counts as a finding of its own.
    let live = if e.allocator_probed {
        e.live_growth
    } else {
        0.0
    };
    let direct_unexplained = (direct - (live - heap).max(0.0)).max(0.0);
    let mut also = Vec::new();
    let verdict = |kind: MemoryVerdictKind,
                   headline: String,
                   stacks: Vec<NamedStack>,
                   advice: Option<String>,
                   also: Vec<String>| MemoryVerdict {
        kind,
        headline,
        numbers: numbers.clone(),
        stacks,
        advice,
        also,
    };
    if !e.allocator_probed {
        if heap >= MIN_GROWTH_BYTES && heap >= direct {
            let stacks = heap_stacks();
            let headline = format!(
                "{}: the heap grew +{}, most under {}; run with the allocator probes to tell a leak from retention",
                MemoryVerdictKind::HeapGrowthUnexplained.label(),
                human_bytes(heap),
                top_culprit(&stacks)
            );
            return verdict(
                MemoryVerdictKind::HeapGrowthUnexplained,
                headline,
                stacks,
                None,
                also,
            );
        }
        if direct >= MIN_GROWTH_BYTES {
            return mapped_verdict(direct, direct_stacks(), numbers.clone(), also);
        }
        return no_growth(numbers.clone());
    }
    if live >= MIN_GROWTH_BYTES && live >= LEAK_SHARE_OF_HEAP * heap {
        let stacks = top(e.live_stacks.iter().cloned(), VERDICT_STACKS);
        let share = stacks
            .first()
            .map(|s| s.bytes / live * 100.0)
            .unwrap_or(0.0);
        let headline = format!(
            "{}: live allocations grew +{} {} and were not freed; {:.0}% under {}",
            MemoryVerdictKind::Leak.label(),
            human_bytes(live),
            numbers.span(),
            share,
            top_culprit(&stacks)
        );
        // A residue next to the live growth is the allocator's own overhead.
        if direct_unexplained >= MIN_GROWTH_BYTES.max(LEAK_SHARE_OF_HEAP * live) {
            let d = direct_stacks();
            also.push(format!(
                "direct mappings also grew +{}, most under {}",
                human_bytes(direct_unexplained),
                top_culprit(&d)
            ));
        }
        return verdict(MemoryVerdictKind::Leak, headline, stacks, None, also);
    }
    if heap >= MIN_GROWTH_BYTES {
        let stacks = heap_stacks();
        let headline = format!(
            "{}: the allocator's heap grew +{} while live allocations grew only +{} ({:.0}%); \
             freed memory is kept by the allocator. Heap extended under {}",
            MemoryVerdictKind::Retention.label(),
            human_bytes(heap),
            human_bytes(live.max(0.0)),
            live.max(0.0) / heap * 100.0,
            top_culprit(&stacks)
        );
        if direct_unexplained >= MIN_GROWTH_BYTES {
            also.push(format!(
                "direct mappings also grew +{}",
                human_bytes(direct_unexplained)
            ));
        }
        return verdict(
            MemoryVerdictKind::Retention,
            headline,
            stacks,
            Some(advice(e.allocator.as_deref())),
            also,
        );
    }
    if direct_unexplained >= MIN_GROWTH_BYTES {
        return mapped_verdict(direct_unexplained, direct_stacks(), numbers.clone(), also);
    }
    no_growth(numbers.clone())
}

fn mapped_verdict(
    bytes: f64,
    stacks: Vec<NamedStack>,
    numbers: Numbers,
    also: Vec<String>,
) -> MemoryVerdict {
    let headline = format!(
        "{}: anonymous mappings made outside the allocator grew +{}, most under {} \
         (a JIT, a runtime's own heap, or mmap called directly)",
        MemoryVerdictKind::MappedGrowth.label(),
        human_bytes(bytes),
        top_culprit(&stacks)
    );
    MemoryVerdict {
        kind: MemoryVerdictKind::MappedGrowth,
        headline,
        numbers,
        stacks,
        advice: None,
        also,
    }
}

fn no_growth(numbers: Numbers) -> MemoryVerdict {
    MemoryVerdict {
        kind: MemoryVerdictKind::NoGrowth,
        headline: format!(
            "{}: nothing grew by {} or more {}",
            MemoryVerdictKind::NoGrowth.label(),
            human_bytes(MIN_GROWTH_BYTES),
            numbers.span()
        ),
        numbers,
        stacks: Vec::new(),
        advice: None,
        also: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn named(names: &[&str], bytes: f64) -> NamedStack {
        NamedStack {
            frames: frames(names),
            bytes,
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
            live_stacks: vec![
                named(&["main", "cache_insert_session"], 25.0 * MIB),
                named(&["main", "handle_request_scratch"], 1.0 * MIB),
            ],
            allocated: 300.0 * MIB,
            freed: 274.0 * MIB,
            mapped: vec![
                MappedStack {
                    kind: "brk heap",
                    frames: &churn,
                    bytes: 24.7 * MIB,
                },
                MappedStack {
                    kind: "brk heap",
                    frames: &leak,
                    bytes: 1.6 * MIB,
                },
            ],
            resident_before: Some(10 << 20),
            resident_after: Some(37 << 20),
            allocator: Some("glibc malloc".into()),
            since_follow: false,
        };
        let v = judge(&e);
        assert_eq!(v.kind, MemoryVerdictKind::Leak);
        assert_eq!(culprit(&v.stacks[0].frames), "cache_insert_session");
        assert!(
            v.headline.contains("96% under cache_insert_session"),
            "{}",
            v.headline
        );
        assert!(v.headline.contains("in the window"), "{}", v.headline);
        assert_eq!(v.numbers.resident_delta, Some(27 << 20));

        // A daemon's later interval says what span its numbers cover.
        let v = judge(&MemoryEvidence {
            since_follow: true,
            ..e
        });
        assert!(
            v.headline
                .contains("grew +26.0 MiB since the process was first followed"),
            "{}",
            v.headline
        );
        assert!(v
            .numbers
            .line()
            .contains("since the process was first followed"));
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
            live_stacks: vec![named(&["main", "load_batch"], 1.5 * MIB)],
            allocated: 320.0 * MIB,
            freed: 318.5 * MIB,
            mapped: vec![MappedStack {
                kind: "brk heap",
                frames: &fill,
                bytes: 64.0 * MIB,
            }],
            allocator: Some("glibc malloc".into()),
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
        assert!(v.advice.unwrap().contains("MALLOC_ARENA_MAX"));
    }

    /// Check mapped growth: direct mmap in a named function, nothing allocated.
    #[test]
    fn mapped_growth_names_the_mapping_function() {
        let jit = frames(&["main", "leak_sessions", "map_region", "__mmap64"]);
        let e = MemoryEvidence {
            allocator_probed: true,
            mapped: vec![MappedStack {
                kind: "anon mmap",
                frames: &jit,
                bytes: 100.0 * MIB,
            }],
            ..Default::default()
        };
        let v = judge(&e);
        assert_eq!(v.kind, MemoryVerdictKind::MappedGrowth);
        assert!(
            v.headline.contains("under map_region (from leak_sessions)"),
            "{}",
            v.headline
        );
    }

    /// Check that the caller is named only when there is one worth naming.
    #[test]
    fn culprit_caller_is_skipped_at_the_root_and_for_unknown_frames() {
        assert_eq!(
            culprit_with_caller(&frames(&["main", "grow", "malloc"])),
            "grow (from main)"
        );
        assert_eq!(culprit_with_caller(&frames(&["grow", "malloc"])), "grow");
        assert_eq!(culprit_with_caller(&frames(&["[unknown]", "grow"])), "grow");
        assert_eq!(culprit_with_caller(&frames(&["node (7)", "grow"])), "grow");
        assert_eq!(culprit_with_caller(&[]), "[unknown]");
        // Node: the application's JavaScript is named, not V8's allocator or Node's
        // own modules.
        let node = frames(&[
            "node (15017)",
            "_start",
            "node::Start(int, char**)",
            "uv_run",
            "Builtins_JSEntry",
            "JS:^processTimers node:internal/timers:504:25",
            "JS:*handleRequest /app/server.js:40:3",
            "JS:^cacheSession /app/cache.js:12:9",
            "JS:^alloc node:buffer:391:30",
            "Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit",
            "v8::internal::BackingStore::Allocate(v8::internal::Isolate*, unsigned long)",
            "node::NodeArrayBufferAllocator::AllocateUninitialized(unsigned long)",
            "malloc",
        ]);
        assert_eq!(
            culprit_with_caller(&node),
            "JS:^cacheSession /app/cache.js:12:9 (from JS:*handleRequest /app/server.js:40:3)"
        );
        // V8 stubs without a recognisable name between the JS function and malloc.
        let stub = frames(&[
            "JS:^rememberRequest /app/leak.js:20:25",
            "Builtins_InterpreterEntryTrampoline",
            "construct_stub_create_deopt_addr",
            "JS:^FastBuffer node:internal/buffer:960:14",
            "node::NodeArrayBufferAllocator::Allocate(unsigned long)",
        ]);
        assert_eq!(culprit(&stub), "JS:^rememberRequest /app/leak.js:20:25");
        // All runtime: the innermost non-allocator frame.
        assert_eq!(
            culprit(&frames(&[
                "_start",
                "node::Start()",
                "v8::Heap::Grow()",
                "mmap64"
            ])),
            "v8::Heap::Grow()"
        );
        // Rust: the application's function, not RawVec's growth.
        assert_eq!(
            culprit(&frames(&[
                "main",
                "app::cache::insert",
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                "__rust_alloc",
                "malloc"
            ])),
            "app::cache::insert"
        );
        assert_eq!(
            culprit_with_caller(&frames(&[
                "alloc_with(std::function<void* (unsigned long)>)",
                "grow"
            ])),
            "grow (from alloc_with(std::function<void* (unsigned long)>))"
        );
    }

    /// Check that an allocator whose frames are missing from mapping stacks (musl) is
    /// still a leak and not also reported as direct mapped growth.
    #[test]
    fn musl_leak_is_not_double_counted_as_mapped() {
        let musl = frames(&["main", "cache_insert_session"]);
        let e = MemoryEvidence {
            allocator_probed: true,
            live_growth: 30.0 * MIB,
            live_stacks: vec![named(&["main", "cache_insert_session"], 30.0 * MIB)],
            mapped: vec![MappedStack {
                kind: "anon mmap",
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
                kind: "brk heap",
                frames: &heap,
                bytes: 8.0 * MIB,
            }],
            ..Default::default()
        });
        assert_eq!(v.kind, MemoryVerdictKind::HeapGrowthUnexplained);
        assert!(v.numbers.line().contains("not measured"));
    }

    /// Check which frames count as allocator frames.
    #[test]
    fn allocator_frames() {
        for f in [
            "malloc",
            "__libc_malloc",
            "_int_malloc",
            "sysmalloc",
            "je_malloc",
            "__malloc_alloc_meta",
            "mi_malloc_aligned",
            "operator new(unsigned long)",
        ] {
            assert!(is_allocator_frame(f), "{f}");
        }
        for f in [
            "main",
            "cache_insert_session",
            "__mmap64",
            "leak_sessions",
            "malloc_wrapper_in_app",
        ] {
            assert!(!is_allocator_frame(f), "{f}");
        }
    }
}
