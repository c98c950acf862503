//! Root integration tests of `profiler daemon`: continuous captures across a target
//! restart, the OOM snapshot of a process killed in a memory-limited cgroup, the stall
//! snapshot, retention under `--max-disk`, `index.html` and `latest`.
mod common;
// The push tests' stand-in for Pyroscope; this file uses its server only.
#[allow(dead_code)]
#[path = "push/ingest.rs"]
mod ingest;

use std::{
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    build_c,
    daemon::{captures, wait_for, Capture, Daemon, MemCgroup},
    read_folded, require_root, scratch_dir, Workload, FP_FLAGS,
};

/// The pids a capture's memory flamegraph has a root for (`comm (pid)`).
fn pids_in(capture: &Capture) -> Vec<u32> {
    let mut pids: Vec<u32> = read_folded(&capture.path.join("memory.folded"))
        .iter()
        .filter_map(|(frames, _)| {
            let root = frames.first()?;
            root.rsplit_once(" (")?.1.strip_suffix(')')?.parse().ok()
        })
        .collect();
    let report = std::fs::read_to_string(capture.path.join("report.txt")).unwrap_or_default();
    pids.extend(report.lines().filter_map(|l| {
        l.strip_prefix("== ")?
            .split_once("(pid ")?
            .1
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u32>()
            .ok()
    }));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Seconds between consecutive interval starts, from capture.json.
fn interval_starts(caps: &[Capture]) -> Vec<f64> {
    caps.iter()
        .filter_map(|c| {
            let s = c.meta["started"].as_str()?;
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()?;
            Some(t.unix_timestamp_nanos() as f64 / 1e9)
        })
        .collect()
}

/// Check that the daemon keeps capturing every 2 s while its target is killed and
/// restarted under a new PID, that captures after the restart contain the new PID,
/// that `latest` points at the newest capture and `index.html` lists them all.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn daemon_keeps_capturing_across_a_target_restart() {
    require_root();
    let dir = scratch_dir("daemon_restart");
    // A name of its own, so that the selector matches no other test's processes.
    let program = build_c("mmap_leak.c", "dmn_restart", "gcc", FP_FLAGS);
    let first = Workload::start(&program, 60.0, &dir);
    first.release();
    let out = dir.join("out");
    let daemon = Daemon::start(
        &[
            "--comm",
            "^dmn_restart$",
            "--interval",
            "2s",
            "--stall-threshold",
            "30s",
        ],
        &out,
    );
    let before = wait_for(
        Duration::from_secs(20),
        "a capture of the first process",
        || {
            captures(&out, "")
                .into_iter()
                .find(|c| pids_in(c).contains(&first.pid))
        },
    );
    let first_pid = first.pid;
    drop(first); // SIGKILL, as an orchestrator would
    let restarted_at = std::time::SystemTime::now();
    let second = Workload::start(&program, 60.0, &dir);
    second.release();
    assert_ne!(second.pid, first_pid);
    // Captures that started after the restart.
    let after = wait_for(
        Duration::from_secs(20),
        "two captures after the restart",
        || {
            let caps: Vec<Capture> = captures(&out, "")
                .into_iter()
                .filter(|c| {
                    interval_starts(std::slice::from_ref(c))
                        .first()
                        .is_some_and(|&t| {
                            t > restarted_at
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs_f64()
                        })
                })
                .collect();
            (caps.len() >= 2).then_some(caps)
        },
    );
    let latest = std::fs::read_link(out.join("latest")).unwrap();
    let out = daemon.stop();
    let all = captures(&out, "");
    // The capture running when the first process died reports it as exited.
    assert!(all.iter().any(|c| {
        pids_in(c).contains(&first_pid)
            && std::fs::read_to_string(c.path.join("report.txt"))
                .unwrap()
                .contains("exited during the window")
    }));
    assert!(pids_in(&before).contains(&first_pid));
    for c in &after {
        assert!(
            !pids_in(c).contains(&first_pid),
            "{} (started {}) still reports the killed process {first_pid}, killed at {:.3}:\n{}\n{}",
            c.rel,
            c.meta["started"],
            restarted_at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64(),
            std::fs::read_to_string(c.path.join("report.txt")).unwrap_or_default(),
            std::fs::read_to_string(c.path.join("memory.folded")).unwrap_or_default(),
        );
        assert!(
            pids_in(c).contains(&second.pid),
            "{} lacks the restarted process {}",
            c.rel,
            second.pid
        );
        // Later intervals keep what is live across intervals and say so.
        let text = std::fs::read_to_string(c.path.join("report.txt")).unwrap();
        assert!(
            text.contains("since the process was first followed"),
            "{}: {text}",
            c.rel
        );
    }
    // latest pointed at the newest capture when it was read; now at the final one.
    assert!(all.iter().any(|c| Path::new(&c.rel) == latest));
    assert_eq!(
        std::fs::read_link(out.join("latest")).unwrap(),
        Path::new(&all.last().unwrap().rel)
    );
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let positions: Vec<usize> = all
        .iter()
        .map(|c| {
            index
                .find(&format!("href=\"{}/memory.svg\"", c.rel))
                .unwrap_or_else(|| panic!("index.html does not link {}", c.rel))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "index.html is not newest first"
    );
    let starts = interval_starts(&all);
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let jitter = gaps
        .iter()
        .take(gaps.len().saturating_sub(1)) // the last window was cut by SIGTERM
        .map(|g| (g - 2.0).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "{} captures; interval starts {gaps:.3?}; max |gap - 2 s| = {:.1} ms",
        all.len(),
        jitter * 1000.0
    );
    assert!(jitter < 0.5, "intervals drift: {gaps:?}");
}

/// Check that a target OOM-killed in a 64 MiB memory cgroup gets an `oom/` snapshot
/// naming the victim, its cgroup and the stack that grew, written at once.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn oom_kill_writes_a_snapshot_with_the_growing_stack() {
    require_root();
    let dir = scratch_dir("daemon_oom");
    let program = build_c("oom_grow.c", "oom_grow", "gcc", FP_FLAGS);
    let name = format!("profiler-test-oom-{}", std::process::id());
    let cgroup = MemCgroup::create(&name, 64 << 20);
    let mut workload = Workload::start(&program, 30.0, &dir);
    cgroup.add(workload.pid);
    let out = dir.join("out");
    let daemon = Daemon::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--interval",
            "60s",
            "--sample-bytes",
            "64KiB",
        ],
        &out,
    );
    workload.release();
    let status = workload.child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "not OOM-killed: {status}");
    let oom = wait_for(Duration::from_secs(10), "the oom/ snapshot", || {
        captures(&out.join("oom"), "oom/").into_iter().next()
    });
    // The line follows the snapshot's files: the daemon prints it once they are
    // written, and the test's reader thread takes a moment to see it.
    wait_for(Duration::from_secs(5), "the daemon's OOM kill line", || {
        daemon.said("OOM kill of oom_grow").then_some(())
    });
    let out = daemon.stop();
    assert!(
        oom.rel.ends_with(&format!("-oom_grow-{}", workload.pid)),
        "{}",
        oom.rel
    );
    assert_eq!(oom.meta["kind"], "oom");
    assert_eq!(oom.meta["comm"], "oom_grow");
    assert!(
        oom.meta["cgroup"].as_str().unwrap().ends_with(&name),
        "{}",
        oom.meta["cgroup"]
    );
    let text = std::fs::read_to_string(oom.path.join("oom.txt")).unwrap();
    assert!(
        text.contains(&format!("oom_grow (pid {})", workload.pid)),
        "{text}"
    );
    assert!(text.contains(&name), "{text}");
    // The ledger held before the kill: most of the 64 MiB under grow_until_killed.
    let folded = read_folded(&oom.path.join("memory.folded"));
    let grown = common::sum_where(&folded, |f| {
        common::has_frame(f, "grow_until_killed") && common::has_frame(f, "map_chunk")
    });
    assert!(
        grown >= 32 << 20,
        "only {grown} bytes under grow_until_killed"
    );
    // The allocation that hit the limit, from the victim's own stack at the kill. Its
    // leaf may be new code, which cannot be symbolized once the victim's files are gone
    // from /proc; the frames below it were seen (and named) while it was alive.
    assert!(text.contains("allocation that hit the limit"), "{text}");
    assert!(text.contains("\n  main\n"), "{text}");
    let latency = oom.meta["latency_ms"].as_f64().unwrap();
    eprintln!("OOM snapshot written {latency:.1} ms after the kill; {grown} bytes under grow_until_killed");
    assert!(latency < 2000.0, "snapshot took {latency} ms");
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains(&format!("href=\"{}/oom.txt\"", oom.rel)));
}

