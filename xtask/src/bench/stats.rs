//! What each of the profiler's BPF programs costs, from the kernel's own accounting
//! (`bpf_stats`): with run-time stats on, every program run adds its duration to the
//! program's `run_time_ns` and one to its `run_cnt`.
//!
//! Stats cost two clock reads per program run, so they are on only in the extra round
//! each profiler build gets after the measured rounds (never in a ratio). They are
//! enabled with `BPF_ENABLE_STATS`, whose file descriptor turns them off again when
//! dropped, even if the bench dies. The programs are the ones the profiler process
//! holds (`/proc/PID/fd` → `anon_inode:bpf-prog`, counters from its fdinfo); their
//! names come from the kernel (cut to 15 bytes) and are completed from the probe lines
//! of `record -v`.

use std::{collections::BTreeMap, fmt::Write as _, os::fd::OwnedFd};

use anyhow::{Context, Result};

/// Keeps run-time stats on while it lives.
pub struct StatsGuard {
    _fd: OwnedFd,
}

/// Turns run-time stats on until the guard is dropped.
pub fn enable() -> Result<StatsGuard> {
    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("cannot enable bpf_stats (BPF_ENABLE_STATS, Linux 5.8+)")?;
    Ok(StatsGuard { _fd: fd })
}

/// Whether run-time stats are on for every program already (`kernel.bpf_stats_enabled`,
/// set by someone else): then every measured round pays for them too.
pub fn enabled_globally() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// One program's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// `prog_id`, `run_time_ns` and `run_cnt` of a BPF program's fdinfo.
pub fn parse_fdinfo(text: &str) -> Option<(u32, Counters)> {
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((
        u32::try_from(field("prog_id")?).ok()?,
        Counters {
            run_time_ns: field("run_time_ns").unwrap_or(0),
            run_cnt: field("run_cnt").unwrap_or(0),
        },
    ))
}

/// The counters of every BPF program process `pid` holds, by program id (a program held
/// through several descriptors counts once).
pub fn snapshot(pid: u32) -> Result<BTreeMap<u32, Counters>> {
    let dir = format!("/proc/{pid}/fd");
    let fds = std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))?;
    let mut programs = BTreeMap::new();
    for fd in fds.filter_map(Result::ok) {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        if let Some((id, counters)) = std::fs::read_to_string(&info)
            .ok()
            .as_deref()
            .and_then(parse_fdinfo)
        {
            programs.insert(id, counters);
        }
    }
    Ok(programs)
}

/// The kernel's names (at most 15 bytes) of these program ids.
pub fn kernel_names(ids: impl IntoIterator<Item = u32>) -> BTreeMap<u32, String> {
    let wanted: std::collections::BTreeSet<u32> = ids.into_iter().collect();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| wanted.contains(&p.id()))
        .map(|p| {
            let name = String::from_utf8_lossy(p.name()).into_owned();
            (p.id(), name)
        })
        .collect()
}

