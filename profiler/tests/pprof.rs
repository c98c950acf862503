//! Root integration tests of the pprof files: `profiler record` on real programs, then
//! Go's own pprof reader (`go tool pprof -raw`, Debian package `golang-go`, installed
//! by `cargo xtask setup --test-deps`) must read `memory.pb.gz` and `waits.pb.gz` with
//! the totals of the folded files and the same function names.
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

const PTHREAD: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
];

/// The `go` command, or None (with the reason printed) when it is not installed.
fn go() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("go"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIP: `go` is not installed (Debian package golang-go; `cargo xtask setup --test-deps` installs it)");
    }
    found
}

/// What `go tool pprof -raw` printed: per sample its values, and every function name
/// of the location table; plus mapping lines.
struct Raw {
    sample_types: String,
    samples: Vec<Vec<i64>>,
    functions: BTreeSet<String>,
    mappings: Vec<String>,
}

fn pprof_raw(go: &Path, file: &Path) -> Raw {
    let out = Command::new(go)
        .args(["tool", "pprof", "-raw"])
        .arg(file)
        .env("PPROF_TMPDIR", file.parent().unwrap())
        .output()
        .expect("running go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof -raw {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_raw(&text)
}

fn parse_raw(text: &str) -> Raw {
    #[derive(PartialEq)]
    enum Section {
        Header,
        Samples,
        Locations,
        Mappings,
    }
    let mut section = Section::Header;
    let mut raw = Raw {
        sample_types: String::new(),
        samples: Vec::new(),
        functions: BTreeSet::new(),
        mappings: Vec::new(),
    };
    for line in text.lines() {
        match line.trim() {
            "Samples:" => {
                section = Section::Samples;
                continue;
            }
            "Locations" => {
                section = Section::Locations;
                continue;
            }
            "Mappings" => {
                section = Section::Mappings;
                continue;
            }
            _ => {}
        }
        match section {
            Section::Header => {}
            Section::Samples if raw.sample_types.is_empty() => raw.sample_types = line.into(),
            Section::Samples => {
                // `  VALUE VALUE: LOC LOC …`; label lines hold `key:[value]`.
                if let Some((values, _)) = line.split_once(':') {
                    if let Ok(v) = values
                        .split_whitespace()
                        .map(str::parse)
                        .collect::<Result<Vec<i64>, _>>()
                    {
                        if !v.is_empty() {
                            raw.samples.push(v);
                        }
                    }
                }
            }
            Section::Locations => {
                // `  ID: 0xADDR M=N NAME FILE:LINE s=N`, inlined callers on lines
                // of their own as `  NAME FILE:LINE s=N`; NAME may contain spaces.
                let rest = match line.split_once(" M=") {
                    Some((_, r)) => r.split_once(' ').map_or("", |(_, r)| r),
                    None => line.trim(),
                };
                let rest = rest.rsplit_once(" s=").map_or(rest, |(r, _)| r);
                if let Some((name, _file_line)) = rest.rsplit_once(' ') {
                    raw.functions.insert(name.to_string());
                }
            }
            Section::Mappings => raw.mappings.push(line.to_string()),
        }
    }
    raw
}

/// Frames of folded lines below the two synthetic roots (`comm (pid)` and the kind).
fn folded_functions(lines: &[(Vec<String>, u64)]) -> BTreeSet<String> {
    lines
        .iter()
        .flat_map(|(f, _)| f.iter().skip(2).cloned())
        .collect()
}

/// Check that go tool pprof reads memory.pb.gz of a recorded mmap leak with
/// inuse_space equal to memory.folded's total, every folded function name present,
/// and mappings with the build IDs of libc and the test program.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn memory_pprof_matches_folded() {
    require_root();
    let Some(go) = go() else { return };
    let dir = scratch_dir("pprof_memory");
    let program = build_c("mmap_leak.c", "mmap_leak_pprof", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 3.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(
        &["--pid", &pid, "--memory", "--duration", "8s"],
        &dir.join("out"),
    );
    workload.release();
    workload.finish("leaked_bytes");
    let out = rec.wait();

    let folded = read_folded(&out.join("memory.folded"));
    let folded_total = sum_where(&folded, |_| true);
    assert!(folded_total > 0, "the leak was recorded");
    let raw = pprof_raw(&go, &out.join("memory.pb.gz"));
    assert!(
        raw.sample_types.contains("inuse_space/bytes")
            && raw.sample_types.contains("inuse_objects/count"),
        "{}",
        raw.sample_types
    );
    let pprof_total: i64 = raw.samples.iter().map(|v| v[0]).sum();
    eprintln!(
        "memory: folded total {folded_total} bytes, pprof inuse_space {pprof_total}, {} samples",
        raw.samples.len()
    );
    assert_eq!(pprof_total as u64, folded_total);
    let missing: Vec<_> = folded_functions(&folded)
        .difference(&raw.functions)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "functions missing from pprof: {missing:?}"
    );
    assert!(raw.functions.contains("leak_sessions"));
    assert_build_id_mapping(&raw, &program);
}

