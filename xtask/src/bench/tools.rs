//! The tools measured on each storm: none (bare), our profiler (and, with `--against`,
//! another build of it), the floor (the profiler's attach points with empty programs:
//! the kernel's own price), and the peer tools that do the same job (bpftrace,
//! libbpf-tools `offcputime`, perf), with how each is started on a pid, how the bench
//! knows it is attached, and how it is stopped.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::storms::Stress;

/// How a tool is started and stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The storm alone.
    Bare,
    /// `profiler record --pid PID --duration D --out DIR` of one build; `empty`: with
    /// `--empty-programs` (the floor).
    Profiler { build: Build, empty: bool },
    /// `bpftrace -e SCRIPT PID` (tracepoints only: this kernel has no kprobes).
    Bpftrace(&'static str),
    /// libbpf-tools `offcputime -p PID`.
    Offcputime,
    /// `perf record ARGS -p PID -o DIR/perf.data`.
    Perf(&'static [&'static str]),
}

/// Which profiler binary a tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The working tree's build.
    Head,
    /// The build of `--against REV`.
    Against,
}

/// The profiler binaries of a run.
#[derive(Debug, Clone)]
pub struct Profilers {
    pub head: PathBuf,
    pub against: Option<PathBuf>,
}

impl Profilers {
    fn path(&self, build: Build) -> &Path {
        match build {
            Build::Head => &self.head,
            Build::Against => self.against.as_deref().unwrap_or(&self.head),
        }
    }
}

/// A tool as it appears in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub label: &'static str,
    pub kind: Kind,
}

/// Futex wait stacks and blocked time, as the bpftrace measurement did.
const BPFTRACE_FUTEX: &str = "\
tracepoint:syscalls:sys_enter_futex /pid == $1 && ((args->op & 127) == 0 || (args->op & 127) == 9)/ { @start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_futex /@start[tid]/ { @blocked_ns[ustack] = sum(nsecs - @start[tid]); delete(@start[tid]); }";

/// Mapping-call stacks: mmap, munmap, brk.
const BPFTRACE_MEMORY: &str = "\
tracepoint:syscalls:sys_enter_mmap, tracepoint:syscalls:sys_enter_munmap, tracepoint:syscalls:sys_enter_brk /pid == $1/ { @calls[probe, ustack] = count(); }";

/// Blocking read stacks and blocked time (the socket storm reads with read(2)).
const BPFTRACE_READ: &str = "\
tracepoint:syscalls:sys_enter_read /pid == $1/ { @start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_read /@start[tid]/ { @blocked_ns[ustack] = sum(nsecs - @start[tid]); delete(@start[tid]); }";

pub const BARE: Tool = Tool {
    label: "bare",
    kind: Kind::Bare,
};
pub const PROFILER: Tool = Tool {
    label: "profiler",
    kind: Kind::Profiler {
        build: Build::Head,
        empty: false,
    },
};
/// The same attach points as `profiler`, every program returning at entry.
pub const FLOOR: Tool = Tool {
    label: "floor",
    kind: Kind::Profiler {
        build: Build::Head,
        empty: true,
    },
};
const OFFCPUTIME: Tool = Tool {
    label: "offcputime (libbpf-tools)",
    kind: Kind::Offcputime,
};
const PERF_SCHED: Tool = Tool {
    label: "perf sched_switch -g",
    kind: Kind::Perf(&["-e", "sched:sched_switch", "-g"]),
};

/// The peer tools run on a storm of this kind.
pub fn peers(stress: Stress) -> Vec<Tool> {
    let peers: &[Tool] = match stress {
        Stress::Futex => &[
            Tool {
                label: "bpftrace futex ustack",
                kind: Kind::Bpftrace(BPFTRACE_FUTEX),
            },
            OFFCPUTIME,
            PERF_SCHED,
        ],
        Stress::Mmap => &[
            Tool {
                label: "bpftrace mmap/munmap/brk ustack",
                kind: Kind::Bpftrace(BPFTRACE_MEMORY),
            },
            Tool {
                label: "perf dwarf sys_enter_mmap",
                kind: Kind::Perf(&["--call-graph", "dwarf", "-e", "syscalls:sys_enter_mmap"]),
            },
        ],
        Stress::Brk => &[
            Tool {
                label: "bpftrace mmap/munmap/brk ustack",
                kind: Kind::Bpftrace(BPFTRACE_MEMORY),
            },
            Tool {
                label: "perf dwarf sys_enter_brk",
                kind: Kind::Perf(&["--call-graph", "dwarf", "-e", "syscalls:sys_enter_brk"]),
            },
        ],
        Stress::Socket => &[
            Tool {
                label: "bpftrace read ustack",
                kind: Kind::Bpftrace(BPFTRACE_READ),
            },
            OFFCPUTIME,
            PERF_SCHED,
        ],
    };
    peers.to_vec()
}

