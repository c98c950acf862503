//! Root integration tests of allocator-level accounting and the memory verdict: a leak
//! hidden behind churn (glibc and musl), calloc and malloc each counted once (musl's
//! calloc calls malloc), allocator retention without a leak, growth by
//! direct mmap, and `profiler diff` between two captures.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

/// The memory section of `report.json` for the only process.
fn process_json(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["memory"]["processes"][0].clone()
}

/// Record `program` for `seconds` (memory only) and return the output directory.
fn record(name: &str, program: &Path, seconds: f64) -> (PathBuf, Workload) {
    record_with(name, program, seconds, &[])
}

/// [`record`] with more `record` arguments.
fn record_with(name: &str, program: &Path, seconds: f64, extra: &[&str]) -> (PathBuf, Workload) {
    let dir = scratch_dir(name);
    let workload = Workload::start(program, seconds, &dir);
    let pid = workload.pid.to_string();
    let mut args = vec![
        "--pid",
        &pid,
        "--memory",
        "--allocations",
        "--duration",
        "30s",
    ];
    args.extend_from_slice(extra);
    let rec = Recording::start(&args, &dir.join("out"));
    workload.release();
    let out = rec.wait();
    (out, workload)
}

fn show(what: &str, lines: &[(Vec<String>, u64)]) {
    eprintln!("{what}: {} lines", lines.len());
    for (frames, n) in lines {
        eprintln!("  {} {n}", frames.join(";"));
    }
}

/// `session_cache.c` built `-O2 -fomit-frame-pointer` with `cc`: the verdict must be a
/// leak with at least 80 % of the live growth under `cache_insert_session`.
fn assert_leak_named(name: &str, cc: &str) {
    require_root();
    let program = build_c(
        "session_cache.c",
        &format!("{name}_o2"),
        cc,
        &["-O2", "-g", "-fomit-frame-pointer"],
    );
    let (out, workload) = record(name, &program, 5.0);
    let leaked = workload.finish("leaked_bytes");
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    eprintln!("{report}");
    let p = process_json(&out);
    assert_eq!(p["verdict"]["kind"], "leak", "verdict: {}", p["verdict"]);

    let allocs = read_folded(&out.join("allocations.folded"));
    show("allocations.folded", &allocs);
    let total = sum_where(&allocs, |_| true);
    let leak = sum_where(&allocs, |f| has_frame(f, "cache_insert_session"));
    let share = leak as f64 / total as f64;
    eprintln!("live growth {total} B, {leak} B ({:.1} %) under cache_insert_session; program leaked {leaked} B", share * 100.0);
    assert!(
        share >= 0.8,
        "only {:.1} % under cache_insert_session",
        share * 100.0
    );
    // The estimate is unbiased: within 40 % of the truth at this sample count.
    let ratio = total as f64 / leaked as f64;
    assert!(
        (0.6..=1.4).contains(&ratio),
        "live growth {total} vs leaked {leaked}"
    );
    let top = &p["verdict"]["stacks"][0]["frames"];
    assert!(
        top.as_array()
            .unwrap()
            .iter()
            .any(|f| f == "cache_insert_session"),
        "top verdict stack {top}"
    );

    // What the mapping view says, for the note (glibc blames the churn path).
    let mapped = read_folded(&out.join("memory.folded"));
    let mapped_total = sum_where(&mapped, |_| true);
    let churn = sum_where(&mapped, |f| has_frame(f, "handle_request_scratch"));
    eprintln!(
        "mapping view: {mapped_total} B grown, {churn} B ({:.1} %) under handle_request_scratch",
        100.0 * churn as f64 / mapped_total.max(1) as f64
    );
    for file in ["allocations.svg", "memory-diff.svg", "memory.svg"] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("cache_insert_session"),
            "{file}"
        );
    }
}

/// Check the glibc leak-behind-churn case: the allocator view names the leak.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn glibc_leak_behind_churn_is_named() {
    assert_leak_named("alloc_glibc", "gcc");
}

/// Check the same program linked against musl.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn musl_leak_behind_churn_is_named() {
    assert_leak_named("alloc_musl", "musl-gcc");
}

