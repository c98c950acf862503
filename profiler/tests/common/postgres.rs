//! A throwaway PostgreSQL server on loopback for the root tests (Debian's `postgresql`,
//! which `cargo xtask setup --test-deps` installs).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

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
pub fn show(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A throwaway PostgreSQL cluster listening on 127.0.0.1 only, run by the `postgres`
/// system user (the server refuses to run as root), with trust authentication for the
/// `postgres` role. Dropping it stops the server, also when the test panics.
pub struct PgServer {
    bin: PathBuf,
    cluster: PathBuf,
    pub port: u16,
}

impl PgServer {
    /// `initdb` and start a cluster under `dir/cluster` (the `data` directory, the Unix
    /// socket directory and the server log).
    pub fn start(dir: &Path) -> Self {
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

    /// Stop a server that a killed earlier run of test `name` left running in its
    /// scratch directory, before [`crate::common::scratch_dir`] removes that directory.
    pub fn stop_leftover(name: &str) {
        let cluster = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(name)
            .join("cluster");
        if cluster.join("data").join("postmaster.pid").exists() {
            drop(Self {
                bin: server_bin_dir(),
                cluster,
                port: 0,
            });
        }
    }

    /// The libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`) of the
    /// `postgres` role and database over TCP, which node-postgres reads too.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".to_owned()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".to_owned()),
            ("PGDATABASE", "postgres".to_owned()),
        ]
    }

    /// The libpq connection string of the `postgres` role over TCP.
    pub fn conninfo(&self) -> String {
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