/// Check that a pool deadlock gets a `stall/` snapshot with the blocked stacks soon
/// after it passes the stall threshold, and only one (rate-limited).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn stall_verdict_writes_one_stall_snapshot() {
    require_root();
    let dir = scratch_dir("daemon_stall");
    let program = build_c(
        "pool_deadlock.c",
        "pool_deadlock",
        "gcc",
        &[FP_FLAGS, &["-pthread"]].concat(),
    );
    let workload = Workload::start(&program, 30.0, &dir);
    let out = dir.join("out");
    let daemon = Daemon::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--waits",
            "--interval",
            "60s",
            "--stall-threshold",
            "2s",
        ],
        &out,
    );
    workload.release();
    let stall = wait_for(Duration::from_secs(15), "the stall/ snapshot", || {
        captures(&out.join("stall"), "stall/").into_iter().next()
    });
    std::thread::sleep(Duration::from_secs(3));
    let out = daemon.stop();
    assert_eq!(captures(&out.join("stall"), "stall/").len(), 1);
    let text = std::fs::read_to_string(stall.path.join("report.txt")).unwrap();
    // Requests arrive 0.1 s before their workers block on the pool, so whichever
    // verdict crosses the threshold first at the daemon's tick names the stall: the
    // four blocked workers are in the snapshot either way.
    assert!(
        text.contains("STALLED: 4 of 5 threads")
            || text.contains("STALLED (requests): 4 requests (POST /orders)"),
        "{text}"
    );
    assert!(text.contains("4 thread(s)"), "{text}");
    assert!(text.contains("acquire_nested"), "{text}");
    let waits = read_folded(&stall.path.join("waits.folded"));
    assert!(waits
        .iter()
        .any(|(f, _)| common::has_frame(f, "acquire_nested")));
}

