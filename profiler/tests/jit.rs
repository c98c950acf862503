//! Root integration test of JIT frames: a Node.js program run with `--perf-basic-prof`
//! leaks from a JS function, and the growth stacks name that function through the
//! runtime's perf map (`/tmp/perf-PID.map`).
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

const NODE: &str = "/usr/bin/node";

/// An executable that runs `testprogs/leak.js` under `node --perf-basic-prof`, so the
/// harness starts it like the C programs (`exec` keeps the pid node prints). It runs
/// in `dir`, where V8 also writes its `isolate-*-v8.log`.
fn node_leak_program(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testprogs/leak.js")
        .canonicalize()
        .unwrap();
    let wrapper = dir.join("leak-js");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncd {}\nexec {NODE} --perf-basic-prof {} \"$@\"\n",
            dir.display(),
            script.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Run `leak.js` for 6 s under `profiler record --pid PID ARGS --duration 5s`: the
/// window ends while node still holds its buffers (at exit node frees them). Returns
/// the output directory and the bytes node retained.
fn record_node_leak(name: &str, args: &[&str]) -> (PathBuf, u64) {
    require_root();
    assert!(
        Path::new(NODE).exists(),
        "{NODE} is missing (Debian package nodejs)"
    );
    let dir = scratch_dir(name);
    let workload = Workload::start(&node_leak_program(&dir), 6.0, &dir);
    let pid = workload.pid.to_string();
    let mut all = vec!["--pid", &pid];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--duration", "5s"]);
    let rec = Recording::start(&all, &dir.join("out"));
    workload.release();
    let out = rec.wait();
    let retained = workload.finish("retained_bytes");
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    (out, retained)
}

/// Check that memory leaked by the JS function `rememberRequest` (node, JIT code) is
/// attributed to a frame named from the perf map.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn node_leak_names_js_function_from_perf_map() {
    let (out, retained) = record_node_leak("jit_node", &["--memory", "--sample-bytes", "1"]);
    let lines = read_folded(&out.join("memory.folded"));
    let jit: Vec<_> = lines
        .iter()
        .filter(|(f, _)| has_frame(f, "rememberRequest"))
        .collect();
    for (frames, bytes) in &jit {
        eprintln!("{} {bytes}", frames.join(";"));
    }
    let under = sum_where(&lines, |f| has_frame(f, "rememberRequest"));
    eprintln!(
        "retained {retained}, {} stacks hold {under} bytes under rememberRequest",
        jit.len()
    );
    assert!(
        !jit.is_empty(),
        "no stack names rememberRequest; memory.folded:\n{}",
        std::fs::read_to_string(out.join("memory.folded")).unwrap()
    );
    // Calls made before V8 compiled it run in the interpreter, whose frames carry no
    // function name (`Builtins_InterpreterEntryTrampoline`); those are the first few.
    assert!(
        under as f64 >= 0.5 * retained as f64,
        "rememberRequest holds {under} of the {retained} bytes retained"
    );
}

/// Check the memory verdict on the seed incident's shape: a Node service whose
/// JavaScript keeps Buffers. With the allocator probes, the verdict is a leak and its
/// headline names the JS function (from the perf map), not V8's or Node's allocator
/// internals that the allocation passes through.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn node_leak_verdict_names_the_js_function() {
    let (out, retained) = record_node_leak("jit_node_verdict", &["--memory", "--allocations"]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let verdict = &report["memory"]["processes"][0]["verdict"];
    let headline = verdict["headline"].as_str().unwrap_or_default();
    eprintln!("retained {retained}; verdict: {headline}");
    assert_eq!(verdict["kind"], "leak", "{verdict}");
    // `under JS:^rememberRequest …`: the tier mark (~ ^ + *) depends on V8's JIT.
    let named = headline.split_once("% under JS:").is_some_and(|(_, rest)| {
        rest.get(1..)
            .is_some_and(|r| r.starts_with("rememberRequest"))
    });
    assert!(
        named,
        "the headline does not name the JS function: {headline}"
    );
}