/// `calloc_leak.c` built `-O2` with `cc`: the bytes leaked through `calloc` and through
/// `malloc` must each be counted once, under their own function (musl's calloc calls
/// its malloc, a nested allocator call).
fn assert_calloc_and_malloc_named(name: &str, cc: &str) {
    require_root();
    let program = build_c("calloc_leak.c", &format!("{name}_o2"), cc, &["-O2", "-g"]);
    // About 200 samples per function: the sampler's spread stays well inside 30 %.
    let (out, workload) = record_with(name, &program, 4.0, &["--alloc-sample-bytes", "32KiB"]);
    let each = workload.finish("leaked_bytes_each");
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    eprintln!("{report}");
    let allocs = read_folded(&out.join("allocations.folded"));
    show("allocations.folded", &allocs);
    let by_calloc = sum_where(&allocs, |f| has_frame(f, "leak_with_calloc"));
    let by_malloc = sum_where(&allocs, |f| has_frame(f, "leak_with_malloc"));
    let total = sum_where(&allocs, |_| true);
    eprintln!(
        "{cc}: leak_with_calloc {by_calloc} B, leak_with_malloc {by_malloc} B, total {total} B; each leaked {each} B"
    );
    for (what, bytes) in [
        ("leak_with_calloc", by_calloc),
        ("leak_with_malloc", by_malloc),
    ] {
        let ratio = bytes as f64 / each as f64;
        assert!(
            (0.7..=1.3).contains(&ratio),
            "{what}: {bytes} B counted for {each} B leaked"
        );
    }
    assert!(
        (by_calloc + by_malloc) as f64 >= 0.9 * total as f64,
        "only {} of {total} B under the two leaking functions",
        by_calloc + by_malloc
    );
    let p = process_json(&out);
    assert_eq!(p["verdict"]["kind"], "leak", "verdict: {}", p["verdict"]);
    let headline = p["verdict"]["headline"].as_str().unwrap();
    assert!(
        headline.contains("leak_with_calloc") || headline.contains("leak_with_malloc"),
        "{headline}"
    );
}

/// Check that glibc's calloc and malloc leaks are each counted once, by function.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn glibc_calloc_and_malloc_counted_once() {
    assert_calloc_and_malloc_named("calloc_glibc", "gcc");
}

/// Check the same on musl, whose calloc calls malloc: the nested call is counted once
/// and the stack continues from calloc into `leak_with_calloc`.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn musl_calloc_and_malloc_counted_once() {
    assert_calloc_and_malloc_named("calloc_musl", "musl-gcc");
}

/// Check that freeing all but every 64th block, round after round, is judged allocator
/// retention, with the heap-extending stack named and no leak.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn fragmentation_is_retention_not_leak() {
    require_root();
    let program = build_c("frag_retention.c", "frag_retention", "gcc", &["-O2", "-g"]);
    let (out, workload) = record("alloc_frag", &program, 3.0);
    let live = workload.finish("live_bytes");
    eprintln!(
        "{}",
        std::fs::read_to_string(out.join("report.txt")).unwrap()
    );
    let p = process_json(&out);
    let v = &p["verdict"];
    assert_eq!(v["kind"], "retention", "verdict: {v}");
    let heap = v["numbers"]["heap_growth"].as_f64().unwrap();
    let grown = v["numbers"]["live_growth"].as_f64().unwrap();
    eprintln!("heap +{heap} B, live +{grown} B, program holds {live} B");
    assert!(heap >= 32.0 * 1048576.0, "heap grew only {heap}");
    assert!(grown < 0.25 * heap);
    let named = v["stacks"][0]["frames"].as_array().unwrap();
    assert!(named.iter().any(|f| f == "load_batch"), "stack {named:?}");
    assert!(v["advice"].as_str().unwrap().contains("malloc_trim"));
}

/// Check that growth through direct anonymous mmap is judged mapped growth, naming the
/// function that maps.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn direct_mmap_is_mapped_growth() {
    require_root();
    let program = build_c("mmap_leak.c", "mmap_leak_alloc", "gcc", FP_FLAGS);
    let (out, workload) = record("alloc_mmap", &program, 3.0);
    workload.finish("leaked_bytes");
    let p = process_json(&out);
    let v = &p["verdict"];
    assert_eq!(v["kind"], "mapped_growth", "verdict: {v}");
    let named = v["stacks"][0]["frames"].as_array().unwrap();
    assert!(
        named.iter().any(|f| f == "leak_sessions"),
        "stack {named:?}"
    );
    // The headline names the caller of the shared helper both paths map through.
    let headline = v["headline"].as_str().unwrap();
    assert!(
        headline.contains("map_region (from leak_sessions)"),
        "{headline}"
    );
    assert!(
        p["resident"]["updates"].as_u64().unwrap() > 0,
        "no rss_stat updates: {p}"
    );
}

/// Check `profiler diff` on two real captures: the SVG shows the leaking stack.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn diff_of_two_captures() {
    require_root();
    let program = build_c("mmap_leak.c", "mmap_leak_diff", "gcc", FP_FLAGS);
    let (a, w) = record("diff_a", &program, 1.0);
    w.finish("leaked_bytes");
    let (b, w) = record("diff_b", &program, 2.0);
    w.finish("leaked_bytes");
    let svg = b.join("diff.svg");
    let status = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["diff", "--view", "memory"])
        .arg(&a)
        .arg(&b)
        .arg("--out")
        .arg(&svg)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("leak_sessions"));
}
