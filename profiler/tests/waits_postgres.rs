//! Root integration test of a socket wait on a real PostgreSQL server: a libpq client
//! blocked in `PQexec` while the server sleeps in `pg_sleep` is seen waiting on the
//! server's address, with the client's own function in the stack.
mod common;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// How long the client's query sleeps in the server; longer than the recording window,
/// so the client is still blocked when the window ends.
const QUERY_SECONDS: f64 = 8.0;
/// The recording window.
const WINDOW: &str = "4s";

/// Where Debian installs the server binaries, one directory per major version.
const PG_LIB: &str = "/usr/lib/postgresql";

/// The `bin` directory of the newest PostgreSQL server installed.
fn server_bin_dir() -> PathBuf {
    let newest = std::fs::read_dir(PG_LIB)
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL server in {PG_LIB} ({e}): run `cargo xtask setup --test-deps`")
        })
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    newest
        .unwrap_or_else(|| panic!("no {PG_LIB}/<version>/bin/initdb: install Debian's postgresql"))
        .1
}

/// `out` as text, for panic messages.
fn show(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A throwaway PostgreSQL cluster listening on 127.0.0.1 only, run by the `postgres`
/// system user (the server refuses to run as root), with trust authentication for the
/// `postgres` role. Dropping it stops the server, also when the test panics.
struct PgServer {
    bin: PathBuf,
    cluster: PathBuf,
    port: u16,
}

impl PgServer {
    /// `initdb` and start a cluster under `dir/cluster` (the `data` directory, the Unix
    /// socket directory and the server log).
    fn start(dir: &Path) -> Self {
        let bin = server_bin_dir();
        let cluster = dir.join("cluster");
        std::fs::create_dir_all(cluster.join("socket")).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&cluster)
            .output()
            .expect("running chown");
        assert!(chown.status.success(), "chown: {}", show(&chown));
        let server = Self {
            bin,
            cluster,
            port: free_port(),
        };
        let initdb = server
            .as_postgres("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["--auth=trust", "--username=postgres", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C"])
            .output()
            .expect("running initdb");
        assert!(initdb.status.success(), "initdb: {}", show(&initdb));
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            server.port,
            server.cluster.join("socket").display()
        );
        let start = server
            .pg_ctl()
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(server.cluster.join("server.log"))
            .arg("start")
            .output()
            .expect("running pg_ctl start");
        assert!(
            start.status.success(),
            "pg_ctl start: {}\nserver log:\n{}",
            show(&start),
            std::fs::read_to_string(server.cluster.join("server.log")).unwrap_or_default()
        );
        server.wait_ready();
        server
    }

    fn data(&self) -> PathBuf {
        self.cluster.join("data")
    }

    /// `program` of the server's `bin` directory, run as the `postgres` user.
    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .current_dir(&self.cluster)
            .stdin(Stdio::null());
        cmd
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = self.as_postgres("pg_ctl");
        cmd.arg("-D").arg(self.data());
        cmd
    }

    /// Wait until the server accepts connections over TCP on 127.0.0.1.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
                .output()
                .expect("running pg_isready");
            if ready.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server does not accept connections: {}",
                show(&ready)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The libpq connection string of the `postgres` role over TCP.
    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let stop = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        match stop {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("pg_ctl stop: {}", show(&out)),
            Err(e) => eprintln!("running pg_ctl stop: {e}"),
        }
    }
}

/// Stop a server a killed earlier run of this test left behind, before its directory goes.
fn stop_leftover_server(dir: &Path) {
    let data = dir.join("cluster").join("data");
    if data.join("postmaster.pid").exists() {
        let leftover = PgServer {
            bin: server_bin_dir(),
            cluster: dir.join("cluster"),
            port: 0,
        };
        drop(leftover);
    }
}

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
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("waits_postgres");
    stop_leftover_server(&tmp);
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
