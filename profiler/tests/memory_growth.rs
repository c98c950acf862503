//! Root integration tests of memory growth attribution (issue: foundation and memory
//! growth). They load the real eBPF programs and profile C programs the repo builds.
mod common;

use common::*;

/// Check that mmap'd memory leaked in `leak_sessions` is attributed to that function,
/// that the map/unmap churn of `scratch_work` nets to about zero, and that the total
/// matches the program's own count of leaked bytes within 2 %.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn mmap_leak_is_attributed_to_leak_sessions() {
    require_root();
    let dir = scratch_dir("mmap_leak");
    let program = build_c("mmap_leak.c", "mmap_leak_fp", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 4.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(&["--pid", &pid, "--duration", "8s"], &dir.join("out"));
    workload.release();
    let leaked = workload.finish("leaked_bytes");
    let out = rec.wait();

    let lines = read_folded(&out.join("memory.folded"));
    let anon: Vec<_> = lines
        .iter()
        .filter(|(f, _)| f.get(1).map(String::as_str) == Some("anon mmap"))
        .cloned()
        .collect();
    let total = sum_where(&anon, |_| true);
    let leak = sum_where(&anon, |f| has_frame(f, "leak_sessions"));
    let scratch = sum_where(&anon, |f| has_frame(f, "scratch_work"));
    eprintln!("leaked {leaked}, anon growth {total}, under leak_sessions {leak}, under scratch_work {scratch}");
    assert!(leaked > 0);
    assert!(
        leak as f64 >= 0.9 * total as f64,
        "leak_sessions holds {leak} of {total}"
    );
    assert!(
        (scratch as f64) < 0.01 * leaked as f64,
        "scratch_work holds {scratch}"
    );
    let error = (total as f64 - leaked as f64).abs() / leaked as f64;
    assert!(
        error <= 0.02,
        "total {total} vs leaked {leaked}: {:.2} % off",
        error * 100.0
    );
    // The stack goes through the program's own frames up to main.
    assert!(anon
        .iter()
        .any(|(f, _)| has_frame(f, "main") && has_frame(f, "leak_sessions")));
    assert_outputs_exist(&out);
}

/// Check that heap growth by `sbrk` in `grow_heap` is attributed to it in the brk view.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn brk_leak_is_attributed_to_grow_heap() {
    require_root();
    let dir = scratch_dir("brk_leak");
    let program = build_c("brk_leak.c", "brk_leak_fp", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 4.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(&["--pid", &pid, "--duration", "8s"], &dir.join("out"));
    workload.release();
    let leaked = workload.finish("leaked_bytes");
    let out = rec.wait();

    let lines = read_folded(&out.join("memory.folded"));
    let heap: Vec<_> = lines
        .iter()
        .filter(|(f, _)| f.get(1).map(String::as_str) == Some("brk heap"))
        .cloned()
        .collect();
    let total = sum_where(&heap, |_| true);
    let grow = sum_where(&heap, |f| has_frame(f, "grow_heap"));
    let scratch = sum_where(&heap, |f| has_frame(f, "scratch_work"));
    eprintln!("leaked {leaked}, heap growth {total}, under grow_heap {grow}, under scratch_work {scratch}");
    assert!(
        grow as f64 >= 0.9 * total as f64,
        "grow_heap holds {grow} of {total}"
    );
    assert!(
        (scratch as f64) < 0.01 * leaked as f64,
        "scratch_work holds {scratch}"
    );
    let error = (total as f64 - leaked as f64).abs() / leaked as f64;
    assert!(
        error <= 0.02,
        "total {total} vs leaked {leaked}: {:.2} % off",
        error * 100.0
    );
    assert_outputs_exist(&out);
}

fn assert_outputs_exist(out: &std::path::Path) {
    let svg = std::fs::read_to_string(out.join("memory.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Memory growth"));
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(report.contains("top growing stacks"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(json["memory"]["processes"][0]["events"].as_u64().unwrap() > 0);
    assert_eq!(json["memory"]["events_lost"].as_u64(), Some(0));
}

/// Check that SIGTERM ends an open-ended window early and still writes every file.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn sigterm_writes_what_was_captured() {
    require_root();
    let dir = scratch_dir("sigterm");
    let program = build_c("mmap_leak.c", "mmap_leak_fp", "gcc", FP_FLAGS);
    let mut workload = Workload::start(&program, 30.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(&["--pid", &pid], &dir.join("out"));
    workload.release();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    rec.terminate();
    let out = rec.wait();
    let _ = workload.child.kill();
    let lines = read_folded(&out.join("memory.folded"));
    assert!(
        sum_where(&lines, |f| has_frame(f, "leak_sessions")) > 0,
        "{lines:?}"
    );
    assert!(out.join("memory.svg").exists() && out.join("report.json").exists());
}
