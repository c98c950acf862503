//! Root integration tests of the blocked-on view and the stall verdict.
mod common;

use std::process::Command;

use common::*;

const PTHREAD: &[&str] = &["-O2", "-g", "-pthread"];

fn report_json(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// `profiler stalls --pid PID`: its stdout.
fn stalls(pid: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["stalls", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("[stalls] {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "profiler stalls failed");
    stdout
}

/// Check the STALLED verdict of a finished record on the pool deadlock: all 4 workers on
/// one futex with no wake, stacks through `acquire_nested`.
fn assert_pool_stalled(out: &std::path::Path) {
    let json = report_json(out);
    let p = &json["waits"]["processes"][0];
    assert_eq!(p["verdict"]["verdict"], "stalled", "{p:#}");
    assert_eq!(p["verdict"]["stuck"], 4, "{p:#}");
    let group = &p["in_flight"][0];
    assert_eq!(group["tids"].as_array().unwrap().len(), 4, "{group:#}");
    assert!(group["on"].as_str().unwrap().starts_with("futex 0x"));
    assert_eq!(group["wakes"], 0);
    let stack: Vec<&str> = group["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(stack.contains(&"acquire_nested"), "{stack:?}");
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(text.contains("STALLED: 4 of 5 threads"), "{text}");
    let folded = read_folded(&out.join("waits.folded"));
    assert!(
        sum_where(&folded, |f| f.get(1).map(String::as_str) == Some("futex")
            && has_frame(f, "acquire_nested"))
            > 0
    );
    assert!(std::fs::read_to_string(out.join("waits.svg"))
        .unwrap()
        .contains("Blocked on"));
}

/// Check that a pool deadlock that begins after the profiler attached is STALLED, both
/// in `record` and in `stalls`.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn pool_deadlock_after_attach_is_stalled() {
    require_root();
    let dir = scratch_dir("pool_after");
    let program = build_c("pool_deadlock.c", "pool_deadlock", "gcc", PTHREAD);
    let mut workload = Workload::start(&program, 30.0, &dir);
    let pid = workload.pid;
    let rec = Recording::start(
        &[
            "--pid",
            &pid.to_string(),
            "--waits",
            "--duration",
            "5s",
            "--stall-threshold",
            "3s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    assert_pool_stalled(&out);
    let verdict = stalls(pid);
    assert!(verdict.contains("STALLED: 4 of 5 threads"), "{verdict}");
    assert!(verdict.contains("acquire_nested"), "{verdict}");
    let _ = workload.child.kill();
}

/// Check that a pool deadlock already in place before the profiler attached (no wait
/// start seen by the probes) is found from the snapshot alone.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn pool_deadlock_before_attach_is_stalled() {
    require_root();
    let dir = scratch_dir("pool_before");
    let program = build_c("pool_deadlock.c", "pool_deadlock", "gcc", PTHREAD);
    let mut workload = Workload::start(&program, 30.0, &dir);
    workload.release();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = workload.pid;
    let verdict = stalls(pid);
    assert!(verdict.contains("STALLED: 4 of 5 threads"), "{verdict}");
    assert!(verdict.contains("acquire_nested"), "{verdict}");
    let rec = Recording::start(
        &[
            "--pid",
            &pid.to_string(),
            "--duration",
            "5s",
            "--stall-threshold",
            "3s",
        ],
        &dir.join("out"),
    );
    let out = rec.wait();
    assert_pool_stalled(&out);
    let _ = workload.child.kill();
}

/// Check that a futex storm of waits shorter than the threshold is counted in the
/// kernel without sending stacks, and that lost events are reported (and zero here).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn futex_storm_is_counted_not_streamed() {
    require_root();
    let dir = scratch_dir("futex_storm");
    let program = build_c("futex_pingpong.c", "futex_pingpong", "gcc", PTHREAD);
    let workload = Workload::start(&program, 3.0, &dir);
    let rec = Recording::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--waits",
            "--duration",
            "10s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let round_trips = workload.finish("round_trips");
    let out = rec.wait();
    let json = report_json(&out);
    let short = json["waits"]["short_waits"].as_u64().unwrap();
    let completed: u64 = json["waits"]["processes"][0]["completed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    eprintln!("round trips {round_trips}, short waits {short}, waits with stacks {completed}");
    assert!(round_trips > 1000, "the storm did not run");
    assert!(short > 1000, "short waits were not counted: {short}");
    assert!(
        completed * 100 <= short,
        "{completed} stacks sent for {short} short waits"
    );
    assert_eq!(
        json["events_lost"].as_u64(),
        Some(0),
        "events lost must be reported (and none here)"
    );
}
