//! Root integration tests of the lock verdicts: the owner of a contended mutex named
//! with its own wait (a sleep), and lock-order deadlocks among otherwise busy threads;
//! each next to its healthy twin.
mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;

const FUTEX: &str = "202";
const CLOCK_NANOSLEEP: &str = "230";

fn lock_sleep() -> std::path::PathBuf {
    build_c(
        "lock_sleep.c",
        "lock_sleep",
        "gcc",
        &[FP_FLAGS, &["-pthread"]].concat(),
    )
}

fn abba() -> std::path::PathBuf {
    build_c(
        "abba_deadlock.c",
        "abba_deadlock",
        "gcc",
        &[FP_FLAGS, &["-pthread"]].concat(),
    )
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

/// The verdict line of a `stalls` output or a report.txt (the one under the process).
fn verdict_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| {
            l.starts_with("STALLED")
                || l.starts_with("DEADLOCK")
                || l.starts_with("not stalled")
                || l.starts_with("exited")
        })
        .unwrap_or_else(|| panic!("no verdict line in {text}"))
}

/// Wait (at most 60 s, for a loaded machine) until the threads of `pid` named `comm`
/// number `count` and are all inside system call `nr` (`/proc/PID/task/TID/syscall`):
/// the state the test is about, rather than a fixed sleep.
fn wait_for_threads(pid: u32, comm: &str, count: usize, nr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_call = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|t| t.path())
            .filter(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == comm))
            .filter(|t| {
                std::fs::read_to_string(t.join("syscall"))
                    .is_ok_and(|s| s.split_whitespace().next() == Some(nr))
            })
            .count();
        if in_call == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{in_call} of {count} `{comm}` threads in syscall {nr} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Check that 5 threads waiting on a mutex held across a sleep are STALLED with the
