//! Root integration tests of the blocked-on view and the stall verdict.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;

const PTHREAD: &[&str] = &["-O2", "-g", "-pthread"];

fn report_json(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
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

/// Check the STALLED verdict of a finished record on the pool deadlock: all 4 workers on
/// one futex with no wake, stacks through `acquire_nested`.
fn assert_pool_stalled(out: &std::path::Path) {
    let json = report_json(out);
    let p = &json["waits"]["processes"][0];
    assert_eq!(p["verdict"]["verdict"], "stalled", "{p:#}");
    assert_eq!(p["verdict"]["stuck"], 4, "{p:#}");
    let group = &p["in_flight"][0];
    assert_eq!(group["tids"].as_array().unwrap().len(), 4, "{group:#}");
    assert!(group["on"].as_str().unwrap().starts_with("futex 0x"));
    assert_eq!(group["wakes"], 0);
    let stack: Vec<&str> = group["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(stack.contains(&"acquire_nested"), "{stack:?}");
    // The evidence that this is a stall and not idle workers: the requests the workers
    // never took are still queued on the listener.
    let evidence = p["verdict"]["evidence"].as_array().unwrap();
    assert!(
        evidence
            .iter()
            .any(|e| e["kind"] == "queued_connections" && e["queued"] == 2),
        "{p:#}"
    );
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(text.contains("STALLED: 4 of 5 threads"), "{text}");
    assert!(
        text.contains("unmet demand: 2 connection(s) queued unaccepted on 127.0.0.1:"),
        "{text}"
    );
    let folded = read_folded(&out.join("waits.folded"));
    assert!(
        sum_where(&folded, |f| f.get(1).map(String::as_str) == Some("futex")
            && has_frame(f, "acquire_nested"))
            > 0
    );
    let svg = std::fs::read_to_string(out.join("waits.svg")).unwrap();
    assert!(svg.contains("Blocked on"));
    assert!(
        svg.contains("queued on 127.0.0.1:"),
        "no evidence in the subtitle"
    );
}

/// Check that a pool deadlock that begins after the profiler attached is STALLED, both
/// in `record` and in `stalls`.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn pool_deadlock_after_attach_is_stalled() {
    require_root();
    let dir = scratch_dir("pool_after");
    let program = build_c("pool_deadlock.c", "pool_deadlock", "gcc", PTHREAD);
    let mut workload = Workload::start(&program, 30.0, &dir);
    let pid = workload.pid;
    let rec = Recording::start(
        &[
            "--pid",
            &pid.to_string(),
            "--waits",
            "--duration",
            "5s",
            "--stall-threshold",
            "3s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let out = rec.wait();
    assert_pool_stalled(&out);
    let verdict = stalls(pid);
    assert!(verdict.contains("STALLED: 4 of 5 threads"), "{verdict}");
    assert!(verdict.contains("acquire_nested"), "{verdict}");
    let _ = workload.child.kill();
}

/// Check that a pool deadlock already in place before the profiler attached (no wait
/// start seen by the probes) is found from the snapshot alone.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn pool_deadlock_before_attach_is_stalled() {
    require_root();
    let dir = scratch_dir("pool_before");
    let program = build_c("pool_deadlock.c", "pool_deadlock", "gcc", PTHREAD);
    let mut workload = Workload::start(&program, 30.0, &dir);
    workload.release();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = workload.pid;
    let verdict = stalls(pid);
    assert!(verdict.contains("STALLED: 4 of 5 threads"), "{verdict}");
    assert!(verdict.contains("acquire_nested"), "{verdict}");
    assert!(
        verdict.contains("unmet demand: 2 connection(s) queued unaccepted"),
        "{verdict}"
    );
    let rec = Recording::start(
        &[
            "--pid",
            &pid.to_string(),
            "--duration",
            "5s",
            "--stall-threshold",
            "3s",
        ],
        &dir.join("out"),
    );
    let out = rec.wait();
    assert_pool_stalled(&out);
    let _ = workload.child.kill();
}

/// Check that a futex storm of waits shorter than the threshold is counted in the
/// kernel without sending stacks, and that lost events are reported (and zero here).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn futex_storm_is_counted_not_streamed() {
    require_root();
    let dir = scratch_dir("futex_storm");
    let program = build_c("futex_pingpong.c", "futex_pingpong", "gcc", PTHREAD);
    let workload = Workload::start(&program, 3.0, &dir);
    let rec = Recording::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--waits",
            "--duration",
            "10s",
        ],
        &dir.join("out"),
    );
    workload.release();
    let round_trips = workload.finish("round_trips");
    let out = rec.wait();
    let json = report_json(&out);
    let short = json["waits"]["short_waits"].as_u64().unwrap();
    let completed: u64 = json["waits"]["processes"][0]["completed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    eprintln!("round trips {round_trips}, short waits {short}, waits with stacks {completed}");
    assert!(round_trips > 1000, "the storm did not run");
    assert!(short > 1000, "short waits were not counted: {short}");
    assert!(
        completed * 100 <= short,
        "{completed} stacks sent for {short} short waits"
    );
    assert_eq!(
        json["events_lost"].as_u64(),
        Some(0),
        "events lost must be reported (and none here)"
    );
}