/// A peer's executable and the Debian package that installs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    pub package: &'static str,
}

impl Kind {
    /// The peer program this tool runs (None for bare and the profiler).
    pub fn program(self) -> Option<Program> {
        match self {
            Kind::Bare | Kind::Profiler { .. } => None,
            Kind::Bpftrace(_) => Some(Program {
                name: "bpftrace",
                package: "bpftrace",
            }),
            Kind::Offcputime => Some(Program {
                name: "offcputime",
                package: "libbpf-tools",
            }),
            Kind::Perf(_) => Some(Program {
                name: "perf",
                package: "linux-perf",
            }),
        }
    }
}

/// When a started tool counts as attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Nothing to wait for.
    Now,
    /// An output line starting with (or, for bpftrace, containing) this text.
    Line(&'static str),
    /// The file exists and is not empty (perf writes its header once its events are open).
    File(PathBuf),
    /// The process holds a BPF link (offcputime prints nothing until it ends).
    BpfLink,
}

impl Ready {
    pub fn matches(&self, line: &str) -> bool {
        match self {
            Ready::Line(text) => line.contains(text),
            Ready::Now | Ready::File(_) | Ready::BpfLink => false,
        }
    }
}

/// How to start a tool on one workload process.
pub struct Launch<'a> {
    pub profilers: &'a Profilers,
    /// The profiler records every process (`--all`) instead of the workload's pid.
    pub all: bool,
    /// The profiler says how each probe was attached (`-v`: the bpf_stats round reads
    /// the programs' full names there).
    pub verbose: bool,
    /// The peer's executable as found (or installed).
    pub program: Option<&'a Path>,
    pub pid: u32,
    pub out_dir: &'a Path,
    /// The profiler's window (the storm's duration plus a margin).
    pub window_secs: f64,
}

impl Tool {
    /// The command to start, or None for the bare run.
    pub fn command(&self, launch: &Launch) -> Option<Command> {
        let pid = launch.pid.to_string();
        let program = launch.program.unwrap_or(Path::new("false"));
        let command = match self.kind {
            Kind::Bare => return None,
            Kind::Profiler { build, empty } => {
                let mut c = Command::new(launch.profilers.path(build));
                c.arg("record");
                if launch.all {
                    c.arg("--all");
                } else {
                    c.args(["--pid", &pid]);
                }
                c.arg("--duration")
                    .arg(format!("{:.0}ms", launch.window_secs * 1000.0))
                    .arg("--out")
                    .arg(launch.out_dir);
                if empty {
                    c.arg("--empty-programs");
                }
                if launch.verbose {
                    c.arg("-v");
                }
                c
            }
            Kind::Bpftrace(script) => {
                let mut c = Command::new(program);
                c.args(["-e", script, &pid]);
                c
            }
            Kind::Offcputime => {
                let mut c = Command::new(program);
                c.args(["-p", &pid]);
                c
            }
            Kind::Perf(args) => {
                let mut c = Command::new(program);
                c.arg("record")
                    .args(args)
                    .args(["-p", &pid, "-o"])
                    .arg(launch.out_dir.join("perf.data"));
                c
            }
        };
        Some(command)
    }

    /// What shows that the tool is attached.
    pub fn ready(&self, out_dir: &Path) -> Ready {
        match self.kind {
            Kind::Bare => Ready::Now,
            Kind::Profiler { .. } => Ready::Line("profiler: recording"),
            Kind::Bpftrace(_) => Ready::Line("Attaching"),
            Kind::Offcputime => Ready::BpfLink,
            Kind::Perf(_) => Ready::File(out_dir.join("perf.data")),
        }
    }

