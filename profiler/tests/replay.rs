//! Root integration tests of `record --save-records` and `profiler replay`: a replay of
//! a saved capture writes the same reports as the live capture did. With `BLESS=1` they
//! also refresh the committed recordings under `tests/data/replay/` (and their golden
//! outputs) that the rootless `replay_golden` tests replay.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

/// The files whose content a replay must reproduce (pprof and SVG files carry the
/// time of writing or are derived from the folded files).
const COMPARED: &[&str] = &[
    "report.txt",
    "report.json",
    "memory.folded",
    "allocations.folded",
    "memory-diff.folded",
    "waits.folded",
];

/// Record `program` with `args` and `--save-records`, replay the saved stream, and
/// check that the replay wrote the same files. With BLESS set, keep the recording and
/// the outputs as the golden case `case`.
fn record_and_replay(case: &str, program: &Path, seconds: f64, args: &[&str]) {
    let dir = scratch_dir(&format!("replay_{case}"));
    let records = dir.join("records.jsonl.gz");
    let workload = Workload::start(program, seconds, &dir);
    let pid = workload.pid.to_string();
    let mut all = vec!["--pid", &pid, "--save-records", records.to_str().unwrap()];
    all.extend_from_slice(args);
    let rec = Recording::start(&all, &dir.join("live"));
    workload.release();
    let live = rec.wait();
    drop(workload);
    let replayed = dir.join("replayed");
    let status = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .arg("replay")
        .arg(&records)
        .arg("--out")
        .arg(&replayed)
        .status()
        .unwrap();
    assert!(status.success(), "profiler replay failed");
    let size = std::fs::metadata(&records).unwrap().len();
    eprintln!("{case}: recording of {size} bytes");
    let compared = same_files(&live, &replayed);
    assert!(compared >= 2, "nothing compared");
    if std::env::var_os("BLESS").is_some() {
        bless(case, &records, &live);
    }
}

/// Assert that every compared file `live` has is in `replayed` with the same content;
/// how many were compared.
fn same_files(live: &Path, replayed: &Path) -> usize {
    let mut n = 0;
    for name in COMPARED {
        let Ok(expected) = std::fs::read_to_string(live.join(name)) else {
            continue;
        };
        let actual = std::fs::read_to_string(replayed.join(name))
            .unwrap_or_else(|e| panic!("replay wrote no {name}: {e}"));
        assert!(
            expected == actual,
            "{name} differs between the live capture and its replay\n--- live\n{expected}\n--- replay\n{actual}"
        );
        n += 1;
    }
    n
}

/// Copy a recording and its outputs into `tests/data/replay/<case>/`.
fn bless(case: &str, records: &Path, live: &Path) {
    let dest = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/replay")
        .join(case);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::copy(records, dest.join("records.jsonl.gz")).unwrap();
    for name in COMPARED {
        if live.join(name).exists() {
            std::fs::copy(live.join(name), dest.join(name)).unwrap();
        }
    }
    eprintln!("blessed {}", dest.display());
}

/// Check the glibc leak behind churn: its replay reproduces the live reports.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn leak_replays_like_live() {
    require_root();
    let program = build_c(
        "session_cache.c",
        "replay_leak",
        "gcc",
        &["-O2", "-g", "-fomit-frame-pointer"],
    );
    record_and_replay(
        "leak",
        &program,
        3.0,
        &["--memory", "--allocations", "--duration", "30s"],
    );
}

/// Check the same leak built with musl (stacks through musl's malloc).
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn musl_leak_replays_like_live() {
    require_root();
    let program = build_c(
        "session_cache.c",
        "replay_musl",
        "musl-gcc",
        &["-O2", "-g", "-fomit-frame-pointer"],
    );
    record_and_replay(
        "musl",
        &program,
        3.0,
        &["--memory", "--allocations", "--duration", "30s"],
    );
}

/// Check allocator retention (fragmentation): its replay reproduces the live reports.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn fragmentation_replays_like_live() {
    require_root();
    let program = build_c("frag_retention.c", "replay_frag", "gcc", &["-O2", "-g"]);
    record_and_replay(
        "fragmentation",
        &program,
        2.0,
        &["--memory", "--allocations", "--duration", "30s"],
    );
}

/// Check the futex stall of a deadlocked pool: its replay reproduces the STALLED
/// verdict and the blocked stacks.
#[test]
#[ignore = "needs root: loads eBPF programs (run by `cargo xtask test`)"]
fn futex_stall_replays_like_live() {
    require_root();
    let program = build_c(
        "pool_deadlock.c",
        "replay_pool",
        "gcc",
        &["-O2", "-g", "-pthread"],
    );
    record_and_replay(
        "futex_stall",
        &program,
        30.0,
        &["--waits", "--duration", "5s", "--stall-threshold", "3s"],
    );
}
