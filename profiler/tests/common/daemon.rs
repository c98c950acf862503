//! The `profiler daemon` harness of the root tests: start the real binary, wait for
//! its captures, and give a target a memory cgroup of its own.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A running `profiler daemon`, its stderr forwarded and kept.
pub struct Daemon {
    pub child: Child,
    pub out: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Start the daemon with `args` and wait until it says the probes are attached.
    pub fn start(args: &[&str], out: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_profiler"))
            .arg("daemon")
            .args(args)
            .arg("--out")
            .arg(out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting profiler daemon");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[profiler] {line}");
                if line.contains("daemon started") {
                    let _ = tx.send(());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let mut daemon = Self {
            child,
            out: out.to_path_buf(),
            stderr: lines,
        };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = daemon.child.try_wait();
            panic!("profiler daemon did not attach: {status:?}");
        }
        daemon
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then check that it wrote its last window and exited 0 in time.
    pub fn stop(mut self) -> PathBuf {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "profiler daemon failed: {status}");
                return self.out.clone();
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn said(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `f` every 100 ms until it returns Some, or panic with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A finished capture directory: its path relative to DIR and its capture.json.
#[derive(Debug)]
pub struct Capture {
    pub rel: String,
    pub path: PathBuf,
    pub meta: serde_json::Value,
}

/// Complete captures in `dir` (interval captures directly under DIR, or `oom/` …),
/// oldest first by name (names start with the UTC time).
pub fn captures(dir: &Path, prefix: &str) -> Vec<Capture> {
    let mut found: Vec<Capture> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("20"))
                .filter_map(|e| {
                    let meta = std::fs::read_to_string(e.path().join("capture.json")).ok()?;
                    Some(Capture {
                        rel: format!("{prefix}{}", e.file_name().to_string_lossy()),
                        path: e.path(),
                        meta: serde_json::from_str(&meta).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    found
}

/// A memory cgroup made for one test, removed when dropped (cgroup v2 `memory.max`, or
/// v1 `memory.limit_in_bytes` where the memory controller is on v1).
pub struct MemCgroup {
    pub path: PathBuf,
    /// On the unified (v2) hierarchy; else the v1 memory hierarchy.
    pub v2: bool,
}

impl MemCgroup {
    pub fn create(name: &str, limit: u64) -> Self {
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(v2_root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (path, files): (PathBuf, &[&str]) = if v2 {
            let _ = std::fs::write(v2_root.join("cgroup.subtree_control"), "+memory");
            (v2_root.join(name), &["memory.max", "memory.swap.max"])
        } else {
            (
                Path::new("/sys/fs/cgroup/memory").join(name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            )
        };
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        let group = Self { path, v2 };
        std::fs::write(group.path.join(files[0]), limit.to_string()).unwrap();
        // Without swap limits the process would swap instead of being killed (if the
        // host has swap); the file is absent when swap accounting is off.
        let swap = if v2 {
            "0".to_string()
        } else {
            limit.to_string()
        };
        let _ = std::fs::write(group.path.join(files[1]), swap);
        group
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for MemCgroup {
    /// Remove the cgroup once its processes are gone (retrying while they are reaped).
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}