/// Check that a lock-order deadlock (two threads each waiting for the glibc mutex the
/// other holds, already in place when the profiler attaches) is a DEADLOCK: the owners
/// are read from the mutexes in the process's memory.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn lock_order_deadlock_is_a_lock_cycle() {
    require_root();
    let dir = scratch_dir("abba");
    let program = build_c(
        "abba_deadlock.c",
        "abba_deadlock",
        "gcc",
        &[FP_FLAGS, &["-pthread"]].concat(),
    );
    let mut workload = Workload::start(&program, 30.0, &dir);
    workload.release();
    assert_eq!(workload.read_value("deadlocked"), 2);
    std::thread::sleep(Duration::from_millis(500));
    let verdict = stalls(workload.pid);
    assert!(
        verdict.contains("DEADLOCK: 2 threads wait for each other's locks"),
        "{verdict}"
    );
    assert!(
        verdict.contains(" in transfer waits for futex 0x"),
        "{verdict}"
    );
    assert!(
        verdict.contains("(3 of 3 threads stuck with them)"),
        "{verdict}"
    );
}

/// Asks a loopback health endpoint every 200 ms (at most 100 times) until dropped, and
/// counts the answers, as a load balancer's probe would.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl HealthProbe {
    fn start(port: u16, request: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut answered = 0;
                for _ in 0..100 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    conn.write_all(request.as_bytes()).unwrap();
                    let mut answer = String::new();
                    let _ = conn.read_to_string(&mut answer);
                    answered += u32::from(answer.contains("ok"));
                    std::thread::sleep(Duration::from_millis(200));
                }
                answered
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop probing; the number of probes answered.
    fn stop(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Check the idle verdict of a finished record: `idle` in report.json, the sentence in
/// report.txt, and the short form in the waits.svg subtitle.
fn assert_recorded_idle(out: &Path, waiting: &str) {
    let json = report_json(out);
    let p = &json["waits"]["processes"][0];
    assert_eq!(p["verdict"]["verdict"], "idle", "{p:#}");
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(!text.contains("STALLED"), "{text}");
    assert!(text.contains(waiting), "{text}");
    let svg = std::fs::read_to_string(out.join("waits.svg")).unwrap();
    assert!(svg.contains("idle"), "no idle verdict in the subtitle");
}

/// Check that a healthy worker pool with nothing to do (8 threads in `pthread_cond_wait`
/// since before the profiler attached, nothing queued anywhere) is idle, not STALLED.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn idle_pool_is_idle() {
    require_root();
    let dir = scratch_dir("idle_pool");
    let program = build_c(
        "idle_pool.c",
        "idle_pool",
        "gcc",
        &[FP_FLAGS, &["-pthread"]].concat(),
    );
    let mut workload = Workload::start(&program, 30.0, &dir);
    workload.release();
    assert_eq!(workload.read_value("workers"), 8);
    std::thread::sleep(Duration::from_millis(300));
    let verdict = stalls(workload.pid);
    assert!(
        verdict.contains("not stalled: idle (8 threads waiting for work in worker_wait_for_job"),
        "{verdict}"
    );
    assert!(verdict.contains("no listening socket"), "{verdict}");
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
    assert_recorded_idle(
        &rec.wait(),
        "8 threads waiting for work in worker_wait_for_job",
    );
}

/// Check that the idle pool with a health-check thread that answers a probe every
/// 200 ms on a loopback listener is idle too: the probes are answered, nothing queues.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn idle_pool_with_health_check_is_idle() {
    require_root();
    let dir = scratch_dir("idle_pool_health");
    let program = build_c(
        "idle_pool.c",
        "idle_pool",
        "gcc",
        &[FP_FLAGS, &["-pthread"]].concat(),
    );
    let mut workload = Workload::start_with_env(&program, 30.0, &dir, &[("IDLE_POOL_HEALTH", "1")]);
    workload.release();
    let port = u16::try_from(workload.read_value("health_port")).unwrap();
    let probe = HealthProbe::start(port, "GET /health HTTP/1.0\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let verdict = stalls(workload.pid);
    assert!(
        verdict.contains("not stalled: idle (8 threads waiting for work in worker_wait_for_job"),
        "{verdict}"
    );
    assert!(
        verdict.contains("nothing queued on 1 listener(s)"),
        "{verdict}"
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
    assert_recorded_idle(
        &rec.wait(),
        "8 threads waiting for work in worker_wait_for_job",
    );
    let answered = probe.stop();
    eprintln!("health probes answered: {answered}");
    assert!(
        answered >= 10,
        "the health check answered only {answered} probes"
    );
}

const NODE: &str = "/usr/bin/node";

/// An executable that runs `testprogs/idle_server.js` with Debian's node, started like
/// the C programs (`exec` keeps the pid node prints).
fn node_idle_server(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testprogs/idle_server.js")
        .canonicalize()
        .unwrap();
    let wrapper = dir.join("idle-server-js");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {NODE} {} \"$@\"\n", script.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Check that an idle Node.js HTTP server (its event loop in `epoll_wait`, its helper
/// threads waiting for tasks) answering health probes is idle, not STALLED.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn idle_node_server_is_idle() {
    require_root();
    assert!(
        Path::new(NODE).exists(),
        "{NODE} is missing (Debian package nodejs)"
    );
    let dir = scratch_dir("idle_node");
    let mut workload = Workload::start(&node_idle_server(&dir), 30.0, &dir);
    workload.release();
    let port = u16::try_from(workload.read_value("port")).unwrap();
    let probe = HealthProbe::start(port, "GET /health HTTP/1.0\r\n\r\n");
    std::thread::sleep(Duration::from_millis(500));
    let verdict = stalls(workload.pid);
    assert!(verdict.contains("not stalled: idle"), "{verdict}");
    let answered = probe.stop();
    assert!(answered >= 5, "node answered only {answered} probes");
}
