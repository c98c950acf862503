//! Root tests of the requests verdict on the incident's servers (`testprogs/node_pool/`:
//! TypeORM over pg with a pool of 10 against a real PostgreSQL, HTTP and gRPC), attached
//! after the hang formed, as an on-call engineer would: the clients keep sending orders
//! that are read and never answered, the health check answers, and every pooled
//! connection stays silent. The healthy twin under load is not stalled.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{
    node_pool::{LoadGenerator, PoolMode, PoolServer, Service},
    postgres::PgServer,
    *,
};

const NODE: &str = "/usr/bin/node";
/// How long a server or load generator may live; every test ends well before.
const SECONDS: u64 = 300;
/// Orders that hang the pool before the profiler attaches (10 connections; 50 as the
/// servers' own test uses, so that enough overlap on a loaded machine).
const HUNG: u32 = 50;
/// New orders sent once the profiler is attached: read, never answered.
const LATE: u32 = 10;
/// The servers' pg pool.
const POOL_SIZE: u64 = 10;

/// `GET /health` on the admin listener every 200 ms (at most 150) until stopped: the
/// load balancer's probe; returns how many were answered.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl HealthProbe {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut answered = 0;
                for _ in 0..150 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = conn.write_all(
                            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        );
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
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Record the server's waits for `duration` (stall threshold 1 s); `during` runs once
/// the probes are attached, and what it returns (load generators) lives until the
/// window ends. Returns report.txt and the process's report.json entry.
fn record<T>(
    server: &PoolServer,
    out: &Path,
    duration: &str,
    during: impl FnOnce() -> T,
) -> (String, serde_json::Value) {
    let rec = Recording::start(
        &[
            "--pid",
            &server.pid.to_string(),
            "--waits",
            "--duration",
            duration,
            "--stall-threshold",
            "1s",
        ],
        out,
    );
    let load = during();
    let out = rec.wait();
    drop(load);
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    eprintln!("{text}");
    (text, json["waits"]["processes"][0].clone())
}

/// A fresh PostgreSQL and `service` in `mode` against it, in the scratch directory
/// `name`.
fn start_pool_server(
    name: &str,
    service: Service,
    mode: PoolMode,
) -> (std::path::PathBuf, PgServer, PoolServer) {
    require_root();
    assert!(Path::new(NODE).exists(), "{NODE} is missing (nodejs)");
    PgServer::stop_leftover(name);
    let dir = scratch_dir(name);
    let pg = PgServer::start(&dir);
    let server = PoolServer::start(NODE.as_ref(), service, mode, &pg, SECONDS);
    (dir, pg, server)
}

/// [`LATE`] new orders, all sent: read and never answered by a hung server.
fn late_orders(server: &PoolServer) -> LoadGenerator {
    let mut late = LoadGenerator::start(NODE.as_ref(), server, LATE, u64::from(LATE), SECONDS);
    late.wait_sent_all(Duration::from_secs(60));
    late
}

/// Hang `service` with [`HUNG`] orders, then record while [`LATE`] new orders arrive.
fn hung_verdict(service: Service, name: &str) -> (String, serde_json::Value, u16, u16, u16) {
    let (dir, pg, server) = start_pool_server(name, service, PoolMode::DoubleAcquire);
    // Bursts of HUNG orders until every order in flight waits for a client of the
    // full pool (POOL_SIZE): held for good.
    let (loads, hung) = server.hang(NODE.as_ref(), HUNG, POOL_SIZE, SECONDS);
    let answered_before = hung.answered;
    let probe = HealthProbe::start(server.admin_port);
    let (text, process) = record(&server, &dir.join("out"), "4s", || late_orders(&server));
    let answered = probe.stop();
    assert!(answered >= 5, "the health check answered only {answered}");
    let counts = server.counts();
    assert_eq!(counts.answered, answered_before, "{counts:?}");
    drop(loads);
    (text, process, server.port, server.admin_port, pg.port)
}

/// Check the hung HTTP server: STALLED (requests) on its orders route, the health check
/// answered meanwhile, and the pool to PostgreSQL named with all 10 connections silent.
/// No query string, header value or SQL text in the report.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn hung_http_server_is_stalled_naming_the_pool() {
    let (text, process, port, admin, pg) = hung_verdict(Service::Http, "requests_node_http");
    assert_eq!(process["verdict"]["verdict"], "requests", "{process:#}");
    assert!(
        text.contains(&format!("requests (POST /orders) on :{port} unanswered")),
        "{text}"
    );
    assert!(
        text.contains(&format!("(while :{admin} answered")),
        "{text}"
    );
    assert!(
        text.contains(&format!("pool to 127.0.0.1:{pg}: 10/10 connections idle")),
        "{text}"
    );
    assert!(process["verdict"]["unanswered"].as_u64().unwrap() >= 3);
    for secret in ["item-", "SELECT", "user_id", "application/json"] {
        assert!(!text.contains(secret), "{secret} in the report");
    }
}