/// holder named: its TID, its code (`hold_lock`) and its own wait, a sleep. The sleeps
/// the probes saw end are in waits.folded under `hold_lock`.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn mutex_held_while_sleeping_names_the_sleeping_holder() {
    require_root();
    let dir = scratch_dir("lock_sleep");
    let mut workload = Workload::start(&lock_sleep(), 60.0, &dir);
    workload.release();
    let holder = workload.read_value("holder");
    assert_eq!(workload.read_value("waiters"), 5);
    wait_for_threads(workload.pid, "request", 5, FUTEX);
    wait_for_threads(workload.pid, "holder", 1, CLOCK_NANOSLEEP);

    let out = stalls(workload.pid);
    let line = verdict_line(&out);
    assert!(line.starts_with("STALLED: 7 of 7 threads"), "{line}");
    assert!(line.contains("waiting in take_lock"), "{line}");
    assert!(
        line.contains(&format!(
            "5 thread(s) wait on the lock futex 0x{:x} held by TID {holder} in hold_lock, \
             which is itself sleeping (clock_nanosleep for at least",
            lock_address(&out)
        )),
        "{line}"
    );

    let rec = Recording::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--waits",
            "--duration",
            "4s",
            "--stall-threshold",
            "2s",
        ],
        &dir.join("out"),
    );
    let out = rec.wait();
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    let line = verdict_line(&text);
    assert!(line.starts_with("STALLED: 7 of 7 threads"), "{line}");
    assert!(
        line.contains(&format!(
            "held by TID {holder} in hold_lock, which is itself sleeping"
        )),
        "{line}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let verdict = &json["waits"]["processes"][0]["verdict"];
    let held = verdict["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "lock_held")
        .unwrap_or_else(|| panic!("no lock_held evidence: {verdict:#}"));
    assert_eq!(held["owner"], holder, "{held:#}");
    assert_eq!(held["waiters"], 5, "{held:#}");
    assert_eq!(held["owner_waits"]["sleeping"], true, "{held:#}");
    assert_eq!(held["owner_waits"]["frame"], "hold_lock", "{held:#}");
    // The holder's 500 ms naps, seen end by the sleep probes, with their stacks.
    let folded = read_folded(&out.join("waits.folded"));
    let slept = sum_where(&folded, |f| {
        f.get(1).map(String::as_str) == Some("sleep") && has_frame(f, "hold_lock")
    });
    show("waits.folded", &folded);
    assert!(slept >= 1_000_000, "{slept} µs of sleep under hold_lock");
}

/// The futex address of the first `futex 0x…` a stalls output names.
fn lock_address(out: &str) -> u64 {
    let at = out.find("futex 0x").expect("a futex in the output") + "futex 0x".len();
    let hex: String = out[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap()
}

/// Check that the same threads taking the same mutex for short critical sections (a
/// 1 ms nap under the lock) are not stalled.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn short_critical_sections_are_not_stalled() {
    require_root();
    let dir = scratch_dir("lock_sleep_short");
    let mut workload =
        Workload::start_with_env(&lock_sleep(), 60.0, &dir, &[("LOCK_SLEEP_SHORT", "1")]);
    workload.release();
    workload.read_value("holder");
    assert_eq!(workload.read_value("waiters"), 5);
    let out = stalls(workload.pid);
    let line = verdict_line(&out);
    assert!(line.starts_with("not stalled: "), "{line}");
    assert!(
        !out.contains("STALLED") && !out.contains("DEADLOCK"),
        "{out}"
    );
    // The lock was busy during the watch: its waiters were woken, many times.
    let wakes = out
        .lines()
        .skip_while(|l| !l.contains("futexes (waits started / wakes in window)"))
        .filter_map(|l| {
            l.trim()
                .strip_suffix(" wakes")?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(wakes >= 100, "{wakes} wakes on the busiest futex: {out}");
}

/// Check that two request threads locking two mutexes in opposite orders are a
/// DEADLOCK while six other workers keep serving (not `not stalled: 2 of 9 …`): the
/// cycle is named with both TIDs, their locks and their code.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn lock_order_deadlock_among_busy_workers_is_a_deadlock() {
    require_root();
    let dir = scratch_dir("abba_busy");
    let mut workload = Workload::start_with_env(&abba(), 60.0, &dir, &[("ABBA_WORKERS", "6")]);
    workload.release();
    assert_eq!(workload.read_value("workers"), 6);
    assert_eq!(workload.read_value("deadlocked"), 2);
    wait_for_threads(workload.pid, "transfer_ab", 1, FUTEX);
    wait_for_threads(workload.pid, "transfer_ba", 1, FUTEX);
    let tid = |name: &str| -> u32 {
        std::fs::read_dir(format!("/proc/{}/task", workload.pid))
            .unwrap()
            .filter_map(Result::ok)
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|t| t.file_name().to_str()?.parse().ok())
            .unwrap()
    };
    let (ab, ba) = (tid("transfer_ab"), tid("transfer_ba"));
    let out = stalls(workload.pid);
    let line = verdict_line(&out);
    assert!(
        line.starts_with("DEADLOCK: 2 threads wait for each other's locks"),
        "{line}"
    );
    let (first, second) = (ab.min(ba), ab.max(ba));
    assert!(
        line.contains(&format!("TID {first} in transfer waits for futex 0x"))
            && line.contains(&format!(
                "held by TID {second}; TID {second} in transfer waits for futex 0x"
            ))
            && line.contains(&format!("held by TID {first} (")),
        "{line}"
    );
    // The two, and main joining one of them; the workers are not stuck.
    assert!(line.ends_with("(3 of 9 threads stuck with them)"), "{line}");

    // The same verdict in a recording: report.txt, report.json and the SVG subtitle.
    let rec = Recording::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--waits",
            "--duration",
            "3s",
            "--stall-threshold",
            "1s",
        ],
        &dir.join("out"),
    );
    let out = rec.wait();
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    let line = verdict_line(&text);
    assert!(line.starts_with("DEADLOCK: 2 threads"), "{line}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let verdict = &json["waits"]["processes"][0]["verdict"];
    assert_eq!(verdict["verdict"], "deadlocked", "{verdict:#}");
    let mut cycle: Vec<u64> = verdict["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tid"].as_u64().unwrap())
        .collect();
    cycle.sort_unstable();
    assert_eq!(cycle, [u64::from(first), u64::from(second)], "{verdict:#}");
    let svg = std::fs::read_to_string(out.join("waits.svg")).unwrap();
    assert!(
        svg.contains(&format!(
            "DEADLOCK: TIDs {first}, {second} wait for each other"
        )),
        "no verdict in the waits.svg subtitle"
    );
}

/// Check that the same program with both request threads locking in the same order,
/// and the workers serving around them, is not stalled.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn same_lock_order_among_busy_workers_is_not_stalled() {
    require_root();
    let dir = scratch_dir("abba_ordered");
    let mut workload = Workload::start_with_env(
        &abba(),
        60.0,
        &dir,
        &[("ABBA_WORKERS", "6"), ("ABBA_ORDERED", "1")],
    );
    workload.release();
    assert_eq!(workload.read_value("workers"), 6);
    assert_eq!(workload.read_value("requests"), 2);
    let out = stalls(workload.pid);
    let line = verdict_line(&out);
    assert!(line.starts_with("not stalled: "), "{line}");
    assert!(
        !out.contains("STALLED") && !out.contains("DEADLOCK"),
        "{out}"
    );
}