/// Check that with a small `--max-disk` the oldest captures are deleted, everything in
/// DIR stays under the bound, a file the daemon did not write is left alone, and
/// `index.html` lists exactly the captures that are left.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn retention_keeps_the_output_under_max_disk() {
    require_root();
    let dir = scratch_dir("daemon_retention");
    let program = build_c("mmap_leak.c", "dmn_retention", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 60.0, &dir);
    workload.release();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Not the daemon's: a name like a capture, but no marker.
    let foreign = out.join("2000-01-01T00-00-00Z");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let bound: u64 = 512 << 10;
    let daemon = Daemon::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--interval",
            "1s",
            "--max-disk",
            "512KiB",
        ],
        &out,
    );
    let first = wait_for(Duration::from_secs(10), "the first capture", || {
        captures(&out, "").into_iter().find(|c| c.path != foreign)
    });
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        peak = peak.max(own_usage(&out, &foreign));
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = daemon.stop();
    let left: Vec<Capture> = captures(&out, "")
        .into_iter()
        .filter(|c| c.path != foreign)
        .collect();
    assert!(!first.path.exists(), "the oldest capture was not deleted");
    assert!(left.len() >= 2, "only {} captures left", left.len());
    let total = own_usage(&out, &foreign);
    // Between two passes a new capture may sit on top of the bound until retention runs
    // right after it; once the daemon is done everything fits.
    eprintln!(
        "{} captures left, {total} bytes on disk (bound {bound}); peak seen while running {peak}",
        left.len()
    );
    assert!(total <= bound, "{total} bytes exceed the bound {bound}");
    assert!(
        foreign.join("notes.txt").exists(),
        "deleted a directory it did not write"
    );
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    for c in &left {
        assert!(
            index.contains(&format!("href=\"{}/\"", c.rel)),
            "{} missing",
            c.rel
        );
    }
    assert_eq!(index.matches("<tr class=").count(), left.len());
    assert_eq!(
        std::fs::read_link(out.join("latest")).unwrap(),
        Path::new(&left.last().unwrap().rel)
    );
}

/// Disk usage (allocated blocks, as `du`) of DIR without the foreign directory.
fn own_usage(out: &Path, foreign: &Path) -> u64 {
    du(out) - du(foreign)
}

fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            total += du(&entry.path());
        }
    }
    total
}

