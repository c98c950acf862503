//! Shared harness of the root integration tests: build the C test programs, start them
//! behind a start barrier, run the real `profiler` binary against them.
#![allow(dead_code)] // each test file uses a different subset

pub mod daemon;
pub mod node_pool;
pub mod postgres;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

/// Where test artefacts go (cargo's per-target scratch directory).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Compile `testprogs/<source>` with `cc` and `flags` into the scratch directory.
pub fn build_c(source: &str, output: &str, cc: &str, flags: &[&str]) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("testprogs")
        .join(output);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let src = repo_root().join("testprogs").join(source);
    let status = Command::new(cc)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success(), "{cc} failed to build {}", src.display());
    out
}

/// Frame-pointer build flags of the C test programs.
pub const FP_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-optimize-sibling-calls",
];

/// Panic unless we are root: these tests load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "root integration tests need root; run them with `cargo xtask test`"
    );
}

/// A test program started with a start barrier: it prints `ready <pid>` and then waits
/// until the barrier file exists.
pub struct Workload {
    pub child: Child,
    pub pid: u32,
    pub barrier: PathBuf,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Workload {
    pub fn start(program: &Path, seconds: f64, dir: &Path) -> Self {
        Self::start_with_env(program, seconds, dir, &[])
    }

    /// As [`Workload::start`], with extra environment variables for the program.
    pub fn start_with_env(program: &Path, seconds: f64, dir: &Path, env: &[(&str, &str)]) -> Self {
        let barrier = dir.join("go");
        let mut child = Command::new(program)
            .arg(seconds.to_string())
            .arg(&barrier)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected `ready <pid>`, got {line:?}"));
        Self {
            child,
            pid,
            barrier,
            stdout,
        }
    }

    /// Let the program start its work.
    pub fn release(&self) {
        std::fs::write(&self.barrier, b"go").unwrap();
    }

    /// Read the program's output up to its next `<key> N` line and return N (the
    /// program keeps running).
    pub fn read_value(&mut self, key: &str) -> u64 {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "test program ended without a `{key}` line");
            if let Some(v) = line
                .trim()
                .strip_prefix(key)
                .and_then(|v| v.trim().parse().ok())
            {
                return v;
            }
        }
    }

    /// Wait for the program to exit and return the value of its `<key> N` line.
    pub fn finish(mut self, key: &str) -> u64 {
        let value = last_value(&mut self.stdout, key);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "test program failed: {status}");
        value.unwrap_or_else(|| panic!("test program printed no `{key}` line"))
    }

    /// Wait for the program to exit 0, having printed the line `line`.
    pub fn finish_with_line(mut self, line: &str) {
        let seen = (&mut self.stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == line);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "test program failed: {status}");
        assert!(seen, "test program printed no `{line}` line");
    }
}

impl Drop for Workload {
    /// A test that panics must not leave its program running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the last `<key> N` line a test program printed (reads to the end).
pub fn last_value(output: impl BufRead, key: &str) -> Option<u64> {
    output
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix(key)?.trim().parse().ok())
        .last()
}

/// A running `profiler record`.
pub struct Recording {
    child: Child,
    pub out: PathBuf,
    /// The `profiler: recording …` line it started with.
    pub start_line: String,
}

impl Recording {
    /// Start `profiler record` with `args` and wait until it says the probes are attached.
    pub fn start(args: &[&str], out: &Path) -> Self {
        Self::start_watching(args, out).0
    }

    /// As [`Recording::start`], also returning the profiler's later stderr lines with
    /// the time each arrived (to measure when it noticed something).
    pub fn start_watching(
        args: &[&str],
        out: &Path,
    ) -> (Self, std::sync::mpsc::Receiver<(Instant, String)>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_profiler"))
            .arg("record")
            .args(args)
            .arg("--out")
            .arg(out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting profiler");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "profiler exited before attaching: {:?}",
                child.wait()
            );
            eprint!("[profiler] {line}");
            if line.contains("profiler: recording") {
                break;
            }
            assert!(Instant::now() < deadline, "profiler did not attach in time");
        }
        // Keep forwarding the profiler's messages so its pipe never fills.
        let (lines, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[profiler] {line}");
                let _ = lines.send((Instant::now(), line));
            }
        });
        let recording = Self {
            child,
            out: out.to_path_buf(),
            start_line: line.trim_end().to_string(),
        };
        (recording, receiver)
    }

    /// The profiler's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM, as an orchestrator or `kill` would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the profiler to finish and check it succeeded.
    pub fn wait(mut self) -> PathBuf {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "profiler failed: {status}");
        self.out
    }
}

/// Parse `memory.folded` (or any folded file) into (frames, count).
pub fn read_folded(path: &Path) -> Vec<(Vec<String>, u64)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let (stack, n) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line {l:?}"));
            (
                stack.split(';').map(str::to_string).collect(),
                n.parse().unwrap(),
            )
        })
        .collect()
}