/// The program names of `record -v`'s `profiler: probe NAME: HOW` lines, in order,
/// each once.
pub fn verbose_program_names<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("profiler: probe ") else {
            continue;
        };
        let Some((name, _)) = rest.split_once(": ") else {
            continue;
        };
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// A program name as the kernel keeps it: at most 15 bytes (`BPF_OBJ_NAME_LEN` - 1).
fn kernel_cut(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Completes the kernel's cut names from the full ones. Programs are loaded in the order
/// `-v` lists them, so among programs whose cut names are equal (`sys_enter_epoll` for
/// three of them) ascending ids match the full names that start with it, in order. A
/// name that cannot be matched one to one keeps its cut form and its id.
pub fn full_names(kernel: &BTreeMap<u32, String>, full: &[String]) -> BTreeMap<u32, String> {
    let mut groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (&id, name) in kernel {
        groups.entry(name.as_str()).or_default().push(id);
    }
    let mut out = BTreeMap::new();
    for (cut, ids) in groups {
        let candidates: Vec<&String> = full.iter().filter(|f| kernel_cut(f) == cut).collect();
        if candidates.len() == ids.len() {
            for (id, name) in ids.iter().zip(candidates) {
                out.insert(*id, name.clone());
            }
        } else {
            for id in ids {
                out.insert(id, format!("{cut} (id {id})"));
            }
        }
    }
    out
}

/// What one program cost over a storm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

/// The counters' growth between two snapshots, by program, costliest first. Programs
/// loaded between them count from zero; programs that did not run are left out.
pub fn costs(
    before: &BTreeMap<u32, Counters>,
    after: &BTreeMap<u32, Counters>,
    names: &BTreeMap<u32, String>,
) -> Vec<ProgramCost> {
    let mut costs: Vec<ProgramCost> = after
        .iter()
        .map(|(id, a)| {
            let b = before.get(id).copied().unwrap_or_default();
            ProgramCost {
                name: names.get(id).cloned().unwrap_or_else(|| format!("id {id}")),
                runs: a.run_cnt.saturating_sub(b.run_cnt),
                run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
            }
        })
        .filter(|c| c.runs > 0)
        .collect();
    costs.sort_by(|a, b| {
        b.run_time_ns
            .cmp(&a.run_time_ns)
            .then_with(|| a.name.cmp(&b.name))
    });
    costs
}

/// Programs listed one by one in a table; the rest (other processes' syscalls that the
/// programs turned away) are summed in one line.
pub const TOP_PROGRAMS: usize = 8;

/// The per-program table of one storm under one build: runs, ns per run, total time,
/// share of the storm's wall time, and runs per storm operation, for the costliest
/// [`TOP_PROGRAMS`]; then the others together, then the total.
pub fn markdown(costs: &[ProgramCost], window_secs: f64, ops: u64) -> String {
    let mut out = String::from(
        "| program | runs | runs per op | ns/run | total (ms) | share of the storm's wall time |\n\
         | --- | --: | --: | --: | --: | --: |\n",
    );
    let window_ns = (window_secs * 1e9).max(1.0);
    let ops = ops.max(1) as f64;
    let mut line = |name: &str, runs: u64, ns: u64| {
        let _ = writeln!(
            out,
            "| {name} | {runs} | {:.2} | {:.0} | {:.1} | {:.2} % |",
            runs as f64 / ops,
            ns as f64 / runs.max(1) as f64,
            ns as f64 / 1e6,
            100.0 * ns as f64 / window_ns,
        );
    };
    for c in costs.iter().take(TOP_PROGRAMS) {
        line(&c.name, c.runs, c.run_time_ns);
    }
    let rest = &costs[costs.len().min(TOP_PROGRAMS)..];
    if !rest.is_empty() {
        line(
            &format!("{} other programs", rest.len()),
            rest.iter().map(|c| c.runs).sum(),
            rest.iter().map(|c| c.run_time_ns).sum(),
        );
    }
    let runs = costs.iter().map(|c| c.runs).sum();
    let ns = costs.iter().map(|c| c.run_time_ns).sum();
    line("**all**", runs, ns);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that prog_id, run_time_ns and run_cnt are read from a real fdinfo layout,
    /// and that a non-program fdinfo gives nothing.
    #[test]
    fn fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2078\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\tb3c4c9b4f9a1f4a5\nmemlock:\t4096\nprog_id:\t63296\nrun_time_ns:\t1234567\nrun_cnt:\t2536\nrecursion_misses:\t0\nverified_insns:\t6\n";
        assert_eq!(
            parse_fdinfo(text),
            Some((
                63296,
                Counters {
                    run_time_ns: 1_234_567,
                    run_cnt: 2536
                }
            ))
        );
        assert_eq!(parse_fdinfo("pos:\t0\nmap_id:\t3\n"), None);
    }

    /// Check that the probe lines of `-v` give each program once, in order.
    #[test]
    fn verbose_names() {
        let lines = [
            "profiler: user registers: bpf_task_pt_regs",
            "profiler: probe sys_enter_mmap: tracepoint syscalls:sys_enter_mmap",
            "profiler: probe malloc_enter: uprobe /lib/libc.so.6+0x1",
            "profiler: probe malloc_enter: uprobe /lib/libc.so.6+0x2",
            "profiler: recording x (pid 1) for 1 s",
        ];
        assert_eq!(
            verbose_program_names(lines),
            ["sys_enter_mmap", "malloc_enter"]
        );
    }

    /// Check that cut names are completed, that programs sharing a cut name are matched
    /// in load (id) order, and that a name with no one-to-one match keeps its cut form.
    #[test]
    fn names_completed() {
        let kernel: BTreeMap<u32, String> = [
            (10, "sys_enter_mmap"),
            (11, "sys_enter_epoll"),
            (12, "sys_enter_epoll"),
            (13, "sys_enter_epoll"),
            (14, "mystery_prog"),
            (15, "sys_exit_futex"),
            (16, "sys_exit_futex_"),
        ]
        .into_iter()
        .map(|(id, n)| (id, n.to_string()))
        .collect();
        let full: Vec<String> = [
            "sys_enter_mmap",
            "sys_enter_epoll_wait",
            "sys_enter_epoll_pwait",
            "sys_enter_epoll_pwait2",
            "sys_exit_futex",
            "sys_exit_futex_waitv",
        ]
        .map(String::from)
        .to_vec();
        let names = full_names(&kernel, &full);
        assert_eq!(names[&10], "sys_enter_mmap");
        assert_eq!(names[&11], "sys_enter_epoll_wait");
        assert_eq!(names[&13], "sys_enter_epoll_pwait2");
        assert_eq!(names[&14], "mystery_prog (id 14)");
        // A full name that fits is not a prefix match for a longer one.
        assert_eq!(names[&15], "sys_exit_futex");
        assert_eq!(names[&16], "sys_exit_futex_waitv");
    }

    /// Check that costs are the growth between snapshots, costliest first, that programs
    /// that did not run are left out, and that the table has per-run and share columns and
    /// a total.
    #[test]
    fn cost_table() {
        let c = |ns, n| Counters {
            run_time_ns: ns,
            run_cnt: n,
        };
        let before: BTreeMap<u32, Counters> =
            [(1, c(1_000, 10)), (2, c(0, 0)), (3, c(5, 1))].into();
        let after: BTreeMap<u32, Counters> = [
            (1, c(3_001_000, 1_010)),
            (2, c(6_000_000, 2_000)),
            (3, c(5, 1)),
        ]
        .into();
        let names: BTreeMap<u32, String> = [(1, "a".into()), (2, "b".into())].into();
        let costs = costs(&before, &after, &names);
        assert_eq!(
            costs,
            [
                ProgramCost {
                    name: "b".into(),
                    runs: 2_000,
                    run_time_ns: 6_000_000
                },
                ProgramCost {
                    name: "a".into(),
                    runs: 1_000,
                    run_time_ns: 3_000_000
                },
            ]
        );
        let table = markdown(&costs, 3.0, 1_000);
        assert!(
            table.contains("| b | 2000 | 2.00 | 3000 | 6.0 | 0.20 % |"),
            "{table}"
        );
        assert!(
            table.contains("| a | 1000 | 1.00 | 3000 | 3.0 | 0.10 % |"),
            "{table}"
        );
        assert!(
            table.contains("| **all** | 3000 | 3.00 | 3000 | 9.0 | 0.30 % |"),
            "{table}"
        );
        assert!(!table.contains("other programs"), "{table}");
    }

    /// Check that only the costliest programs get a line, the rest one line together,
    /// and that the total still counts them all.
    #[test]
    fn cost_table_top() {
        let costs: Vec<ProgramCost> = (0..TOP_PROGRAMS as u64 + 3)
            .map(|i| ProgramCost {
                name: format!("p{i}"),
                runs: 10,
                run_time_ns: 1_000_000 * (20 - i),
            })
            .collect();
        let table = markdown(&costs, 1.0, 10);
        assert!(
            table.contains("| p7 |") && !table.contains("| p8 |"),
            "{table}"
        );
        assert!(
            table.contains("| 3 other programs | 30 | 3.00 | 1100000 | 33.0 | 3.30 % |"),
            "{table}"
        );
        assert!(table.contains("| **all** | 110 | 11.00 |"), "{table}");
    }
}