/// The program's own file is a mapping of the profile, with its GNU build ID.
fn assert_build_id_mapping(raw: &Raw, program: &Path) {
    let program_name = program.to_string_lossy().into_owned();
    let mapping = raw
        .mappings
        .iter()
        .find(|m| m.contains(program_name.as_str()))
        .unwrap_or_else(|| panic!("no mapping of {program_name}: {:?}", raw.mappings));
    assert!(
        mapping
            .split_whitespace()
            .any(|w| w.len() == 40 && w.chars().all(|c| c.is_ascii_hexdigit())),
        "build ID in {mapping}"
    );
}

/// Check that go tool pprof reads waits.pb.gz of a deadlocked pool with blocked
/// nanoseconds matching waits.folded's microseconds (which are rounded down per line)
/// and the lock-holding functions present.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn waits_pprof_matches_folded() {
    require_root();
    let Some(go) = go() else { return };
    let dir = scratch_dir("pprof_waits");
    let program = build_c("pool_deadlock.c", "pool_deadlock_pprof", "gcc", PTHREAD);
    let mut workload = Workload::start(&program, 30.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(
        &["--pid", &pid, "--waits", "--duration", "4s"],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    let _ = workload.child.kill();

    let folded = read_folded(&out.join("waits.folded"));
    let folded_us = sum_where(&folded, |_| true);
    assert!(folded_us > 0, "blocked time was recorded");
    let raw = pprof_raw(&go, &out.join("waits.pb.gz"));
    assert!(
        raw.sample_types.contains("blocked/nanoseconds")
            && raw.sample_types.contains("count/count"),
        "{}",
        raw.sample_types
    );
    let ns: i64 = raw.samples.iter().map(|v| v[0]).sum();
    let waits: i64 = raw.samples.iter().map(|v| v[1]).sum();
    eprintln!(
        "waits: folded {folded_us} us, pprof {ns} ns in {waits} waits, {} samples",
        raw.samples.len()
    );
    // Each folded line rounds its microseconds down, so it may be up to 1 us short
    // per pprof sample merged into it.
    let pprof_us = ns as u64 / 1000;
    assert!(
        pprof_us >= folded_us && pprof_us - folded_us <= raw.samples.len() as u64,
        "pprof {pprof_us} us vs folded {folded_us} us"
    );
    assert!(waits > 0);
    let missing: Vec<_> = folded_functions(&folded)
        .difference(&raw.functions)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "functions missing from pprof: {missing:?}"
    );
    assert!(raw.functions.contains("acquire_nested"));
    assert_build_id_mapping(&raw, &program);
}