/// Sum of counts of the lines for which `pred` holds.
pub fn sum_where(lines: &[(Vec<String>, u64)], pred: impl Fn(&[String]) -> bool) -> u64 {
    lines.iter().filter(|(f, _)| pred(f)).map(|(_, n)| n).sum()
}

/// Whether any frame contains `name`.
pub fn has_frame(frames: &[String], name: &str) -> bool {
    frames.iter().any(|f| f.contains(name))
}

/// Whether `frames` (root first) has a frame matching each of `steps`, in that order.
pub fn in_order(frames: &[String], steps: &[&dyn Fn(&str) -> bool]) -> bool {
    let mut rest = frames.iter();
    steps.iter().all(|step| rest.any(|f| step(f)))
}

/// Print folded lines (so a failing run shows what the profiler produced).
pub fn show(what: &str, lines: &[(Vec<String>, u64)]) {
    eprintln!("{what}: {} lines", lines.len());
    for (frames, n) in lines {
        eprintln!("  {} {n}", frames.join(";"));
    }
}

/// How a namespaced test program enters its root.
#[derive(Clone, Copy)]
pub enum EnterRoot {
    /// `chroot`: the mount namespace's root stays the host's, so `/proc/PID/maps` names
    /// the file by its host path, under which the host has nothing.
    Chroot,
    /// `pivot_root`, as container runtimes do: `/proc/PID/maps` names it `/prog`.
    PivotRoot,
}

/// A test program started by `unshare` in its own mount and PID namespaces.
pub struct NsWorkload {
    unshare: Child,
    /// The program's pid as the host sees it (it is 1 in its own namespace).
    pub host_pid: u32,
    stdout: BufReader<ChildStdout>,
}

impl NsWorkload {
    /// Run `program` as `/prog` in a new mount and PID namespace, its root a tmpfs
    /// mounted over `root` in that mount namespace only: the file exists nowhere on the
    /// host's file system. With `cgroup` (a cgroup directory), everything runs in that
    /// cgroup from the start, as a container runtime does.
    pub fn start(
        program: &Path,
        seconds: f64,
        root: &Path,
        enter: EnterRoot,
        cgroup: Option<&Path>,
    ) -> Self {
        Self::start_with_env(program, seconds, root, enter, cgroup, &[])
    }

    /// As [`NsWorkload::start`], with extra environment variables for the program.
    pub fn start_with_env(
        program: &Path,
        seconds: f64,
        root: &Path,
        enter: EnterRoot,
        cgroup: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        let mount = r#"mount -t tmpfs ns-root "$1" && cp "$2" "$1/prog""#;
        let script = match enter {
            EnterRoot::Chroot => format!(r#"{mount} && exec chroot "$1" /prog "$3" /go"#),
            // The host's root stays mounted at /old; /prog is static and needs nothing.
            EnterRoot::PivotRoot => format!(
                r#"{mount} && mkdir "$1/old" && cd "$1" && pivot_root . old && exec /prog "$3" /go"#
            ),
        };
        let mut command = match cgroup {
            Some(dir) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#,
                    "sh",
                ])
                .arg(dir)
                .arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        let mut unshare = command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(root)
            .arg(program)
            .arg(seconds.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting unshare: {e}"));
        let mut stdout = BufReader::new(unshare.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready 1", "expected the namespace pid 1");
        let host_pid = child_of(unshare.id());
        let comm = std::fs::read_to_string(format!("/proc/{host_pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "prog");
        Self {
            unshare,
            host_pid,
            stdout,
        }
    }

    /// Create the barrier `/go` inside the program's root.
    pub fn release(&self) {
        std::fs::write(format!("/proc/{}/root/go", self.host_pid), b"go").unwrap();
    }

    /// Read the program's output up to its next `<key> N` line and return N (the
    /// program keeps running).
    pub fn read_value(&mut self, key: &str) -> u64 {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "test program ended without a `{key}` line");
            if let Some(v) = line
                .trim()
                .strip_prefix(key)
                .and_then(|v| v.trim().parse().ok())
            {
                return v;
            }
        }
    }

    /// Wait for the program to exit and return the value of its `<key> N` line.
    pub fn finish(mut self, key: &str) -> u64 {
        let value = last_value(&mut self.stdout, key);
        let status = self.unshare.wait().unwrap();
        assert!(status.success(), "test program failed: {status}");
        value.unwrap_or_else(|| panic!("test program printed no `{key}` line"))
    }
}

/// The only child of process `parent`, from the ppid field of `/proc/*/stat`.
pub fn child_of(parent: u32) -> u32 {
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid …; comm may hold spaces and parentheses.
            let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after_comm.split_whitespace().nth(1) == Some(&parent.to_string())
        })
        .collect();
    assert_eq!(
        children.len(),
        1,
        "children of unshare {parent}: {children:?}"
    );
    children[0]
}