/// Check that with `--push-url` every interval's pprof profiles reach the server's
/// ingest API, labelled with the process, while the captures stay on disk.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn intervals_are_pushed_to_pyroscope() {
    require_root();
    let dir = scratch_dir("daemon_push");
    let program = build_c("mmap_leak.c", "dmn_push", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 60.0, &dir);
    workload.release();
    let server = ingest::Server::start(&[]);
    let url = server.url();
    let daemon = Daemon::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--interval",
            "1s",
            "--push-url",
            &url,
        ],
        &dir.join("out"),
    );
    let pushed = wait_for(Duration::from_secs(20), "two intervals pushed", || {
        let profiles: Vec<ingest::Seen> = server
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/ingest")
            .collect();
        let intervals: std::collections::BTreeSet<&str> = profiles
            .iter()
            .filter_map(|r| r.query.get("from").map(String::as_str))
            .collect();
        (intervals.len() >= 2).then_some(profiles.clone())
    });
    let out = daemon.stop();
    for r in &pushed {
        let name = r.query.get("name").map_or("", String::as_str);
        assert!(name.contains("dmn_push"), "no process label: {name}");
        assert_eq!(r.query.get("format").map(String::as_str), Some("pprof"));
        assert!(r.body.len() > 100, "empty profile upload: {name}");
    }
    assert!(!captures(&out, "").is_empty(), "captures must stay on disk");
    eprintln!("{} profile uploads seen", pushed.len());
}

/// Check that a target crossing `--rss-threshold` gets one `rss/` snapshot with its
/// growing stack, and that SIGHUP cuts an interval at once (the interval is 60 s).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn rss_threshold_snapshot_and_sighup_interval() {
    require_root();
    let dir = scratch_dir("daemon_rss");
    let program = build_c("mmap_leak.c", "dmn_rss", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 60.0, &dir);
    let out = dir.join("out");
    let daemon = Daemon::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--interval",
            "60s",
            "--rss-threshold",
            "64MiB",
        ],
        &out,
    );
    workload.release();
    let rss = wait_for(Duration::from_secs(20), "the rss/ snapshot", || {
        captures(&out.join("rss"), "rss/").into_iter().next()
    });
    let text = std::fs::read_to_string(rss.path.join("rss.txt")).unwrap();
    assert!(text.contains("crossed 64.0 MiB"), "{text}");
    let folded = read_folded(&rss.path.join("memory.folded"));
    let leaked = common::sum_where(&folded, |f| common::has_frame(f, "leak_sessions"));
    assert!(
        leaked >= 32 << 20,
        "only {leaked} bytes under leak_sessions"
    );
    assert!(captures(&out, "").is_empty(), "an interval before its time");
    let hup = Instant::now();
    daemon.signal("HUP");
    wait_for(Duration::from_secs(5), "the interval cut by SIGHUP", || {
        captures(&out, "").into_iter().next()
    });
    eprintln!("SIGHUP interval written after {:?}", hup.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let out = daemon.stop();
    assert_eq!(
        captures(&out.join("rss"), "rss/").len(),
        1,
        "one crossing, one snapshot"
    );
    assert_eq!(
        captures(&out, "").len(),
        2,
        "the SIGHUP interval and the last one"
    );
}

/// Check that an interval the daemon cannot write whole (its disk is full) leaves no
/// directory behind and is listed as failed in the index, with the reason.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn a_full_disk_leaves_no_partial_interval() {
    require_root();
    let dir = scratch_dir("daemon_full_disk");
    let program = build_c("mmap_leak.c", "dmn_full", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 30.0, &dir);
    workload.release();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Room for the index and a report, not for a whole interval with its flamegraphs.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24k", "profiler-test-full"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&out);
    let daemon = Daemon::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--memory",
            "--interval",
            "1s",
        ],
        &out,
    );
    wait_for(
        Duration::from_secs(15),
        "a failed interval in the index",
        || {
            let index = std::fs::read_to_string(out.join("index.html")).ok()?;
            index.contains("failed, nothing kept").then_some(())
        },
    );
    let out = daemon.stop();
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("No space left on device"), "{index}");
    // Every interval failed, so nothing but the index (and perhaps `latest`) is there.
    let debris: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n != "index.html" && n != "latest")
        .collect();
    assert!(debris.is_empty(), "left behind: {debris:?}");
}
