//! Root integration tests of target selection: a containerised workload found by its
//! cgroup and by its container ID, `--comm` following new and restarted processes, and
//! `--all`.
//!
//! There is no Docker engine (or any container runtime) on the test machines. A
//! container is, to the kernel and to the profiler, a process tree in its own
//! namespaces and cgroup, so the harness makes one itself: `unshare` for the mount and
//! PID namespaces, `pivot_root` into a tmpfs, and a cgroup v2 directory named the way
//! Docker's systemd cgroup driver names a container's cgroup (`docker-<64 hex>.scope`).
mod common;

use std::{
    hash::{BuildHasher, Hasher},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use common::*;

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a pure v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one (like the test machines).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split(' ').next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(left.split(' ').nth(4)?))
        })
        .expect("no cgroup2 file system mounted (see /proc/self/mountinfo)")
}

/// A fresh random 64-hex-digit container ID.
fn random_container_id() -> String {
    (0..4)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u32(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Cgroups made for one test under `<cgroup2 mount>/profiler-test-<pid>/`. Dropping
/// them kills what still runs inside and removes the directories.
struct TestCgroups {
    parent: PathBuf,
    leaves: Vec<PathBuf>,
}

impl TestCgroups {
    fn create(names: &[String]) -> Self {
        Self::create_in(&cgroup2_mount(), names)
    }

    /// Under another cgroup mount (a v1 hierarchy).
    fn create_in(mount: &Path, names: &[String]) -> Self {
        let parent = mount.join(format!("profiler-test-{}", std::process::id()));
        std::fs::create_dir_all(&parent)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", parent.display()));
        let leaves = names
            .iter()
            .map(|name| {
                let leaf = parent.join(name);
                std::fs::create_dir(&leaf)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", leaf.display()));
                leaf
            })
            .collect();
        Self { parent, leaves }
    }

    /// The cgroup's path as /proc/PID/cgroup shows it.
    fn proc_path(&self, leaf: &Path) -> String {
        let mount = self.parent.parent().unwrap();
        format!("/{}", leaf.strip_prefix(mount).unwrap().display())
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for leaf in &self.leaves {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let procs = std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
                if procs.trim().is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_dir(leaf);
        }
        let _ = std::fs::remove_dir(&self.parent);
    }
}

fn report_json(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `memory.processes` of report.json.
fn memory_processes(out: &Path) -> Vec<serde_json::Value> {
    report_json(out)["memory"]["processes"]
        .as_array()
        .unwrap()
        .clone()
}

fn process_entry(processes: &[serde_json::Value], pid: u32) -> serde_json::Value {
    processes
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in report.json: {processes:#?}"))
        .clone()
}

/// Check one capture of the containerised `prog`: only processes of the container,
/// `prog` under its host PID with namespace PID 1, container and cgroup named, growth
/// symbolized under `container <short id>;prog (pid)`.
fn assert_container_capture(out: &Path, host_pid: u32, id: &str, cgroup: &str) {
    let processes = memory_processes(out);
    for p in &processes {
        assert_eq!(
            p["container"]["id"], id,
            "a process outside the container: {p}"
        );
    }
    let prog = process_entry(&processes, host_pid);
    assert_eq!(prog["comm"], "prog");
    assert_eq!(prog["ns_pid"], 1, "{prog}");
    assert_eq!(prog["container"]["runtime"], "docker", "{prog}");
    assert_eq!(prog["cgroup"], cgroup, "{prog}");
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(
        text.contains(&format!(
            "== prog (pid {host_pid})\n   container {id} (docker), cgroup {cgroup}, pid 1 in its PID namespace"
        )),
        "report.txt: {text}"
    );

    let root = [
        format!("container {}", &id[..12]),
        format!("prog ({host_pid})"),
    ];
    let lines: Vec<_> = read_folded(&out.join("memory.folded"))
        .into_iter()
        .filter(|(f, _)| f.len() > 2 && f[..2] == root && f[2] == "anon mmap")
        .collect();
    show(&format!("{} (anon mmap of prog)", out.display()), &lines);
    let total = sum_where(&lines, |_| true);
    let under = sum_where(&lines, |f| {
        in_order(f, &[&|s| s == "main", &|s| s.contains("ns_leak_sessions")])
    });
    assert!(
        under > 0 && under as f64 >= 0.9 * total as f64,
        "main;ns_leak_sessions holds {under} of {total}"
    );
    assert!(
        lines.iter().all(|(f, _)| !has_frame(f, "[unknown]")),
        "unsymbolized frames"
    );
}

/// Check that a workload in its own mount and PID namespaces and its own cgroup, named
/// like a Docker container's, is found by `--cgroup` and by a `--container` prefix, with
/// symbolized frames and its host PID reported along with its namespace PID.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn container_found_by_cgroup_and_container_id() {
    require_root();
    let dir = scratch_dir("targets_container");
    let program = build_c(
        "ns_leak.c",
        "ns_leak_static",
        "gcc",
        &["-O1", "-g", "-fno-omit-frame-pointer", "-static"],
    );
    let id = random_container_id();
    let cgroups = TestCgroups::create(&[format!("docker-{id}.scope")]);
    let leaf = &cgroups.leaves[0];
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let workload = NsWorkload::start(&program, 6.0, &root, EnterRoot::PivotRoot, Some(leaf));
    let host_pid = workload.host_pid;
    let common = ["--memory", "--sample-bytes", "1", "--duration", "4s"];
    let mut by_cgroup = vec!["--cgroup", leaf.to_str().unwrap()];
    by_cgroup.extend(common);
    let by_cgroup = Recording::start(&by_cgroup, &dir.join("by_cgroup"));
    let mut by_container = vec!["--container", &id[..12]];
    by_container.extend(common);
    let by_container = Recording::start(&by_container, &dir.join("by_container"));
    workload.release();
    let outs = [by_cgroup.wait(), by_container.wait()];
    let leaked = workload.finish("leaked_bytes");
    assert!(leaked > 0, "the program leaked nothing");
    for out in outs {
        assert_container_capture(&out, host_pid, &id, &cgroups.proc_path(leaf));
    }
}

/// Check that a container ID prefix shared by two containers is a one-line error that
/// names both.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn ambiguous_container_prefix_is_one_line_error() {
    require_root();
    let first = random_container_id();
    let second = format!("{}{}", &first[..20], &random_container_id()[20..]);
    let cgroups = TestCgroups::create(&[
        format!("docker-{first}.scope"),
        format!("docker-{second}.scope"),
    ]);
    let mut sleepers: Vec<_> = cgroups
        .leaves
        .iter()
        .map(|leaf| {
            Command::new("sh")
                .args([
                    "-c",
                    r#"echo $$ > "$1/cgroup.procs" && exec sleep 30"#,
                    "sh",
                ])
                .arg(leaf)
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["record", "--container", &first[..16], "--duration", "1s"])
        .args(["--out", "/tmp/profiler-test-ambiguous"])
        .output()
        .unwrap();
    for sleeper in &mut sleepers {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ambiguous")
            && stderr.contains(&first[..21])
            && stderr.contains(&second[..21]),
        "{stderr}"
    );
}

/// Wait for the profiler's `following … (pid PID …` line; how long after `since` it came.
fn following_latency(lines: &Receiver<(Instant, String)>, pid: u32, since: Instant) -> Duration {
    let needle = format!("(pid {pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok((at, line)) =
        lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if line.contains("profiler: following") && line.contains(&needle) {
            return at.duration_since(since);
        }
    }
    panic!("the profiler did not pick up pid {pid} within 5 s");
}

/// Check that `--comm` picks up, within a second, a matching process started after the
/// profiler attached, and the new PID of a matching process that was killed and
/// restarted; their growth is recorded and the killed one is reported as exited.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn comm_follows_new_and_restarted_processes() {
    require_root();
    let dir = scratch_dir("targets_comm");
    let program = build_c("mmap_leak.c", "tgt_comm_leak", "gcc", FP_FLAGS);
    let barrier_dir = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut first = Workload::start(&program, 10.0, &barrier_dir("first"));
    let (rec, lines) = Recording::start_watching(
        &["--comm", "^tgt_comm_leak$", "--memory", "--duration", "8s"],
        &dir.join("out"),
    );
    first.release();
    std::thread::sleep(Duration::from_secs(1));

    let spawned = Instant::now();
    let late = Workload::start(&program, 3.0, &barrier_dir("late"));
    let late_latency = following_latency(&lines, late.pid, spawned);
    late.release();
    std::thread::sleep(Duration::from_millis(500));

    // The orchestrator's restart: the old process dies, a new one takes its place.
    let first_pid = first.pid;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let restarted_at = Instant::now();
    let restarted = Workload::start(&program, 3.0, &barrier_dir("restarted"));
    let restart_latency = following_latency(&lines, restarted.pid, restarted_at);
    restarted.release();

    let out = rec.wait();
    let (late_pid, restarted_pid) = (late.pid, restarted.pid);
    let late_leaked = late.finish("leaked_bytes");
    let restarted_leaked = restarted.finish("leaked_bytes");
    eprintln!(
        "picked up: new process after {:.0} ms, restarted process after {:.0} ms",
        late_latency.as_secs_f64() * 1e3,
        restart_latency.as_secs_f64() * 1e3
    );
    assert!(late_latency < Duration::from_secs(1), "{late_latency:?}");
    assert!(
        restart_latency < Duration::from_secs(1),
        "{restart_latency:?}"
    );

    let processes = memory_processes(&out);
    assert_eq!(process_entry(&processes, first_pid)["exited"], true);
    let lines = read_folded(&out.join("memory.folded"));
    for (pid, leaked) in [(late_pid, late_leaked), (restarted_pid, restarted_leaked)] {
        process_entry(&processes, pid);
        let root = format!("tgt_comm_leak ({pid})");
        let under = sum_where(&lines, |f| {
            f[0] == root && in_order(f, &[&|s| s == "main", &|s| s == "leak_sessions"])
        });
        eprintln!("pid {pid}: leaked {leaked}, recorded under main;leak_sessions {under}");
        assert!(leaked > 0 && under > 0, "no growth recorded for pid {pid}");
    }
}

/// Check that `--all` records a workload nobody named, adding it when its first
/// event arrives.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn all_sees_a_workload() {
    require_root();
    let dir = scratch_dir("targets_all");
    let program = build_c("mmap_leak.c", "tgt_all_leak", "gcc", FP_FLAGS);
    let workload = Workload::start(&program, 2.0, &dir);
    let rec = Recording::start(&["--all", "--memory", "--duration", "4s"], &dir.join("out"));
    workload.release();
    let out = rec.wait();
    let pid = workload.pid;
    let leaked = workload.finish("leaked_bytes");
    process_entry(&memory_processes(&out), pid);
    let root = format!("tgt_all_leak ({pid})");
    let lines = read_folded(&out.join("memory.folded"));
    let under = sum_where(&lines, |f| {
        f[0] == root && in_order(f, &[&|s| s == "main", &|s| s == "leak_sessions"])
    });
    eprintln!("leaked {leaked}, recorded under main;leak_sessions {under}");
    // 512 KiB leaks are above the 256 KiB sampling rate: every one has its stack.
    assert!(
        under as f64 >= 0.9 * leaked as f64,
        "recorded {under} of {leaked} leaked bytes"
    );
}

/// Check that a child process a `--pid` target forks after the profiler attached is
/// traced from its first mapping: with only `--pid` there is no rescan, so only the
/// kernel's fork follower can have added it, and the child's start-up mappings (the
/// dynamic loader's) show it was traced before userspace could have noticed it.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn children_of_a_pid_target_are_followed() {
    require_root();
    let dir = scratch_dir("targets_fork");
    let program = build_c("mmap_leak.c", "tgt_fork_leak", "gcc", FP_FLAGS);
    let barrier = dir.join("go");
    // A shell that waits for the barrier, then runs the leaking program as its child.
    let mut shell = Command::new("sh")
        .args([
            "-c",
            r#"while [ ! -e "$1" ]; do sleep 0.05; done; "$2" 2 - > /dev/null; true"#,
            "sh",
        ])
        .arg(&barrier)
        .arg(&program)
        .spawn()
        .unwrap();
    let shell_pid = shell.id().to_string();
    let (rec, lines) = Recording::start_watching(
        &["--pid", &shell_pid, "--memory", "--duration", "6s"],
        &dir.join("out"),
    );
    // Let the shell fork a few of its `sleep`s under the profiler first: written at
    // once, the barrier can be seen by the shell's next check with no `sleep` forked
    // since the attach, and the fork count below would then be 1.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&barrier, b"go").unwrap();
    let status = shell.wait().unwrap();
    assert!(status.success(), "the shell failed: {status}");
    let out = rec.wait();
    let followed: Vec<String> = lines
        .try_iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains("profiler: following tgt_fork_leak"))
        .collect();
    assert_eq!(followed.len(), 1, "following lines: {followed:?}");
    assert!(followed[0].ends_with("forked by a target"), "{followed:?}");
    let processes = memory_processes(&out);
    let child = processes
        .iter()
        .find(|p| p["comm"] == "tgt_fork_leak")
        .unwrap_or_else(|| panic!("the child is not in report.json: {processes:#?}"));
    let pid = child["pid"].as_u64().unwrap();
    assert_eq!(child["exited"], true);
    // The leaking program and the shell's `sleep`s.
    let forks = report_json(&out)["memory"]["forks_followed"]
        .as_u64()
        .unwrap();
    assert!(forks >= 2, "forks followed: {forks}");
    let root = format!("tgt_fork_leak ({pid})");
    let lines = read_folded(&out.join("memory.folded"));
    let leaked = sum_where(&lines, |f| {
        f[0] == root && in_order(f, &[&|s| s == "main", &|s| s == "leak_sessions"])
    });
    let loader = sum_where(&lines, |f| f[0] == root && has_frame(f, "_dl_map_object"));
    eprintln!("child {pid}: under leak_sessions {leaked}, mapped by the loader {loader}");
    assert!(leaked > 0, "no growth under leak_sessions for the child");
    assert!(loader > 0, "the child's start-up mappings were not traced");
}

