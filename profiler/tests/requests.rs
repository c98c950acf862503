//! Root integration tests of the connection ledger and the requests verdict: a Node.js
//! server hung on promises (its pool exhausted by requests that hold a connection and
//! wait for another) is STALLED (requests), its healthy twin under the same load is not.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
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

const NODE: &str = "/usr/bin/node";
const POOL_SIZE: &str = "4";

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

/// The pool's "database": a loopback listener that answers every read with `ok`.
fn start_peer() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                    if conn.write_all(b"ok\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// The load: `POST /orders` on a new connection, a burst of 8 and then one every
/// 50 ms (at most 400), plus `GET /health` every 200 ms, until dropped. Connections are
/// kept open (unread) so that a hung request stays in flight.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u32>>,
}

impl Load {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let orders = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut open = Vec::new();
                for i in 0..400 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = conn.write_all(
                            b"POST /orders?customer=4711 HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\n\r\n{}",
                        );
                        open.push(conn);
                    }
                    if i >= 8 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                open.len() as u32
            }
        });
        let health = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut answered = 0;
                for _ in 0..200 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
                        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let _ = conn.write_all(b"GET /health HTTP/1.0\r\n\r\n");
                        let mut answer = String::new();
                        let _ = conn.read_to_string(&mut answer);
                        answered += u32::from(answer.contains("ok"));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                answered
            }
        });
        Self {
            stop,
            threads: vec![orders, health],
        }
    }

    /// Stop; (orders sent, health checks answered).
    fn stop(self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let mut counts = self.threads.into_iter().map(|t| t.join().unwrap());
        (counts.next().unwrap(), counts.next().unwrap())
    }
}

/// An executable that runs `testprogs/pool_hang.js` with Debian's node (`exec` keeps
/// the pid node prints).
fn pool_server(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testprogs/pool_hang.js")
        .canonicalize()
        .unwrap();
    let wrapper = dir.join("pool-hang-js");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {NODE} {} \"$@\"\n", script.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Start the server in `mode` against a fresh peer: (workload, its port, the peer's).
fn start_server(name: &str, mode: &str) -> (Workload, PathBuf, u16, u16) {
    require_root();
    assert!(
        Path::new(NODE).exists(),
        "{NODE} is missing (Debian package nodejs)"
    );
    let dir = scratch_dir(name);
    let peer = start_peer();
    let peer_port = peer.to_string();
    let mut workload = Workload::start_with_env(
        &pool_server(&dir),
        60.0,
        &dir,
        &[
            ("POOL_PEER", &peer_port),
            ("POOL_SIZE", POOL_SIZE),
            ("POOL_MODE", mode),
        ],
    );
    workload.release();
    let port = u16::try_from(workload.read_value("port")).unwrap();
    (workload, dir, port, peer)
}

/// Check the hung server, attached after the hang formed: `stalls` says STALLED
/// (requests) with the unanswered route, the health check answered meanwhile and the
/// pool whose every connection stayed silent; `record` says the same in report.txt,
/// report.json and the waits.svg subtitle. Never a query string.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn hung_pool_server_is_stalled_on_requests() {
    let (mut workload, dir, port, peer) = start_server("requests_hung", "hung");
    let load = Load::start(port);
    assert_eq!(workload.read_value("exhausted"), 1);
    std::thread::sleep(Duration::from_millis(300));
    let verdict = stalls(workload.pid);
    assert!(verdict.contains("STALLED (requests): "), "{verdict}");
    assert!(
        verdict.contains(&format!("requests (POST /orders) on :{port} unanswered")),
        "{verdict}"
    );
    assert!(
        verdict.contains(&format!("while GET /health on :{port} answered")),
        "{verdict}"
    );
    assert!(
        verdict.contains(&format!(
            "pool to 127.0.0.1:{peer}: {POOL_SIZE}/{POOL_SIZE} connections idle"
        )),
        "{verdict}"
    );
    assert!(!verdict.contains("customer"), "{verdict}");

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
    assert!(text.contains("STALLED (requests): "), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let p = &json["waits"]["processes"][0];
    assert_eq!(p["verdict"]["verdict"], "requests", "{p:#}");
    assert_eq!(p["verdict"]["port"], port, "{p:#}");
    let svg = std::fs::read_to_string(out.join("waits.svg")).unwrap();
    assert!(
        svg.contains("STALLED (requests)"),
        "no verdict in the subtitle"
    );
    let (sent, health) = load.stop();
    eprintln!("orders sent {sent}, health checks answered {health}");
    assert!(health >= 5, "the health check answered only {health}");
    let _ = workload.child.kill();
}

/// Check the healthy twin (one connection per request) under the same load: not
/// STALLED, and it did answer the orders.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn healthy_pool_server_is_not_stalled() {
    let (mut workload, _dir, port, _peer) = start_server("requests_healthy", "healthy");
    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(800));
    let verdict = stalls(workload.pid);
    assert!(!verdict.contains("STALLED"), "{verdict}");
    let (sent, health) = load.stop();
    eprintln!("orders sent {sent}, health checks answered {health}");
    let _ = workload.child.kill();
    let _ = workload.child.wait();
    assert!(sent >= 20, "the load sent only {sent} orders");
}

