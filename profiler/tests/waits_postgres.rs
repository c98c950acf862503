//! Root integration test of a socket wait on a real PostgreSQL server: a libpq client
//! blocked in `PQexec` while the server sleeps in `pg_sleep` is seen waiting on the
//! server's address, with the client's own function in the stack.
mod common;

use std::{process::Command, time::Instant};

use common::{
    postgres::{show, PgServer},
    *,
};

/// How long the client's query sleeps in the server; longer than the recording window,
/// so the client is still blocked when the window ends.
const QUERY_SECONDS: f64 = 8.0;
/// The recording window.
const WINDOW: &str = "4s";

/// Frames of a JSON array of strings.
fn frames(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list of frames: {value}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

/// Check that a libpq client blocked on a query the server holds in `pg_sleep` waits on
/// the server's socket `127.0.0.1:<port>`, with `run_report_query` in its stack, both in
/// report.json (still blocked at the end of the window) and in waits.folded.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn client_blocked_on_pg_sleep_waits_on_server_socket() {
    require_root();
    let began = Instant::now();
    PgServer::stop_leftover("waits_postgres");
    let dir = scratch_dir("waits_postgres");
    let server = PgServer::start(&dir);
    let peer = format!("127.0.0.1:{}", server.port);
    eprintln!(
        "PostgreSQL on {peer} after {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let include = Command::new("pg_config")
        .arg("--includedir")
        .output()
        .expect("running pg_config (Debian libpq-dev)");
    assert!(include.status.success(), "pg_config: {}", show(&include));
    let include = format!("-I{}", String::from_utf8_lossy(&include.stdout).trim());
    // The flags come before the source: keep libpq even where the linker drops libraries
    // not needed yet (--as-needed).
    let mut flags = FP_FLAGS.to_vec();
    flags.extend([include.as_str(), "-Wl,--no-as-needed", "-lpq"]);
    let program = build_c("pg_client.c", "pg_client", "gcc", &flags);

    // `start()` in common.h takes only SECONDS BARRIER: the connection string goes
    // through the environment.
    let conninfo = server.conninfo();
    let client =
        Workload::start_with_env(&program, QUERY_SECONDS, &dir, &[("PG_CONNINFO", &conninfo)]);
    let pid = client.pid;
    let rec = Recording::start(
        &["--pid", &pid.to_string(), "--waits", "--duration", WINDOW],
        &dir.join("out"),
    );
    client.release();
    let out = rec.wait();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let process = &json["waits"]["processes"][0];
    eprintln!("in_flight: {:#}", process["in_flight"]);
    eprintln!(
        "report.txt:\n{}",
        std::fs::read_to_string(out.join("report.txt")).unwrap()
    );
    let on_server = format!(" on socket {peer}");
    let group = process["in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["on"].as_str().is_some_and(|on| on.ends_with(&on_server)))
        .unwrap_or_else(|| panic!("no thread blocked on socket {peer}: {process:#}"));
    assert_eq!(group["tids"], serde_json::json!([pid]), "{group:#}");
    // Root first: main → run_report_query → (PQexec's tail call into libpq's static
    // PQexecFinish, which has no symbol) → PQgetResult → … → poll.
    let stack = frames(&group["stack"]);
    let at = |name: &str| stack.iter().position(|f| *f == name);
    assert!(
        matches!(
            (at("main"), at("run_report_query"), at("PQgetResult")),
            (Some(m), Some(q), Some(g)) if m < q && q < g
        ),
        "the stack does not go main → run_report_query → PQgetResult: {stack:?}"
    );

    let folded_text = std::fs::read_to_string(out.join("waits.folded")).unwrap();
    eprintln!("waits.folded:\n{folded_text}");
    let folded = read_folded(&out.join("waits.folded"));
    let kind = format!("socket {peer}");
    let blocked_us = sum_where(&folded, |f| {
        f[0] == format!("pg_client ({pid})") && f[1] == kind && has_frame(f, "run_report_query")
    });
    assert!(
        blocked_us >= 2_000_000,
        "expected seconds blocked on {kind} under run_report_query, got {blocked_us} us"
    );

    client.finish_with_line("query_done");
    drop(server);
    eprintln!("test took {:.1} s", began.elapsed().as_secs_f64());
}
