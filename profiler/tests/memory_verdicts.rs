//! Root integration tests of the memory verdict on real programs that hold memory without
//! leaking it (a full LRU cache, a cache warming up, batches) and on a slow leak hidden
//! beside heavy churn, in `record` and in the daemon (`testprogs/cache_churn.c`).
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// Seconds per daemon interval.
const INTERVAL_SECS: u64 = 3;

fn cache_churn() -> PathBuf {
    build_c("cache_churn.c", "cache_churn", "gcc", FP_FLAGS)
}

/// A verdict as `report.json` carries it.
#[derive(Debug)]
struct Verdict {
    kind: String,
    headline: String,
    confidence: String,
    /// Frames of the first stack it names.
    frames: Vec<String>,
}

fn verdict_of(report: &Path) -> Verdict {
    let text = std::fs::read_to_string(report).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v = &json["memory"]["processes"][0]["verdict"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    Verdict {
        kind: s(&v["kind"]),
        headline: s(&v["headline"]),
        confidence: s(&v["confidence"]),
        frames: v["stacks"][0]["frames"]
            .as_array()
            .map(|f| f.iter().map(s).collect())
            .unwrap_or_default(),
    }
}

fn show(what: &str, verdicts: &[Verdict]) {
    for (i, v) in verdicts.iter().enumerate() {
        eprintln!("{what} #{}: {}\n    {}", i + 1, v.headline, v.confidence);
    }
}

/// Record `cache_churn` in `mode` for `seconds` and return its verdict.
fn record(name: &str, mode: &str, seconds: f64) -> Verdict {
    let dir = scratch_dir(name);
    let workload = Workload::start_with_env(
        &cache_churn(),
        seconds + 10.0,
        &dir,
        &[("CACHE_MODE", mode)],
    );
    let pid = workload.pid.to_string();
    let duration = format!("{seconds}s");
    let rec = Recording::start(
        &[
            "--pid",
            &pid,
            "--memory",
            "--allocations",
            "--duration",
            &duration,
        ],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    eprintln!(
        "{}",
        std::fs::read_to_string(out.join("report.txt")).unwrap()
    );
    verdict_of(&out.join("report.json"))
}

/// Run the daemon (intervals of [`INTERVAL_SECS`]) on `cache_churn` in `mode` until it
/// has written `intervals` captures; their verdicts, oldest first.
fn daemon(name: &str, mode: &str, intervals: usize, extra: &[&str]) -> Vec<Verdict> {
    let dir = scratch_dir(name);
    let out = dir.join("out");
    let seconds = (intervals as u64 * INTERVAL_SECS + 15) as f64;
    let workload = Workload::start_with_env(&cache_churn(), seconds, &dir, &[("CACHE_MODE", mode)]);
    let interval = format!("{INTERVAL_SECS}s");
    let pid = workload.pid.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["daemon", "--pid", &pid, "--memory", "--allocations"])
        .args(["--interval", &interval])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting profiler daemon");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "daemon exited before attaching: {:?}",
            child.wait()
        );
        eprint!("[profiler] {line}");
        if line.contains("daemon started") {
            break;
        }
    }
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("[profiler] {line}");
        }
    });
    workload.release();
    let reports = |out: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(out)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("20"))
                    .map(|e| e.path().join("report.json"))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };
    let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 30);
    while reports(&out).len() < intervals {
        assert!(
            Instant::now() < deadline,
            "the daemon wrote only {} captures",
            reports(&out).len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "daemon failed");
    drop(workload);
    let verdicts: Vec<Verdict> = reports(&out)
        .iter()
        .take(intervals)
        .map(|p| verdict_of(p))
        .collect();
    show(name, &verdicts);
    verdicts
}

/// Check the full LRU cache in `record`: constant live bytes, a turnover of
/// about a second: no growth, allocations and frees balance, not LEAK.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn full_cache_is_no_growth_in_record() {
    require_root();
    let v = record("verdict_cache_record", "full", 6.0);
    show("record", std::slice::from_ref(&v));
    assert_eq!(v.kind, "no_growth", "{v:?}");
    assert!(
        v.headline
            .contains("allocations and frees balance (churn of ~"),
        "{}",
        v.headline
    );
    assert!(v.confidence.contains("97.7 % bound"), "{}", v.confidence);
}

