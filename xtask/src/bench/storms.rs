//! The storm workloads (`bench/workloads/*.c`): what each one stresses, how it is built,
//! and how one run of it is driven (ready line, start barrier, result line, linger).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::child::Child;
use crate::cmd;

/// What a storm stresses, which decides the peer tools that are run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stress {
    /// Futex waits and wakes.
    Futex,
    /// mmap/munmap calls.
    Mmap,
    /// brk calls.
    Brk,
    /// Blocking socket reads.
    Socket,
}

/// One storm workload.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// Also the source file stem (`bench/workloads/<name>.c`) and the executable name.
    pub name: &'static str,
    /// What one operation is, for the table's legend.
    pub op: &'static str,
    pub stress: Stress,
}

pub const STORMS: &[Storm] = &[
    Storm {
        name: "futex_storm",
        op: "futex hand-over between 2 threads",
        stress: Stress::Futex,
    },
    Storm {
        name: "mmap_storm",
        op: "mmap 64 KiB, write 16 pages, munmap",
        stress: Stress::Mmap,
    },
    Storm {
        name: "malloc_storm",
        op: "malloc 96 KiB (brk grows), write, free (brk trims)",
        stress: Stress::Brk,
    },
    Storm {
        name: "condvar_storm",
        op: "token pass among 8 threads on one condvar (broadcast)",
        stress: Stress::Futex,
    },
    Storm {
        name: "socket_storm",
        op: "64-byte TCP round trip on 127.0.0.1",
        stress: Stress::Socket,
    },
    Storm {
        name: "http_storm",
        op: "HTTP/1.1 keep-alive request and answer on 127.0.0.1 (2 connections)",
        stress: Stress::Socket,
    },
];

/// The workloads' source directory.
fn source_dir() -> PathBuf {
    cmd::workspace_root().join("bench/workloads")
}

/// Compiles every storm with gcc into `out_dir`; returns the executables in `STORMS` order.
/// Optimised release code with debug info and without frame pointers, like a distribution
/// build: the profiler unwinds it by CFI.
pub fn build(storms: &[Storm], out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let src = source_dir();
    storms
        .iter()
        .map(|storm| {
            let exe = out_dir.join(storm.name);
            let mut gcc = Command::new("gcc");
            gcc.args([
                "-O2",
                "-g",
                "-fomit-frame-pointer",
                "-pthread",
                "-Wall",
                "-Wextra",
            ])
            .arg("-o")
            .arg(&exe)
            .arg(src.join(format!("{}.c", storm.name)));
            cmd::output(&mut gcc).with_context(|| format!("building {}", storm.name))?;
            Ok(exe)
        })
        .collect()
}

/// What a storm printed at the end of its loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StormResult {
    pub ops: u64,
    /// The loop's own measured duration.
    pub seconds: f64,
    /// The workload's CPU time (all threads) up to the end of the loop.
    pub cpu_seconds: f64,
}

impl StormResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
}

/// Parses `ops <N> seconds <S> cpu <C>`.
pub fn parse_result(line: &str) -> Option<StormResult> {
    let mut words = line.split_whitespace();
    let mut field = |name: &str| -> Option<&str> {
        (words.next()? == name).then_some(())?;
        words.next()
    };
    let ops = field("ops")?.parse().ok()?;
    let seconds = field("seconds")?.parse().ok()?;
    let cpu_seconds = field("cpu")?.parse().ok()?;
    Some(StormResult {
        ops,
        seconds,
        cpu_seconds,
    })
}

/// A started storm process, waiting at its barrier.
pub struct Workload {
    child: Child,
    barrier: PathBuf,
    seconds: f64,
    /// When the barrier was released.
    released: Option<Instant>,
    pub pid: u32,
}

impl Workload {
    /// Starts `exe` for `seconds` behind the barrier file `barrier` and waits for its pid.
    pub fn start(exe: &Path, seconds: f64, barrier: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(barrier);
        let name = exe
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut child = Child::spawn(
            &name,
            Command::new(exe).arg(format!("{seconds}")).arg(barrier),
        )?;
        let ready = child.wait_line(Duration::from_secs(10), |l| l.starts_with("ready "))?;
        let pid = ready.text["ready ".len()..]
            .trim()
            .parse()
            .with_context(|| format!("{name}: bad ready line {:?}", ready.text))?;
        Ok(Self {
            child,
            barrier: barrier.to_path_buf(),
            seconds,
            released: None,
            pid,
        })
    }

    /// Lets the measured loop start.
    pub fn release(&mut self) -> Result<()> {
        self.released = Some(Instant::now());
        std::fs::write(&self.barrier, b"")
            .with_context(|| format!("cannot create barrier {}", self.barrier.display()))
    }

    /// Waits up to `timeout` for the result line (the process then lingers until
    /// [`Self::finish`]); an error once the storm is overdue by 30 s.
    pub fn result_within(&mut self, timeout: Duration) -> Result<Option<StormResult>> {
        let released = *self.released.get_or_insert_with(Instant::now);
        let deadline = released + Duration::from_secs_f64(self.seconds + 30.0);
        let until = (Instant::now() + timeout).min(deadline);
        while let Some(line) = self
            .child
            .next_line(until.saturating_duration_since(Instant::now()))?
        {
            if line.text.starts_with("ops ") {
                return parse_result(&line.text)
                    .map(Some)
                    .with_context(|| format!("bad result line {:?}", line.text));
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "workload {} gave no result line in time{}",
                self.pid,
                self.child.log_tail()
            );
        }
        Ok(None)
    }

    /// Lets the process exit and checks that it exited 0.
    pub fn finish(mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.barrier);
        let exit = self.child.wait(Duration::from_secs(10))?;
        if !exit.success() {
            bail!(
                "workload {} failed ({}){}",
                self.pid,
                exit.describe(),
                self.child.log_tail()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the result line is parsed field by field, and that a malformed one is not.
    #[test]
    fn result_line() {
        let r = parse_result("ops 1000 seconds 2.000000 cpu 1.500000").unwrap();
        assert_eq!(r.ops, 1000);
        assert!((r.ops_per_sec() - 500.0).abs() < 1e-9);
        assert!((r.cpu_seconds - 1.5).abs() < 1e-9);
        assert_eq!(parse_result("ops 1000 seconds 2.0"), None);
        assert_eq!(parse_result("ops x seconds 2.0 cpu 1"), None);
        assert_eq!(parse_result("started"), None);
    }

    /// Check that every storm has its source file.
    #[test]
    fn every_storm_has_a_source() {
        for storm in STORMS {
            let src = source_dir().join(format!("{}.c", storm.name));
            assert!(src.is_file(), "{}", src.display());
        }
    }
}
