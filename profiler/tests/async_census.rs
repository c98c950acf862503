//! Root integration tests of the census of suspended async functions, on the Node pool
//! servers (`testprogs/node_pool/`, Debian's Node 20, no flags) against a real
//! PostgreSQL: attached after the hang formed, the census names the request handler
//! and the function waiting for the second connection, with the server's own counts;
//! an idle server and a busy healthy one show no or only a few suspended handlers.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    node_pool::{musl_node, LoadGenerator, PoolMode, PoolServer, Service},
    postgres::PgServer,
    *,
};

const NODE: &str = "/usr/bin/node";
/// How long a server may live; every test ends well before (and kills it).
const SERVER_SECONDS: u64 = 600;
/// Orders sent at once to a hung server.
const HUNG_ORDERS: u32 = 100;
/// The servers' pool size: as many transactions wait for a second connection.
const POOL_SIZE: u64 = 10;
/// The function of orders.js that asks the pool for the second connection.
const NESTED: &str = "loadUserWithAudit";

/// `profiler record --waits` of `pid` for a short window; its report.json.
fn record(pid: u32, out: &Path) -> serde_json::Value {
    let rec = Recording::start(
        &["--pid", &pid.to_string(), "--waits", "--duration", "2s"],
        out,
    );
    let dir = rec.wait();
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The census of the (only) process of a report.
fn census(report: &serde_json::Value) -> &serde_json::Value {
    let census = &report["waits"]["processes"][0]["async_census"];
    assert!(
        census["census"].is_object(),
        "no census in report.json: {census:#}"
    );
    &census["census"]
}

/// Suspended calls whose await chain starts (outermost) in `function`, and those
/// whose chain passes through `nested`.
fn chains_through(census: &serde_json::Value, outer: &str, nested: &str) -> (u64, u64) {
    let mut from_outer = 0;
    let mut through_nested = 0;
    for chain in census["chains"].as_array().unwrap() {
        let names: Vec<&str> = chain["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap())
            .collect();
        let count = chain["count"].as_u64().unwrap();
        if names.first() == Some(&outer) {
            from_outer += count;
            if names.contains(&nested) {
                through_nested += count;
            }
        }
    }
    (from_outer, through_nested)
}

/// Suspended calls of `function` in the census's groups.
fn group_count(census: &serde_json::Value, function: &str) -> u64 {
    census["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["function"] == function)
        .map(|g| g["count"].as_u64().unwrap())
        .sum()
}

/// `profiler stalls --pid PID`: its standard output.
fn stalls(pid: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["stalls", "--pid", &pid.to_string(), "--watch", "1s"])
        .output()
        .expect("running profiler stalls");
    assert!(out.status.success(), "stalls failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Hang `service` on `node` with [`HUNG_ORDERS`] orders, then check the census as
/// the tests below describe.
fn check_hung(node: &Path, service: Service, pg: &PgServer, dir: &Path) {
    let server = PoolServer::start(node, service, PoolMode::DoubleAcquire, pg, SERVER_SECONDS);
    // A few orders may get both connections before the pool fills up and finish;
    // once every order in flight waits for a client of the full pool, none ever will.
    let (_loads, before) = server.hang(node, HUNG_ORDERS, POOL_SIZE, SERVER_SECONDS);
    assert!(before.inflight >= u64::from(HUNG_ORDERS) - 10, "{before:?}");
    let handler = service.handler();
    let out = dir.join(format!("{service:?}"));
    let report = record(server.pid, &out);
    let census = census(&report);
    eprintln!("{service:?} census: {census:#}");
    let after = server.counts();
    assert_eq!(after, before, "the hang changed during the census");
    let inflight = after.inflight;
    let (outer, nested) = chains_through(census, handler, NESTED);
    assert!(
        outer.abs_diff(inflight) * 100 <= inflight * 5,
        "{service:?}: {outer} chains from {handler}, {inflight} orders in flight"
    );
    assert!(
        group_count(census, handler).abs_diff(inflight) * 100 <= inflight * 5,
        "{service:?}: {} suspended {handler}, {inflight} in flight",
        group_count(census, handler)
    );
    assert!(
        (POOL_SIZE - 1..=POOL_SIZE).contains(&nested),
        "{service:?}: {nested} chains through {NESTED}, pool of {POOL_SIZE}"
    );
    let folded = std::fs::read_to_string(out.join("waiting.folded")).expect("waiting.folded");
    assert!(
        folded
            .lines()
            .any(|l| l.contains(&format!(";{handler} (")) && l.contains(&format!(";{NESTED} ("))),
        "{folded}"
    );

    let printed = stalls(server.pid);
    let line = printed
        .lines()
        .find(|l| l.contains("waiting in async code:"))
        .unwrap_or_else(|| panic!("no census line in:\n{printed}"));
    eprintln!("{service:?} on {}: {}", node.display(), line.trim());
    assert!(line.contains(&format!("× {handler} (")), "{line}");
    assert!(line.contains(&format!("{NESTED} (orders.js:")), "{line}");
    // V8 compacts its heap a few seconds after the hang quiets it: a census scanned
    // during that is not the one shown.
    assert!(line.contains("scans agreed"), "{line}");
    assert!(
        server.healthy(),
        "{service:?}: the health check stopped answering"
    );
}

/// Check both hung servers on Debian's Node 20, attached after the hang formed: the
/// census chains start in the request handler as often as the server counts orders
/// in flight (within 5 %), ten of them (the pool) pass through `loadUserWithAudit`,
/// `stalls` prints both names in its `waiting in async code` line, waiting.folded
/// holds the chain, and the health check still answers.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn hung_servers_name_handler_and_nested_wait() {
    require_root();
    PgServer::stop_leftover("async_census_hung");
    let dir = scratch_dir("async_census_hung");
    let pg = PgServer::start(&dir);
    for service in [Service::Http, Service::Grpc] {
        check_hung(NODE.as_ref(), service, &pg, &dir);
    }
}

/// Check the same on the musl builds of node (as `node:alpine` runs them): the HTTP
/// server on Node 24, the gRPC server on Node 22.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn hung_servers_on_musl_node_22_and_24() {
    require_root();
    PgServer::stop_leftover("async_census_musl");
    let dir = scratch_dir("async_census_musl");
    let pg = PgServer::start(&dir);
    check_hung(&musl_node(24), Service::Http, &pg, &dir);
    check_hung(&musl_node(22), Service::Grpc, &pg, &dir);
}

/// Check the healthy twins: idle (no load), no request handler is suspended; busy
/// (four orders at a time, answered throughout the census), only a handful are, no
/// more than the server has in flight plus what finished during the scan.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn idle_and_busy_healthy_servers_show_few_handlers() {
    require_root();
    PgServer::stop_leftover("async_census_healthy");
    let dir = scratch_dir("async_census_healthy");
    let pg = PgServer::start(&dir);
    for service in [Service::Http, Service::Grpc] {
        let handler = service.handler();
        let server = PoolServer::start(
            NODE.as_ref(),
            service,
            PoolMode::Healthy,
            &pg,
            SERVER_SECONDS,
        );
        // Idle: nothing asked, nothing suspended.
        let report = record(server.pid, &dir.join(format!("{service:?}-idle")));
        let idle = census(&report);
        assert_eq!(group_count(idle, handler), 0, "{service:?} idle: {idle:#}");
        assert_eq!(chains_through(idle, handler, NESTED), (0, 0));

        // Busy: four orders at a time for a minute at most (stopped once measured).
        let load = LoadGenerator::start(NODE.as_ref(), &server, 4, 1_000_000, 60);
        let before = server.wait_counts(Duration::from_secs(60), |c| c.answered >= 200);
        let report = record(server.pid, &dir.join(format!("{service:?}-busy")));
        let busy = census(&report);
        let after = server.counts();
        eprintln!("{service:?} busy census: {busy:#}");
        let suspended = group_count(busy, handler);
        assert!(
            suspended <= 8,
            "{service:?} busy: {suspended} suspended {handler}, with 4 orders at a time"
        );
        assert!(
            after.answered > before.answered && after.failed == 0,
            "{service:?}: the server stopped answering during the census: {before:?} → {after:?}"
        );
        drop(load);
    }
}
