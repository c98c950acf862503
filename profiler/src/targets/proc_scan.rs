//! The /proc side of target selection: which processes exist, which are kernel threads,
//! and a process's PID inside its own PID namespace.
//!
//! Parsers take text (unit-tested on fixtures); readers add the path.
use crate::procfs::proc_path;

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;
/// `PF_EXITING`: set when the process starts to exit (a SIGKILL taken, `exit` called),
/// long before it becomes a zombie; its address space may already be torn down.
const PF_EXITING: u64 = 0x0000_0004;

/// What target selection needs from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatInfo {
    /// Single-letter state (`R`, `S`, `Z`, …).
    pub state: char,
    pub ppid: u32,
    pub kernel_thread: bool,
    /// The process has begun to exit (`PF_EXITING`).
    pub exiting: bool,
}

impl StatInfo {
    /// A zombie, dead or exiting process has no address space left to profile. An
    /// exiting one still shows its name in /proc, so without this a rescan that races
    /// a SIGKILL would follow the dying target again as a new process.
    pub fn is_dead(&self) -> bool {
        self.exiting || matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parse `/proc/PID/stat`: `pid (comm) state ppid pgrp session tty tpgid flags …`.
/// The command name may hold spaces and parentheses, so fields count from the last `)`.
pub fn parse_stat(text: &str) -> Option<StatInfo> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    // Fields 5 (pgrp) to 8 (tpgid), then 9 (flags).
    let flags: u64 = f.nth(4)?.parse().ok()?;
    Some(StatInfo {
        state,
        ppid,
        kernel_thread: flags & PF_KTHREAD != 0,
        exiting: flags & PF_EXITING != 0,
    })
}

/// The innermost PID of the `NSpid:` line of `/proc/PID/status`, when the process is
/// in a PID namespace below ours (the line has more than one PID).
pub fn parse_ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Vec<u32> = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    (pids.len() > 1).then(|| *pids.last().unwrap_or(&0))
}

/// Every process id in /proc, ascending.
pub fn list_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

pub fn read_stat(pid: u32) -> Option<StatInfo> {
    parse_stat(&std::fs::read_to_string(proc_path(pid, "stat")).ok()?)
}

pub fn read_ns_pid(pid: u32) -> Option<u32> {
    parse_ns_pid(&std::fs::read_to_string(proc_path(pid, "status")).ok()?)
}

pub fn read_cgroup_text(pid: u32) -> Option<String> {
    std::fs::read_to_string(proc_path(pid, "cgroup")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that state, ppid and the kernel-thread flag are read past an odd comm.
    #[test]
    fn parses_stat() {
        let user = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0";
        assert_eq!(
            parse_stat(user),
            Some(StatInfo {
                state: 'S',
                ppid: 1,
                kernel_thread: false,
                exiting: false,
            })
        );
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0";
        assert!(parse_stat(kthread).unwrap().kernel_thread);
        let zombie = "77 (x) Z 1 77 77 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0";
        assert!(parse_stat(zombie).unwrap().is_dead());
        // 4194560 | PF_EXITING: killed, not yet a zombie.
        let exiting = "4242 (prog) R 1 4242 4242 0 -1 4194564 120 0 0 0 1 2 0 0 20 0 1 0";
        assert!(parse_stat(exiting).unwrap().is_dead());
        assert_eq!(parse_stat("garbage"), None);
    }

    /// Check that the namespace PID is the last NSpid value, and absent at top level.
    #[test]
    fn parses_ns_pid() {
        let nested = "Name:\tprog\nTgid:\t31337\nNSpid:\t31337\t1\nPPid:\t31336\n";
        assert_eq!(parse_ns_pid(nested), Some(1));
        let twice = "NSpid:\t900\t40\t7\n";
        assert_eq!(parse_ns_pid(twice), Some(7));
        assert_eq!(parse_ns_pid("NSpid:\t900\n"), None);
        assert_eq!(parse_ns_pid("Name:\tx\n"), None);
    }

    /// Check against this test process: a user process, not in a nested namespace
    /// unless the test runs in one, listed in /proc.
    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let stat = read_stat(pid).unwrap();
        assert!(!stat.kernel_thread && !stat.is_dead());
        assert!(list_pids().contains(&pid));
        assert!(read_cgroup_text(pid).is_some());
    }
}
