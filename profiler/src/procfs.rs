//! Reading `/proc/PID/*`: memory maps, RSS, program break, command name.
//!
//! Parsers take text so they are unit-tested on fixtures; the `read_*` functions are
//! thin wrappers that add the path and turn I/O errors into [`ProcError`].
use std::path::PathBuf;

/// Errors reading a process's /proc files.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: u32 },
    #[error("permission denied reading /proc/{pid}/{file} ({hint})")]
    PermissionDenied {
        pid: u32,
        file: &'static str,
        hint: &'static str,
    },
    #[error("reading /proc/{pid}/{file}: {source}")]
    Io {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("malformed /proc/{pid}/{file}: {detail}")]
    Malformed {
        pid: u32,
        file: &'static str,
        detail: String,
    },
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// `s` (shared) rather than `p` (private).
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`, …); empty for anonymous.
    pub path: String,
}

impl MapEntry {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// A real file on disk (not anonymous, not a `[pseudo]` mapping, not deleted).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/') && self.inode != 0
    }
}

/// Parse the text of `/proc/PID/maps`. Lines that do not parse are an error: the
/// kernel's format is fixed, so a bad line means we are reading the wrong thing.
pub fn parse_maps(text: &str) -> Result<Vec<MapEntry>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_maps_line)
        .collect()
}

fn parse_maps_line(line: &str) -> Result<MapEntry, String> {
    let bad = || format!("bad maps line: {line:?}");
    let mut fields = line.splitn(6, ' ');
    let range = fields.next().ok_or_else(bad)?;
    let perms = fields.next().ok_or_else(bad)?.as_bytes();
    let offset = fields.next().ok_or_else(bad)?;
    let _dev = fields.next().ok_or_else(bad)?;
    let inode = fields.next().ok_or_else(bad)?;
    let path = fields.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    if perms.len() < 4 {
        return Err(bad());
    }
    Ok(MapEntry {
        start: u64::from_str_radix(start, 16).map_err(|_| bad())?,
        end: u64::from_str_radix(end, 16).map_err(|_| bad())?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: u64::from_str_radix(offset, 16).map_err(|_| bad())?,
        inode: inode.parse().map_err(|_| bad())?,
        path,
    })
}

/// Resident memory of a process, from `/proc/PID/status` (kB fields → bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

pub fn parse_status_rss(text: &str) -> Rss {
    let mut rss = Rss::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kb = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match key {
            "VmRSS" => rss.total = kb * 1024,
            "RssAnon" => rss.anon = kb * 1024,
            "RssFile" => rss.file = kb * 1024,
            "RssShmem" => rss.shmem = kb * 1024,
            _ => {}
        }
    }
    rss
}

/// `start_brk` (field 47 of `/proc/PID/stat`): where the heap begins.
pub fn parse_stat_start_brk(text: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3.
    rest.split_whitespace().nth(47 - 3)?.parse().ok()
}

/// Root of a process's /proc directory. Tests point this elsewhere.
pub fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// What to do about a denied /proc read: root is not always enough (a process in
/// another user namespace, a sandbox, or a security module's policy).
fn permission_hint() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        "denied even to root: the process may belong to another user namespace or a \
         security policy (Yama, SELinux, AppArmor) may forbid it"
    } else {
        "run as root"
    }
}

fn read(pid: u32, file: &'static str) -> Result<String, ProcError> {
    std::fs::read_to_string(proc_path(pid, file)).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ProcError::NoSuchProcess { pid },
        std::io::ErrorKind::PermissionDenied => ProcError::PermissionDenied {
            pid,
            file,
            hint: permission_hint(),
        },
        _ if source.raw_os_error() == Some(libc::ESRCH) => ProcError::NoSuchProcess { pid },
        _ => ProcError::Io { pid, file, source },
    })
}

pub fn read_maps(pid: u32) -> Result<Vec<MapEntry>, ProcError> {
    let text = read(pid, "maps")?;
    parse_maps(&text).map_err(|detail| ProcError::Malformed {
        pid,
        file: "maps",
        detail,
    })
}

pub fn read_rss(pid: u32) -> Result<Rss, ProcError> {
    Ok(parse_status_rss(&read(pid, "status")?))
}

pub fn read_comm(pid: u32) -> Result<String, ProcError> {
    Ok(read(pid, "comm")?.trim_end().to_string())
}

pub fn read_start_brk(pid: u32) -> Result<Option<u64>, ProcError> {
    Ok(parse_stat_start_brk(&read(pid, "stat")?))
}

/// Whether the process exists and is neither exiting nor a zombie.
pub fn is_alive(pid: u32) -> bool {
    crate::targets::proc_scan::read_stat(pid).is_some_and(|s| !s.is_dead())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that maps lines with and without paths, and pseudo-paths, parse.
    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234                       /usr/bin/prog
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000200000-7f0000300000 r-xs 00001000 fd:01 99   /dev/shm/a file with spaces
";
        let maps = parse_maps(text).unwrap();
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].start, 0x55d0c0a00000);
        assert!(maps[0].is_file() && maps[0].read && !maps[0].write);
        assert_eq!(maps[1].path, "[heap]");
        assert!(!maps[1].is_file());
        assert_eq!(maps[2].path, "");
        assert_eq!(maps[2].len(), 0x100000);
        assert!(maps[3].shared && maps[3].exec);
        assert_eq!(maps[3].offset, 0x1000);
        assert_eq!(maps[3].path, "/dev/shm/a file with spaces");
    }

    /// Check that a garbage line is reported rather than skipped.
    #[test]
    fn rejects_garbage_maps_line() {
        assert!(parse_maps("not a maps line\n").is_err());
    }

    /// Check that RSS fields are read in bytes.
    #[test]
    fn parses_status_rss() {
        let rss = parse_status_rss(
            "Name:\tx\nVmRSS:\t  100 kB\nRssAnon:\t 60 kB\nRssFile:\t 30 kB\nRssShmem:\t 10 kB\n",
        );
        assert_eq!(
            rss,
            Rss {
                total: 102400,
                anon: 61440,
                file: 30720,
                shmem: 10240
            }
        );
    }

    /// Check that start_brk is found even when comm contains spaces and parentheses.
    #[test]
    fn parses_start_brk_past_odd_comm() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[47 - 3] = "94000000".into();
        let stat = format!("42 (a (b) c) {}", fields.join(" "));
        assert_eq!(parse_stat_start_brk(&stat), Some(94000000));
    }
}

/// What `/proc/PID/task/TID/syscall` says about a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThreadSyscall {
    /// Running on a CPU (no stable syscall state to read).
    Running,
    /// Blocked, but not in a system call (e.g. a page fault).
    NotInSyscall { sp: u64, pc: u64 },
    /// Inside system call `nr` with its six arguments.
    InSyscall {
        nr: u64,
        args: [u64; 6],
        sp: u64,
        pc: u64,
    },
}

pub fn parse_task_syscall(text: &str) -> Option<ThreadSyscall> {
    let t = text.trim();
    if t == "running" {
        return Some(ThreadSyscall::Running);
    }
    let f: Vec<&str> = t.split_whitespace().collect();
    let num = |s: &str| -> Option<u64> {
        s.strip_prefix("0x")
            .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    };
    match f.len() {
        3 if f[0] == "-1" => Some(ThreadSyscall::NotInSyscall {
            sp: num(f[1])?,
            pc: num(f[2])?,
        }),
        9 => {
            let mut args = [0u64; 6];
            for (i, a) in args.iter_mut().enumerate() {
                *a = num(f[1 + i])?;
            }
            Some(ThreadSyscall::InSyscall {
                nr: num(f[0])?,
                args,
                sp: num(f[7])?,
                pc: num(f[8])?,
            })
        }
        _ => None,
    }
}

/// Thread ids of a process.
pub fn read_tids(pid: u32) -> Result<Vec<u32>, ProcError> {
    let dir = std::fs::read_dir(proc_path(pid, "task")).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ProcError::NoSuchProcess { pid },
        _ => ProcError::Io {
            pid,
            file: "task",
            source,
        },
    })?;
    let mut tids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

pub fn read_task_syscall(pid: u32, tid: u32) -> Option<ThreadSyscall> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    parse_task_syscall(&text)
}

/// Voluntary context switches of a thread: unchanged across an interval means the
/// thread stayed blocked the whole time.
pub fn read_task_voluntary_switches(pid: u32, tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Read `len` bytes of a process's memory at `addr` (fewer at the end of a mapping).
pub fn read_memory(pid: u32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(proc_path(pid, "mem"))?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], addr + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if done > 0 && e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// The parts of `ranges` (page-aligned addresses of process `pid`) whose pages are
/// resident or swapped, from `/proc/PID/pagemap`: pages never touched read as zeros
/// and need not be read at all. Adjacent parts are merged.
pub fn touched_ranges(
    pid: u32,
    ranges: &[std::ops::Range<u64>],
) -> std::io::Result<Vec<std::ops::Range<u64>>> {
    use std::os::unix::fs::FileExt;
    const PAGE: u64 = 4096;
    // Bit 63: present; bit 62: swapped.
    const TOUCHED: u64 = 3 << 62;
    let file = std::fs::File::open(proc_path(pid, "pagemap"))?;
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    let mut entries = vec![0u8; 8 * 4096];
    for r in ranges {
        let mut page = r.start / PAGE;
        let end = r.end.div_ceil(PAGE);
        while page < end {
            let n = ((end - page) as usize).min(entries.len() / 8);
            let buf = &mut entries[..n * 8];
            file.read_exact_at(buf, page * 8)?;
            for (i, e) in buf.chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
                if e & TOUCHED == 0 {
                    continue;
                }
                let at = (page + i as u64) * PAGE;
                match out.last_mut() {
                    Some(last) if last.end == at => last.end = at + PAGE,
                    _ => out.push(at..at + PAGE),
                }
            }
            page += n as u64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod task_tests {
    use super::*;

    /// Check the three shapes of /proc/PID/task/TID/syscall.
    #[test]
    fn parses_task_syscall() {
        assert_eq!(
            parse_task_syscall("running\n"),
            Some(ThreadSyscall::Running)
        );
        assert_eq!(
            parse_task_syscall("-1 0x7ffd0000 0x401000\n"),
            Some(ThreadSyscall::NotInSyscall {
                sp: 0x7ffd0000,
                pc: 0x401000
            })
        );
        assert_eq!(
            parse_task_syscall("202 0x55d0c1000040 0x80 0x0 0x0 0x0 0x0 0x7f00aa00 0x7f00bb00\n"),
            Some(ThreadSyscall::InSyscall {
                nr: 202,
                args: [0x55d0c1000040, 0x80, 0, 0, 0, 0],
                sp: 0x7f00aa00,
                pc: 0x7f00bb00
            })
        );
        assert_eq!(parse_task_syscall("garbage"), None);
    }

    /// Check that this process's own threads and memory can be read.
    #[test]
    fn reads_own_tids_and_memory() {
        let pid = std::process::id();
        assert!(read_tids(pid).unwrap().contains(&pid));
        let value: u64 = 0x1122_3344_5566_7788;
        let bytes = read_memory(pid, std::ptr::addr_of!(value) as u64, 8).unwrap();
        assert_eq!(bytes, value.to_le_bytes());
    }

    /// Check that pagemap finds this process's touched pages and skips untouched ones.
    #[test]
    fn touched_ranges_skip_untouched_pages() {
        let pid = std::process::id();
        let len = 64 * 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below; nothing else uses it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: offsets 5 and 6 pages are inside the mapping.
        unsafe {
            base.cast::<u8>().add(5 * 4096).write_volatile(1);
            base.cast::<u8>().add(6 * 4096).write_volatile(1);
        }
        let start = base as u64;
        let whole = start..start + len as u64;
        let touched = touched_ranges(pid, std::slice::from_ref(&whole)).unwrap();
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base, len) };
        assert_eq!(touched, vec![start + 5 * 4096..start + 7 * 4096]);
    }
}