    /// Whether the bench stops it with SIGINT when the storm is done (the profiler ends
    /// at the end of its `--duration` window instead).
    pub fn stopped_by_sigint(&self) -> bool {
        !matches!(self.kind, Kind::Bare | Kind::Profiler { .. })
    }

    /// Whether this is a build of our profiler (the floor included).
    pub fn is_profiler(&self) -> bool {
        matches!(self.kind, Kind::Profiler { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(out: &'a Path, profilers: &'a Profilers) -> Launch<'a> {
        Launch {
            profilers,
            all: false,
            verbose: false,
            program: Some(Path::new("/usr/bin/perf")),
            pid: 42,
            out_dir: out,
            window_secs: 3.5,
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn profilers() -> Profilers {
        Profilers {
            head: "/p/profiler".into(),
            against: Some("/a/profiler".into()),
        }
    }

    /// Check that the profiler gets the pid, the window in ms and the output directory.
    #[test]
    fn profiler_command() {
        let out = Path::new("/tmp/o");
        let profilers = profilers();
        let cmd = PROFILER.command(&launch(out, &profilers)).unwrap();
        assert_eq!(cmd.get_program(), "/p/profiler");
        assert_eq!(
            args(&cmd),
            [
                "record",
                "--pid",
                "42",
                "--duration",
                "3500ms",
                "--out",
                "/tmp/o"
            ]
        );
        assert!(BARE.command(&launch(out, &profilers)).is_none());
    }

    /// Check that the floor is the same record with --empty-programs, that --all
    /// replaces the pid and -v is added for the bpf_stats round, and that the other
    /// build runs its own binary.
    #[test]
    fn floor_all_and_against_commands() {
        let out = Path::new("/tmp/o");
        let profilers = profilers();
        let mut l = launch(out, &profilers);
        l.all = true;
        l.verbose = true;
        let cmd = FLOOR.command(&l).unwrap();
        assert_eq!(cmd.get_program(), "/p/profiler");
        assert_eq!(
            args(&cmd),
            [
                "record",
                "--all",
                "--duration",
                "3500ms",
                "--out",
                "/tmp/o",
                "--empty-programs",
                "-v"
            ]
        );
        let against = Tool {
            label: "profiler@v1",
            kind: Kind::Profiler {
                build: Build::Against,
                empty: false,
            },
        };
        let cmd = against.command(&launch(out, &profilers)).unwrap();
        assert_eq!(cmd.get_program(), "/a/profiler");
        assert!(!args(&cmd).contains(&"--empty-programs".to_string()));
        assert!(FLOOR.is_profiler() && !FLOOR.stopped_by_sigint());
        assert_eq!(FLOOR.kind.program(), None);
    }

    /// Check that perf records the tool's events on the pid into the output directory,
    /// and counts as attached once that file is written.
    #[test]
    fn perf_command() {
        let out = Path::new("/tmp/o");
        let profilers = profilers();
        let cmd = PERF_SCHED.command(&launch(out, &profilers)).unwrap();
        assert_eq!(
            args(&cmd),
            [
                "record",
                "-e",
                "sched:sched_switch",
                "-g",
                "-p",
                "42",
                "-o",
                "/tmp/o/perf.data"
            ]
        );
        assert_eq!(PERF_SCHED.ready(out), Ready::File(out.join("perf.data")));
        assert!(PERF_SCHED.stopped_by_sigint() && !PROFILER.stopped_by_sigint());
    }

    /// Check that every storm kind has at least two peers, and that bpftrace scripts
    /// use tracepoints only (no kprobes on the target kernel).
    #[test]
    fn every_stress_has_peers() {
        for stress in [Stress::Futex, Stress::Mmap, Stress::Brk, Stress::Socket] {
            let tools = peers(stress);
            assert!(tools.len() >= 2, "{stress:?}");
            for tool in tools {
                if let Kind::Bpftrace(script) = tool.kind {
                    assert!(!script.contains("kprobe"), "{}", tool.label);
                    assert!(script.contains("pid == $1"), "{}", tool.label);
                }
            }
        }
    }
}