/// Check that the threads a `--pid` target creates (`pthread_create`: `clone3` with
/// `CLONE_THREAD`) are not followed as processes: the fork follower counts no fork and
/// the report has the one process.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn threads_of_a_target_are_not_followed_as_processes() {
    require_root();
    let dir = scratch_dir("targets_threads");
    let program = build_c(
        "futex_pingpong.c",
        "tgt_thread_pingpong",
        "gcc",
        &["-O1", "-g", "-pthread"],
    );
    let workload = Workload::start(&program, 1.0, &dir);
    let pid = workload.pid;
    let rec = Recording::start(
        &["--pid", &pid.to_string(), "--memory", "--duration", "3s"],
        &dir.join("out"),
    );
    workload.release();
    let round_trips = workload.finish("round_trips");
    let out = rec.wait();
    let json = report_json(&out);
    assert!(round_trips > 0, "the threads did not run");
    assert_eq!(json["memory"]["forks_followed"], 0, "threads were followed");
    let pids: Vec<&serde_json::Value> = json["memory"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["pid"])
        .collect();
    assert_eq!(pids, vec![&serde_json::json!(pid)]);
}

/// Check that `--cgroup` also names a cgroup v1 hierarchy's cgroup, given as
/// `/proc/PID/cgroup` prints it (relative to the mounts), on a host with the v1 memory
/// controller (hybrid hosts like the test machines; skipped on a pure v2 host).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn cgroup_v1_path_selects_its_processes() {
    require_root();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(memory) = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let v1_memory =
            right.next()? == "cgroup" && right.nth(1)?.split(',').any(|o| o == "memory");
        v1_memory.then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
    }) else {
        eprintln!("skipped: no cgroup v1 memory hierarchy on this host");
        return;
    };
    let dir = scratch_dir("targets_cgroup_v1");
    let program = build_c("mmap_leak.c", "tgt_v1_leak", "gcc", FP_FLAGS);
    let cgroups = TestCgroups::create_in(&memory, &["app".to_string()]);
    let leaf = &cgroups.leaves[0];
    let workload = Workload::start(&program, 2.0, &dir);
    // Same program, same name, outside the cgroup: must not be selected.
    let bystander = Workload::start(&program, 2.0, &scratch_dir("targets_cgroup_v1_bystander"));
    std::fs::write(leaf.join("cgroup.procs"), workload.pid.to_string()).unwrap();
    let cgroup = cgroups.proc_path(leaf);
    let rec = Recording::start(
        &["--cgroup", &cgroup, "--memory", "--duration", "3s"],
        &dir.join("out"),
    );
    workload.release();
    let pid = workload.pid;
    let bystander_pid = bystander.pid;
    let leaked = workload.finish("leaked_bytes");
    drop(bystander);
    let out = rec.wait();
    let processes = memory_processes(&out);
    let entry = process_entry(&processes, pid);
    assert_eq!(entry["cgroup"], cgroup.as_str(), "{entry}");
    assert!(
        processes.iter().all(|p| p["pid"] != bystander_pid),
        "a process outside the cgroup was selected"
    );
    let root = format!("tgt_v1_leak ({pid})");
    let under = sum_where(&read_folded(&out.join("memory.folded")), |f| {
        f[0] == root && in_order(f, &[&|s| s == "main", &|s| s == "leak_sessions"])
    });
    eprintln!("leaked {leaked}, recorded under main;leak_sessions {under}");
    assert!(under > 0, "no growth recorded");
}