/// Check that connections no framer can read cost no record per transfer and are
/// still seen: a client chatting binary bytes on one connection and keeping another
/// silent, recorded after both were open. The chatty connection is not silent, the
/// quiet one is; the saved stream carries the kernel's byte totals as one event of many
/// transfers (count-only engaged and read at the window's end), and the socket records
/// stay well below the transfers made in the window. (The debug build takes about a
/// second to unwind its first stack, and every transfer until then is a record.)
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn opaque_connections_are_counted_in_the_kernel() {
    require_root();
    let dir = scratch_dir("requests_opaque");
    let program = build_c("opaque_chatter.c", "opaque_chatter", "gcc", &["-O1", "-g"]);
    let (chatter, silent) = (start_peer(), start_peer());
    let mut workload = Workload::start_with_env(
        &program,
        10.0,
        &dir,
        &[
            ("CHATTER_PORT", &chatter.to_string()),
            ("SILENT_PORT", &silent.to_string()),
        ],
    );
    workload.release();
    let before = workload.read_value("transfers");
    let stream = dir.join("capture.records");
    let rec = Recording::start(
        &[
            "--pid",
            &workload.pid.to_string(),
            "--waits",
            "--duration",
            "6s",
            "--save-records",
            stream.to_str().unwrap(),
        ],
        &dir.join("out"),
    );
    let out = rec.wait();
    let transfers = workload.finish("transfers") - before;
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    eprintln!("{text}");
    for (port, silent) in [(chatter, 0), (silent, 1)] {
        let line =
            format!("connections to 127.0.0.1:{port}: 1 open, {silent} silent the whole window");
        assert!(text.contains(&line), "no {line:?} in {text}");
    }
    let records = text
        .split("socket records (connection ledger) ")
        .nth(1)
        .and_then(|rest| rest.split(',').next()?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no socket record count in {text}"));
    eprintln!("{transfers} transfers while the program ran, {records} socket records");
    assert!(
        transfers >= 3000,
        "the client made only {transfers} transfers"
    );
    assert!(
        records * 2 < transfers,
        "{records} socket records for {transfers} transfers: not count-only"
    );
    let mut saved = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&stream).unwrap()),
        &mut saved,
    )
    .unwrap();
    let biggest_write = saved
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["record"]["conn"]["event"]["Bytes"]["written"].as_u64()
        })
        .max()
        .unwrap_or(0);
    assert!(
        biggest_write >= 16 * 100,
        "no byte totals from the kernel in the stream (largest write {biggest_write} bytes)"
    );
}
