//! Root integration tests of whole stacks in code built the way it ships: `-O2` C
//! without frame pointers against glibc, release Rust, and a program in its own mount
//! and PID namespace whose files do not exist on the host.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use common::*;

/// Compile `testprogs/<source>` as a release Rust program without frame pointers.
fn build_rust(source: &str, output: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("testprogs")
        .join(output);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testprogs")
        .join(source);
    let status = Command::new("rustc")
        .args([
            "-O",
            "-C",
            "debuginfo=1",
            "-C",
            "force-frame-pointers=no",
            "--edition",
            "2021",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running rustc: {e}"));
    assert!(status.success(), "rustc failed to build {}", src.display());
    out
}

/// Record `cache_leak.c` built with `cc -O2 -fomit-frame-pointer` and check that at
/// least 90 % of its growth lies on stacks with `frames` in that order (and that the
/// growth is at least half of what the program leaked).
fn assert_cache_leak_under(name: &str, cc: &str, frames: &[&dyn Fn(&str) -> bool], label: &str) {
    require_root();
    let started = Instant::now();
    let dir = scratch_dir(name);
    let program = build_c(
        "cache_leak.c",
        &format!("{name}_o2"),
        cc,
        &["-O2", "-fomit-frame-pointer"],
    );
    let workload = Workload::start(&program, 4.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(
        &["--pid", &pid, "--memory", "--duration", "8s"],
        &dir.join("out"),
    );
    workload.release();
    let leaked = workload.finish("leaked_bytes");
    let out = rec.wait();
    let lines = read_folded(&out.join("memory.folded"));
    show("memory.folded", &lines);
    let total = sum_where(&lines, |_| true);
    let under = sum_where(&lines, |f| in_order(f, frames));
    eprintln!(
        "leaked {leaked}, growth {total}, under {label} {under} ({:.1} %), {:.1} s",
        100.0 * under as f64 / total.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(leaked > 0, "the program leaked nothing");
    assert!(
        total as f64 >= 0.5 * leaked as f64,
        "growth {total} for {leaked} leaked bytes"
    );
    assert!(
        under as f64 >= 0.9 * total as f64,
        "{label} holds {under} of {total}"
    );
}

/// Check that the heap growth of an `-O2` program without frame pointers, leaking through
/// glibc's `malloc`, lies under `main` → `cache_insert_session` → `malloc`.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn malloc_leak_without_frame_pointers_is_under_cache_insert_session() {
    assert_cache_leak_under(
        "cache_leak",
        "gcc",
        &[
            &|s| s == "main",
            &|s| s.contains("cache_insert_session"),
            &|s| s.contains("malloc"),
        ],
        "main;…;cache_insert_session;…malloc…",
    );
}

/// Check that a release Rust program's thread blocked on a `Condvar` in `wait_for_slot`
/// has an in-flight wait stack through `wait_for_slot` and its callers up to `main`.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn condvar_wait_in_release_rust_names_callers_up_to_main() {
    require_root();
    let started = Instant::now();
    let dir = scratch_dir("condvar_slot");
    let program = build_rust("condvar_slot.rs", "condvar_slot");
    let workload = Workload::start(&program, 6.0, &dir);
    let pid = workload.pid.to_string();
    let rec = Recording::start(
        &[
            "--pid",
            &pid,
            "--waits",
            "--duration",
            "4s",
            "--stall-threshold",
            "2s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let stacks: Vec<Vec<String>> = json["waits"]["processes"][0]["in_flight"]
        .as_array()
        .unwrap_or_else(|| panic!("no in_flight waits: {json:#}"))
        .iter()
        .map(|g| {
            eprintln!("in flight on {}, tids {}:", g["on"], g["tids"]);
            g["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    eprintln!("    {f}");
                    f.as_str().unwrap().to_string()
                })
                .collect()
        })
        .collect();
    assert_eq!(workload.finish("timed_out"), 2, "the waits were woken");
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    let wait_for_slot = |f: &str| f.contains("condvar_slot::wait_for_slot");
    let run_worker = |f: &str| f.contains("condvar_slot::run_worker");
    // The main thread: main → run_worker → wait_for_slot.
    assert!(
        stacks.iter().any(|s| in_order(
            s,
            &[&|f| f == "condvar_slot::main", &run_worker, &wait_for_slot]
        )),
        "no wait stack main → run_worker → wait_for_slot in {stacks:#?}"
    );
    // The worker thread: main's closure → run_worker → wait_for_slot.
    assert!(
        stacks.iter().any(|s| in_order(
            s,
            &[
                &|f| f.starts_with("condvar_slot::main::{{closure}}"),
                &run_worker,
                &wait_for_slot
            ]
        )),
        "no wait stack closure → run_worker → wait_for_slot in {stacks:#?}"
    );
}

/// Record a static leaking program started in its own mount and PID namespaces, check
/// that the host has no file under the path `/proc/PID/exe` names (`expected_exe`, or
/// the host path of the tmpfs root if `None`), and that its growth is symbolized.
fn assert_namespaced_program_symbolized(name: &str, enter: EnterRoot, expected_exe: Option<&str>) {
    require_root();
    let started = Instant::now();
    let dir = scratch_dir(name);
    let program = build_c(
        "ns_leak.c",
        "ns_leak_static",
        "gcc",
        &["-O1", "-g", "-fno-omit-frame-pointer", "-static"],
    );
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let workload = NsWorkload::start(&program, 6.0, &root, enter, None);
    let pid = workload.host_pid.to_string();
    // The host sees the program's file under a path that does not exist on the host.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    eprintln!(
        "host pid {pid}, namespace pid 1, exe {}, first mapping {}",
        exe.display(),
        maps.lines().next().unwrap_or_default()
    );
    assert_eq!(exe, expected_exe.map_or(root.join("prog"), PathBuf::from));
    assert!(!exe.exists(), "{} exists on the host", exe.display());
    let rec = Recording::start(
        &[
            "--pid",
            &pid,
            "--memory",
            "--sample-bytes",
            "1",
            "--duration",
            "4s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    let leaked = workload.finish("leaked_bytes");
    let lines: Vec<_> = read_folded(&out.join("memory.folded"))
        .into_iter()
        .filter(|(f, _)| f.get(1).map(String::as_str) == Some("anon mmap"))
        .collect();
    show("memory.folded (anon mmap)", &lines);
    let total = sum_where(&lines, |_| true);
    let under = sum_where(&lines, |f| {
        in_order(f, &[&|s| s == "main", &|s| s.contains("ns_leak_sessions")])
    });
    eprintln!(
        "leaked {leaked}, anon mmap growth {total}, under main;ns_leak_sessions {under}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(leaked > 0, "the program leaked nothing");
    assert!(
        under > 0 && under as f64 >= 0.9 * total as f64,
        "main;ns_leak_sessions holds {under} of {total}"
    );
    let unknown: Vec<_> = lines
        .iter()
        .filter(|(f, _)| has_frame(f, "[unknown]"))
        .collect();
    assert!(unknown.is_empty(), "unsymbolized frames: {unknown:?}");
}

/// Check that a program in its own mount and PID namespace, chrooted into a root that
/// does not exist on the host, has its frames symbolized.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn program_chrooted_in_own_namespaces_is_symbolized() {
    assert_namespaced_program_symbolized("ns_leak_chroot", EnterRoot::Chroot, None);
}

/// Check that a program in its own mount and PID namespace whose root was pivoted, as in
/// a container, has its frames symbolized although its `/prog` is not on the host.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn program_in_pivoted_root_is_symbolized() {
    assert_namespaced_program_symbolized("ns_leak_pivot", EnterRoot::PivotRoot, Some("/prog"));
}

/// Check that the heap growth of the same `-O2` program without frame pointers, linked
/// against musl (`musl-gcc`), lies under `main` → `cache_insert_session`. Debian's musl
/// has no CFI and no frame pointers, so the unwinder scans the stack past musl's
/// `malloc` internals to the next return address with CFI: those musl frames (and often
/// `malloc` itself) are missing from the stack, so unlike the glibc test this one does
/// not ask for a `malloc` frame.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn malloc_leak_with_musl_reaches_cache_insert_session() {
    assert_cache_leak_under(
        "cache_leak_musl",
        "musl-gcc",
        &[&|s| s == "main", &|s| s.contains("cache_insert_session")],
        "main;…;cache_insert_session",
    );
}