/// Check the hung gRPC server: STALLED (requests) counting gRPC streams of
/// `/orders.Orders/CreateOrder`, and the same pool.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn hung_grpc_server_is_stalled_counting_streams() {
    let (text, process, port, _admin, pg) = hung_verdict(Service::Grpc, "requests_node_grpc");
    assert_eq!(process["verdict"]["verdict"], "requests", "{process:#}");
    assert_eq!(process["verdict"]["unit"], "gRPC streams", "{process:#}");
    assert!(
        text.contains(&format!(
            "gRPC streams (/orders.Orders/CreateOrder) on :{port} unanswered"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("pool to 127.0.0.1:{pg}: 10/10 connections idle")),
        "{text}"
    );
}

/// Check the healthy twin of the HTTP server under a steady load of 20 concurrent
/// orders: not stalled, orders answered in the window, the pool not silent.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn healthy_http_server_under_load_is_not_stalled() {
    let (dir, pg, server) =
        start_pool_server("requests_node_healthy", Service::Http, PoolMode::Healthy);
    let load = LoadGenerator::start(NODE.as_ref(), &server, 20, 1_000_000, 30);
    server.wait_counts(Duration::from_secs(60), |c| c.answered >= 50);
    let (text, process) = record(&server, &dir.join("out"), "4s", || ());
    drop(load);
    assert!(!text.contains("STALLED"), "{text}");
    assert_ne!(process["verdict"]["verdict"], "requests", "{process:#}");
    let answered: u64 = process["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["port"] == server.port)
        .map(|l| l["answered"].as_u64().unwrap())
        .sum();
    assert!(
        answered >= 20,
        "only {answered} orders answered in the window: {text}"
    );
    let silent_pool = process["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["peer"] == format!("127.0.0.1:{}", pg.port) && p["silent"] == p["open"]);
    assert!(!silent_pool, "{text}");
}

/// Check the hang as a profiler already running when it formed (a daemon, or `record`
/// started early) sees it: orders answered before the hang do not hide it, the pool's
/// connections were seen beginning their transactions, so the pool clause says they
/// are idle in transaction and names the code whose stack wrote the `BEGIN` (TypeORM's
/// `START TRANSACTION`, sent from its query runner after an await).
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn hang_seen_forming_names_where_its_transactions_began() {
    let (dir, pg, server) = start_pool_server(
        "requests_node_forming",
        Service::Http,
        PoolMode::DoubleAcquire,
    );
    let (text, process) = record(&server, &dir.join("out"), "12s", || {
        let (loads, hung) = server.hang(NODE.as_ref(), HUNG, POOL_SIZE, SECONDS);
        eprintln!("hung: {hung:?}");
        // New orders keep coming, as they did in the incident.
        (loads, late_orders(&server))
    });
    let svg = std::fs::read_to_string(dir.join("out/waits.svg")).unwrap();
    assert!(
        svg.contains(&format!("pool to 127.0.0.1:{}: 10/10 idle", pg.port)),
        "waits.svg subtitle (cut at its width after `idle`)"
    );
    assert_eq!(process["verdict"]["verdict"], "requests", "{process:#}");
    assert!(
        text.contains(&format!(
            "pool to 127.0.0.1:{} (postgres): 10/10 connections idle in transaction for",
            pg.port
        )),
        "{text}"
    );
    let pool = process["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == format!("127.0.0.1:{}", pg.port))
        .unwrap_or_else(|| panic!("no pool in {process:#}"))
        .clone();
    let origins: u64 = pool["begun_under"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["connections"].as_u64().unwrap())
        .sum();
    // Each connection's BEGIN went through JIT code compiled moments before (the pool
    // opened 9 new connections for the burst): before the space was re-read for walks
    // that stop in unknown code, 9 of the 10 stacks ended at `JS:writeGeneric`.
    assert!(
        origins * 2 >= POOL_SIZE,
        "only {origins} of {POOL_SIZE} transactions' begins named: {pool:#}"
    );
    for secret in ["item-", "SELECT", "INSERT", "user_id"] {
        assert!(!text.contains(secret), "{secret} in the report");
    }
}