/// Check that go tool pprof reads allocations.pb.gz (allocator probes on a program
/// leaking through malloc) with inuse_space equal to allocations.folded's total and
/// the leaking function present.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn allocations_pprof_matches_folded() {
    require_root();
    let Some(go) = go() else { return };
    let dir = scratch_dir("pprof_allocations");
    let program = build_c(
        "session_cache.c",
        "session_cache_pprof",
        "gcc",
        &["-O2", "-g"],
    );
    let workload = Workload::start(&program, 3.0, &dir);
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
    workload.finish("leaked_bytes");
    let out = rec.wait();

    let folded = read_folded(&out.join("allocations.folded"));
    let folded_total = sum_where(&folded, |_| true);
    assert!(folded_total > 0, "live allocations were recorded");
    let raw = pprof_raw(&go, &out.join("allocations.pb.gz"));
    let pprof_total: i64 = raw.samples.iter().map(|v| v[0]).sum();
    let blocks: i64 = raw.samples.iter().map(|v| v[1]).sum();
    eprintln!(
        "allocations: folded total {folded_total} bytes, pprof inuse_space {pprof_total} in {blocks} blocks, {} samples",
        raw.samples.len()
    );
    assert_eq!(pprof_total as u64, folded_total);
    assert!(blocks > 0);
    // allocations.folded has one synthetic root (`comm (pid)`), not two.
    let names: BTreeSet<String> = folded
        .iter()
        .flat_map(|(f, _)| f.iter().skip(1).cloned())
        .collect();
    let missing: Vec<_> = names.difference(&raw.functions).cloned().collect();
    assert!(
        missing.is_empty(),
        "functions missing from pprof: {missing:?}"
    );
    assert!(raw.functions.contains("cache_insert_session"));
    assert_build_id_mapping(&raw, &program);
}

/// `go tool pprof -list REGEX FILE`: the annotated source listing.
fn pprof_list(go: &Path, regex: &str, file: &Path) -> String {
    let out = Command::new(go)
        .args(["tool", "pprof", "-list", regex])
        .arg(file)
        .env("PPROF_TMPDIR", file.parent().unwrap())
        .output()
        .expect("running go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof -list {regex} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The flat column of source line `line` in a `-list` output (`.` when nothing is
/// there), and the whole listing line.
fn listed_flat(listing: &str, line: usize) -> Option<(String, String)> {
    listing.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let flat = words.next()?;
        let _cum = words.next()?;
        let number = words.next()?.strip_suffix(':')?.parse::<usize>().ok()?;
        (number == line).then(|| (flat.to_string(), l.to_string()))
    })
}

/// Check that `go tool pprof -list` puts a malloc leak on the line of the malloc call in
/// allocations.pb.gz, not on the next statement: the allocation's stack is taken at the
/// return address, which lies in the line after the call (here `memset`'s, built -O2).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn allocation_leaf_is_the_line_of_the_call() {
    require_root();
    let Some(go) = go() else { return };
    let dir = scratch_dir("pprof_alloc_line");
    let program = build_c("line_leak.c", "line_leak_pprof", "gcc", &["-O2", "-g"]);
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testprogs/line_leak.c"),
    )
    .unwrap();
    let malloc_line = 1 + source
        .lines()
        .position(|l| l.contains("malloc(BLOCK_SIZE); /* LEAK_LINE */"))
        .expect("the marked malloc line");
    let workload = Workload::start(&program, 3.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(
        &["-p", &pid, "--memory", "--allocations", "--duration", "10s"],
        &dir.join("out"),
    );
    workload.release();
    workload.finish("leaked_bytes");
    let out = rec.wait();

    let listing = pprof_list(&go, "^leak_here$", &out.join("allocations.pb.gz"));
    eprintln!("{listing}");
    let (flat, line) = listed_flat(&listing, malloc_line)
        .unwrap_or_else(|| panic!("line {malloc_line} not listed"));
    eprintln!("malloc line: {line}");
    assert_ne!(flat, ".", "nothing on the malloc line: {line}");
    let (next_flat, next) = listed_flat(&listing, malloc_line + 1)
        .unwrap_or_else(|| panic!("line {} not listed", malloc_line + 1));
    assert_eq!(next_flat, ".", "bytes on the line after the call: {next}");
}
