//! A child process of the bench: its output lines as they arrive (timestamped), its CPU
//! time while it runs, and its resource usage when it ends (`wait4`).

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// How many output lines are kept (for error messages, and the profiler's `-v` probe
/// lines, about 50).
const LOG_LINES: usize = 256;

/// One line of output and when the bench read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub at: SystemTime,
}

/// How a child ended.
#[derive(Debug)]
pub struct Exit {
    /// `wait4` status word.
    status: i32,
    /// User + system CPU time of the process and its reaped children.
    pub cpu: Duration,
    /// Peak resident set size (`ru_maxrss`).
    pub max_rss_bytes: u64,
}

impl Exit {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    /// "exit code 1" or "signal 9".
    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit code {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("status {:#x}", self.status)
        }
    }
}

/// A running child whose stdout and stderr are read line by line by two threads.
pub struct Child {
    name: String,
    pid: i32,
    /// Set once reaped, so no signal goes to a recycled pid.
    reaped: bool,
    lines: Receiver<Line>,
    log: VecDeque<String>,
}

impl Child {
    /// Starts `command` with piped stdout and stderr; `name` is for messages.
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::display(command)))?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for text in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = Line {
                        text,
                        at: SystemTime::now(),
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let pid = i32::try_from(child.id()).context("child pid out of range")?;
        // The std handle is dropped without waiting: this struct reaps the child itself
        // with wait4 to get its resource usage.
        drop(child);
        Ok(Self {
            name: name.to_owned(),
            pid,
            reaped: false,
            lines,
            log: VecDeque::new(),
        })
    }

    /// Waits up to `timeout` for an output line that `wanted` accepts.
    pub fn wait_line(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Result<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.remember(&line.text);
                    if wanted(&line.text) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} gave no expected output within {timeout:?}{}",
                        self.name,
                        self.log_tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "{} closed its output (it ended early){}",
                        self.name,
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// Whether the process holds a BPF link (an attached BPF program) now.
    pub fn holds_bpf_link(&self) -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return false;
        };
        fds.filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| target.to_string_lossy() == "anon_inode:bpf_link")
    }

    /// The next output line, or None if none came within `timeout`; an error once the
    /// child closed its output.
    pub fn next_line(&mut self, timeout: Duration) -> Result<Option<Line>> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.remember(&line.text);
                Ok(Some(line))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                bail!(
                    "{} closed its output (it ended early){}",
                    self.name,
                    self.log_tail()
                )
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The kept output lines, oldest first.
    pub fn lines(&self) -> &VecDeque<String> {
        &self.log
    }

    /// The last kept output line that `wanted` accepts.
    pub fn last_line_matching(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        self.log.iter().rev().find(|l| wanted(l)).cloned()
    }

    /// Reads whatever output arrived without waiting (keeps the log current).
    pub fn drain_output(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.remember(&line.text);
        }
    }

    fn remember(&mut self, text: &str) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(text.to_owned());
    }

    /// The last output lines, for an error message.
    pub fn log_tail(&self) -> String {
        if self.log.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = self
            .log
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(String::as_str)
            .collect();
        format!("; its last output: {}", lines.join(" | "))
    }

    /// CPU time used so far by all its threads (`/proc/PID/task/*/schedstat`, in ns).
    pub fn cpu_now(&self) -> Option<Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        let mut ns = 0u64;
        for task in tasks.filter_map(Result::ok) {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += parse_schedstat(&text).unwrap_or(0);
            }
        }
        Some(Duration::from_nanos(ns))
    }

    /// Resident set size now (`VmRSS` of `/proc/PID/status`).
    pub fn rss_now(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
    }

    /// Sends `signal` unless the child has been reaped.
    pub fn signal(&self, signal: i32) {
        if !self.reaped {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    /// Waits for the child to end; after `timeout` it is killed (and that is an error).
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait4(libc::WNOHANG)? {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                self.signal(libc::SIGKILL);
                self.try_wait4(0)?;
                self.drain_output();
                bail!(
                    "{} did not end within {timeout:?}; killed it{}",
                    self.name,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn try_wait4(&mut self, flags: i32) -> Result<Option<Exit>> {
        let mut status = 0;
        // SAFETY: rusage is plain data, fully written by wait4 on success.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; the pid is our own child.
        let got = unsafe { libc::wait4(self.pid, &mut status, flags, &mut usage) };
        if got < 0 {
            bail!(
                "wait4 on {} failed: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        if got == 0 {
            return Ok(None);
        }
        self.reaped = true;
        let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Ok(Some(Exit {
            status,
            cpu: Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime)),
            max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        }))
    }
}

impl Drop for Child {
    /// Never leave a child behind (e.g. when a round fails half-way).
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let _ = self.try_wait4(0);
        }
    }
}

/// The first field of a `schedstat` file: time spent on a CPU, in ns.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// A `Key:   123 kB` line of `/proc/PID/status`, in KiB.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the on-CPU nanoseconds are the first schedstat field.
    #[test]
    fn schedstat_first_field() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
        assert_eq!(parse_schedstat(""), None);
    }

    /// Check that a status line is found by its key and read in KiB.
    #[test]
    fn status_kib() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    /// Check that a child's lines are read, and that its exit status and CPU time are
    /// reported by wait4.
    #[test]
    fn child_lines_and_exit() {
        let mut child = Child::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo one; echo two >&2; exit 3"]),
        )
        .unwrap();
        let line = child
            .wait_line(Duration::from_secs(10), |l| l == "two")
            .unwrap();
        assert_eq!(line.text, "two");
        let exit = child.wait(Duration::from_secs(10)).unwrap();
        assert!(!exit.success());
        assert_eq!(exit.describe(), "exit code 3");
    }
}