/// Check the same cache in 10 daemon intervals: never LEAK (nor growing).
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn full_cache_is_never_a_leak_in_the_daemon() {
    require_root();
    let verdicts = daemon("verdict_cache_daemon", "full", 10, &[]);
    for v in &verdicts {
        assert!(
            !matches!(v.kind.as_str(), "leak" | "growing"),
            "{}\n{}",
            v.headline,
            v.confidence
        );
    }
}

/// Check a cache that fills for ~6 s and then stays full: once full, the daemon says
/// its growth stopped, and it is never called a leak.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn warming_cache_is_growth_that_stopped() {
    require_root();
    let verdicts = daemon("verdict_cache_warm", "warm", 8, &[]);
    assert!(verdicts.iter().all(|v| v.kind != "leak"), "{verdicts:#?}");
    // Full from about the 3rd interval: the last ones say its growth stopped.
    let stopped = verdicts[5..]
        .iter()
        .find(|v| v.kind == "growth_stopped")
        .unwrap_or_else(|| panic!("no growth that stopped in the last 3: {verdicts:#?}"));
    assert!(
        stopped.frames.iter().any(|f| f == "cache_put"),
        "{stopped:#?}"
    );
}

/// Check batches allocated and freed every 5 s: periodic, never a leak.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn batches_are_periodic_not_a_leak() {
    require_root();
    let verdicts = daemon("verdict_batches", "batch", 10, &[]);
    assert!(verdicts.iter().all(|v| v.kind != "leak"), "{verdicts:#?}");
    assert!(
        verdicts.iter().any(|v| v.kind == "periodic"),
        "{verdicts:#?}"
    );
}

/// Check a slow leak (16 KiB every ~0.94 s, 1 MiB a minute) beside a churning cache of
/// ~10 MiB/s: the daemon calls it a LEAK within 10 intervals of 3 s and names
/// `remember_session`. Allocations are sampled every 16 KiB, so each leaked block is
/// seen and the churn gives ~500 samples a second: at the default 256 KiB a 1 MiB/min
/// leak gives two samples in 30 s and takes minutes to show (32 KiB, tried, made it
/// between the 6th and the 8th interval, at the mercy of the sampler).
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn slow_leak_beside_churn_is_a_leak_in_the_daemon() {
    require_root();
    let verdicts = daemon(
        "verdict_slow_leak",
        "leak",
        10,
        &["--alloc-sample-bytes", "16KiB"],
    );
    let first = verdicts
        .iter()
        .position(|v| v.kind == "leak")
        .unwrap_or_else(|| panic!("no LEAK in 10 intervals: {verdicts:#?}"));
    let v = &verdicts[first];
    eprintln!("LEAK from interval {}", first + 1);
    assert!(v.headline.contains("remember_session"), "{}", v.headline);
    assert!(
        v.confidence.contains("/min") && v.confidence.contains("P(growth)"),
        "{}",
        v.confidence
    );
}

const NODE: &str = "/usr/bin/node";

/// An executable that runs `testprogs/buffer_churn.js` under Debian's node (no flags),
/// started like the C programs (`exec` keeps the pid node prints).
fn buffer_churn(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testprogs/buffer_churn.js")
        .canonicalize()
        .unwrap();
    let wrapper = dir.join("buffer-churn");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {NODE} {} \"$@\"\n", script.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Check a Node service churning Buffers of 1-192 KiB with a stable ~64 MiB working
/// set (glibc, Debian's node): not a leak in `record`, and the report splits the V8
/// heap, native live allocations and allocator-retained memory. (The musl variant
/// needs the musl Node set-up, not in the tree yet.)
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn node_buffer_churn_is_not_a_leak() {
    require_root();
    assert!(
        Path::new(NODE).exists(),
        "{NODE} is missing (Debian package nodejs)"
    );
    let dir = scratch_dir("verdict_node_churn");
    let workload = Workload::start(&buffer_churn(&dir), 12.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(
        &[
            "--pid",
            &pid,
            "--memory",
            "--allocations",
            "--duration",
            "8s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    eprintln!("{report}");
    let v = verdict_of(&out.join("report.json"));
    show("node record", std::slice::from_ref(&v));
    assert!(
        !matches!(v.kind.as_str(), "leak" | "growing"),
        "{}\n{}",
        v.headline,
        v.confidence
    );
    let split = report
        .lines()
        .find(|l| l.trim_start().starts_with("split "))
        .unwrap_or_else(|| panic!("no split line in the report"));
    for part in [
        "V8 heap and code",
        "native live allocations",
        "allocator-retained",
    ] {
        assert!(split.contains(part), "{split}");
    }
    workload.finish("live_bytes");
}
