//! Rootless end-to-end golden tests: committed recordings of real captures (made by the
//! root tests in `replay.rs` with `BLESS=1`) are replayed through the whole pipeline
//! after `collect` (analysis, verdicts, renderers), and the files written must match
//! the committed outputs. Re-bless the outputs with `BLESS=1 cargo test --test
//! replay_golden`.
use std::path::{Path, PathBuf};

use profiler::record::replay::{replay, ReplayOptions};

/// The files compared with the golden case (pprof and SVG carry the time of writing
/// or are derived from the folded files).
const COMPARED: &[&str] = &[
    "report.txt",
    "report.json",
    "memory.folded",
    "allocations.folded",
    "memory-diff.folded",
    "waits.folded",
];

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/replay")
        .join(case)
}

/// Replay the recording of `case` and compare (or, with BLESS, rewrite) its outputs;
/// the report text, for the caller's own checks.
fn check_case(case: &str) -> String {
    let golden = case_dir(case);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("replay_golden_{case}"));
    let _ = std::fs::remove_dir_all(&out);
    replay(&ReplayOptions {
        file: golden.join("records.jsonl.gz"),
        out: out.clone(),
    })
    .unwrap_or_else(|e| panic!("replaying {case}: {e:#}"));
    let bless = std::env::var_os("BLESS").is_some();
    let mut compared = 0;
    for name in COMPARED {
        let actual = out.join(name);
        let expected = golden.join(name);
        if bless {
            match std::fs::read(&actual) {
                Ok(bytes) => std::fs::write(&expected, bytes).unwrap(),
                Err(_) => {
                    let _ = std::fs::remove_file(&expected);
                }
            }
            continue;
        }
        match (
            std::fs::read_to_string(&expected),
            std::fs::read_to_string(&actual),
        ) {
            (Ok(e), Ok(a)) => {
                assert!(
                    e == a,
                    "{case}/{name} differs from its golden file; if the change is intended, re-bless with BLESS=1"
                );
                compared += 1;
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!("{case}: the replay wrote no {name}: {e}"),
            (Err(_), Ok(_)) => {
                panic!("{case}: the replay wrote {name}, which the golden case lacks")
            }
        }
    }
    assert!(
        bless || compared >= 3,
        "{case}: only {compared} files compared"
    );
    check_report_json(&out.join("report.json"));
    std::fs::read_to_string(out.join("report.txt")).unwrap()
}

/// report.json's head: schema and profiler version, the window's absolute start and
/// end in RFC 3339 (the recordings keep the wall clock), no `-0`, the report's words.
fn check_report_json(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema_version"], 1, "{text}");
    assert_eq!(json["profiler_version"], env!("CARGO_PKG_VERSION"));
    let start = json["start"].as_str().expect("an absolute start");
    let end = json["end"].as_str().expect("an absolute end");
    for t in [start, end] {
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    assert!(start < end, "{start} .. {end}");
    assert!(
        !text.contains(": -0.0") && !text.contains(": -0,"),
        "negative zero"
    );
    assert!(
        !text.contains("progressing"),
        "the report says `not stalled`"
    );
}

/// Check the glibc leak behind churn: replayed, it is still a leak under
/// `cache_insert_session`, with the golden reports.
#[test]
fn leak_replays_to_golden() {
    let text = check_case("leak");
    assert!(text.contains("verdict: LEAK"), "{text}");
    assert!(text.contains("under cache_insert_session"), "{text}");
}

/// Check the musl build of the same leak: musl's allocator frames, same verdict.
#[test]
fn musl_leak_replays_to_golden() {
    let text = check_case("musl");
    assert!(text.contains("verdict: LEAK"), "{text}");
    assert!(text.contains("under cache_insert_session"), "{text}");
}

/// Check the fragmentation case: retention, not a leak (the healthy twin of the leak).
#[test]
fn fragmentation_replays_to_golden() {
    let text = check_case("fragmentation");
    assert!(
        text.contains("verdict: ALLOCATOR RETENTION / FRAGMENTATION"),
        "{text}"
    );
    assert!(!text.contains("verdict: LEAK"), "{text}");
}

/// Check the futex stall of a deadlocked pool: STALLED, waiting in `pool_acquire`.
#[test]
fn futex_stall_replays_to_golden() {
    let text = check_case("futex_stall");
    assert!(text.contains("STALLED: 4 of 5 threads"), "{text}");
    assert!(text.contains("waiting in pool_acquire"), "{text}");
}

/// Check that a file that is not a recording is refused with a one-line reason.
#[test]
fn not_a_recording_is_refused() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay_golden_bad");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-records.gz");
    std::fs::write(&file, b"plain text, not gzip").unwrap();
    let err = replay(&ReplayOptions {
        file: file.clone(),
        out: dir.join("out"),
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("is not a profiler recording"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}
