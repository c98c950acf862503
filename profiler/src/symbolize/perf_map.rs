//! Names of JIT code from a runtime's perf map (`/tmp/perf-PID.map`).
//!
//! JIT runtimes (`node --perf-basic-prof`, Java with perf-map-agent, `python -X perf`)
//! append one line per compiled function, `START SIZE name`, with START and SIZE in
//! hex and a name that runs to the end of the line and may contain spaces. See
//! <https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/tree/tools/perf/Documentation/jit-interface.txt>.
//!
//! Why our own parser rather than blazesym's: blazesym 0.2.7 keeps its `PerfMap`
//! crate-private and reaches it only through `Source::Process { perf_map: true, .. }`,
//! which takes absolute addresses and reads `/proc/PID/maps` of a live process for
//! every call, while this profiler normalizes addresses itself (see the parent module)
//! and still symbolizes after the target exited. blazesym also rejects the whole file
//! on one bad line, and the last line of a map being written is often incomplete; it
//! re-parses the whole file whenever it changed, where the runtime only ever appends. The
//! format is one line of text per function, so the parser here is small: it skips and
//! counts bad lines, ignores an unfinished last line, reads only what was appended
//! since the last read, and lets a later line win where code addresses were reused.
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::procfs;
use crate::safe_file::{self, FileKind, SafeFileError};

/// Least time between two reads of a map prompted by addresses it does not cover.
pub const REREAD_INTERVAL: Duration = Duration::from_millis(500);

/// The functions of a perf map, by address.
#[derive(Debug, Default)]
pub struct PerfMap {
    /// Disjoint ranges by start: start → (end, index into `names`). Where lines
    /// overlap (code freed and its addresses reused), the later line wins.
    ranges: BTreeMap<u64, (u64, usize)>,
    names: Vec<String>,
    lines: usize,
    malformed: usize,
}

impl PerfMap {
    /// Parse a whole map (an unfinished last line is ignored).
    pub fn parse(bytes: &[u8]) -> Self {
        let mut map = PerfMap::default();
        map.extend(bytes);
        map
    }

    /// Add the complete lines of `bytes`, which continue what was added before, and
    /// return how many bytes they take: text after the last newline is a line still
    /// being written, to be passed again once it is finished.
    pub fn extend(&mut self, bytes: &[u8]) -> usize {
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
            return 0;
        };
        for line in bytes[..end].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.lines += 1;
            match parse_line(line) {
                Some((_, 0, _)) => {}
                Some((start, size, name)) => match start.checked_add(size) {
                    Some(end) => self.insert(start, end, name),
                    None => self.malformed += 1,
                },
                None => self.malformed += 1,
            }
        }
        end
    }

    /// The name of the function that contains `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let (_, &(end, name)) = self.ranges.range(..=addr).next_back()?;
        (addr < end).then(|| self.names[name].as_str())
    }

    /// Lines read that were not blank.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Lines skipped because they were not `START SIZE name`.
    pub fn malformed(&self) -> usize {
        self.malformed
    }

    /// Make `start..end` name `name`, cutting back or removing what it overlaps.
    fn insert(&mut self, start: u64, end: u64, name: String) {
        // Ranges are disjoint, so their ends grow with their starts: walking down from
        // the last range starting before `end`, the overlapping ones come first.
        let overlapping: Vec<(u64, u64, usize)> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, n))| (s, e, n))
            .collect();
        for (s, e, n) in overlapping {
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, (start, n));
            }
            if e > end {
                self.ranges.insert(end, (e, n));
            }
        }
        self.names.push(name);
        self.ranges.insert(start, (end, self.names.len() - 1));
    }
}

/// `START SIZE name` → (start, size, name); START and SIZE are hex, with or without
/// `0x`, and the name is the rest of the line as the runtime wrote it (bytes that are
/// not UTF-8 become U+FFFD).
fn parse_line(line: &[u8]) -> Option<(u64, u64, String)> {
    let (start, rest) = next_field(line)?;
    let (size, rest) = next_field(rest)?;
    let name = rest.trim_ascii();
    if name.is_empty() {
        return None;
    }
    Some((
        hex(start)?,
        hex(size)?,
        String::from_utf8_lossy(name).into_owned(),
    ))
}

/// The first whitespace-separated field of `s` and what follows it.
fn next_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.trim_ascii_start();
    let end = s.iter().position(u8::is_ascii_whitespace)?;
    Some(s.split_at(end))
}

fn hex(s: &[u8]) -> Option<u64> {
    let digits = s.strip_prefix(b"0x").unwrap_or(s);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Where process `pid` writes its perf map, seen from here: its own `/tmp`, named
/// with the pid it has inside its PID namespace (the last `NSpid:` field).
pub fn path_of(pid: u32) -> PathBuf {
    let ns_pid = std::fs::read_to_string(procfs::proc_path(pid, "status"))
        .ok()
        .and_then(|status| parse_ns_pid(&status))
        .unwrap_or(pid);
    procfs::proc_path(pid, &format!("root/tmp/perf-{ns_pid}.map"))
}

/// The innermost pid of a `/proc/PID/status` text (kernels without PID namespaces
/// have no `NSpid:` line).
fn parse_ns_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .next_back()?
        .parse()
        .ok()
}

/// The perf map file of one process, read as it grows.
#[derive(Debug)]
pub struct PerfMapFile {
    path: PathBuf,
    /// Kept open: the file stays readable after the process exits and its
    /// `/proc/PID/root` is gone.
    file: Option<(File, (u64, u64))>,
    map: PerfMap,
    /// Bytes of the file taken into `map`.
    consumed: u64,
    last_read: Option<Instant>,
    /// A read error (other than a missing file) not yet taken.
    error: Option<String>,
    /// The last error taken, so a lasting failure is reported once.
    reported: Option<String>,
}

impl PerfMapFile {
    /// A map not read yet: the first lookup reads it.
    pub fn new(path: PathBuf) -> Self {
        PerfMapFile {
            path,
            file: None,
            map: PerfMap::default(),
            consumed: 0,
            last_read: None,
            error: None,
            reported: None,
        }
    }

    pub fn map(&self) -> &PerfMap {
        &self.map
    }

    /// The name of the function at `addr` at time `now`. When the map does not have
    /// it, what the runtime appended since is read first, at most once per
    /// [`REREAD_INTERVAL`] (JIT code appears over time).
    pub fn lookup(&mut self, addr: u64, now: Instant) -> Option<&str> {
        if self.map.lookup(addr).is_none()
            && self
                .last_read
                .is_none_or(|t| now.saturating_duration_since(t) >= REREAD_INTERVAL)
        {
            self.last_read = Some(now);
            if let Err(e) = self.read_new() {
                let e = format!("perf map: {e}");
                if self.reported.as_ref() != Some(&e) {
                    self.error = Some(e);
                }
            }
        }
        self.map.lookup(addr)
    }

    /// A read error not yet reported, if any (the same error again is not).
    pub fn take_error(&mut self) -> Option<String> {
        let e = self.error.take()?;
        self.reported = Some(e.clone());
        Some(e)
    }

    /// Take in what was appended since the last read; start over if the file was
    /// replaced or truncated (the runtime restarted).
    fn read_new(&mut self) -> Result<(), SafeFileError> {
        // Opened afresh each time, safely: the path may now be a FIFO (which would block a
        // plain open forever), a device, or a symlink out of the container.
        match safe_file::open(&self.path, FileKind::PerfMap) {
            Ok(fresh) => {
                let meta = fresh.metadata().map_err(|source| SafeFileError::Read {
                    path: self.path.clone(),
                    source,
                })?;
                let id = (meta.dev(), meta.ino());
                if self.file.as_ref().is_none_or(|(_, held)| *held != id) {
                    self.file = Some((fresh, id));
                    self.reset();
                }
            }
            // No map (yet), or the process is gone: keep what is open, if anything.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let Some((file, _)) = &self.file else {
            return Ok(());
        };
        let read_error = |source| SafeFileError::Read {
            path: self.path.clone(),
            source,
        };
        // The file may have grown past its cap since it was opened: read no further.
        let len = file
            .metadata()
            .map_err(read_error)?
            .len()
            .min(FileKind::PerfMap.max_bytes());
        // Shorter than what we took: truncated and rewritten, start over.
        let from = if len < self.consumed {
            0
        } else {
            self.consumed
        };
        let mut buf = vec![0; usize::try_from(len - from).unwrap_or(usize::MAX)];
        let n = read_full_at(file, &mut buf, from).map_err(read_error)?;
        if from < self.consumed {
            self.reset();
        }
        self.consumed += self.map.extend(&buf[..n]) as u64;
        Ok(())
    }

    fn reset(&mut self) {
        self.map = PerfMap::default();
        self.consumed = 0;
    }
}

/// Read into `buf` at `offset` until it is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that well-formed lines are found by address, start inclusive, end exclusive.
    #[test]
    fn looks_up_functions_by_address() {
        let map = PerfMap::parse(b"1000 10 first\n2000 0x20 second\n");
        assert_eq!(map.lookup(0x1000), Some("first"));
        assert_eq!(map.lookup(0x100f), Some("first"));
        assert_eq!(map.lookup(0x1010), None);
        assert_eq!(map.lookup(0xfff), None);
        assert_eq!(map.lookup(0x201f), Some("second"));
        assert_eq!(map.lookup(0x2020), None);
        assert_eq!((map.lines(), map.malformed()), (2, 0));
    }

    /// Check that a name keeps its inner spaces and everything else the runtime wrote.
    #[test]
    fn names_keep_spaces() {
        let map = PerfMap::parse(
            b"7fafb80072c0 16c JS:*rememberRequest /srv/app/leak.js:20:25\n\
              7fafb8008000 40 LazyCompile:~<anonymous> /a b/c.js:1\r\n\
              7fafb8009000  8\tStub:CEntry  \n",
        );
        assert_eq!(
            map.lookup(0x7fafb80072c5),
            Some("JS:*rememberRequest /srv/app/leak.js:20:25")
        );
        assert_eq!(
            map.lookup(0x7fafb8008000),
            Some("LazyCompile:~<anonymous> /a b/c.js:1")
        );
        assert_eq!(map.lookup(0x7fafb8009007), Some("Stub:CEntry"));
        assert_eq!(map.malformed(), 0);
    }

    /// Check that malformed lines are skipped and counted, and the lines around them kept.
    #[test]
    fn skips_and_counts_malformed_lines() {
        let map = PerfMap::parse(
            b"1000 10 ok\n\
              nothex 10 bad start\n\
              2000 zz bad size\n\
              3000 10\n\
              3000\n\
              4000 10    \n\
              0x 10 empty number\n\
              -1000 10 negative\n\
              ffffffffffffffff 10 wraps\n\
              10000000000000000 1 too big\n\
              \n   \n\
              6000 10 also ok\n",
        );
        assert_eq!(map.malformed(), 9);
        assert_eq!(map.lines(), 11);
        assert_eq!(map.lookup(0x1000), Some("ok"));
        assert_eq!(map.lookup(0x6008), Some("also ok"));
        for addr in [0x2000, 0x3000, 0x4000] {
            assert_eq!(map.lookup(addr), None, "{addr:x}");
        }
    }

    /// Check that name bytes that are not UTF-8 are replaced, not a reason to skip the line.
    #[test]
    fn non_utf8_names_are_replaced() {
        let map = PerfMap::parse(b"5000 10 py::f\xff\xfe\n");
        assert_eq!(map.lookup(0x5000), Some("py::f\u{fffd}\u{fffd}"));
        assert_eq!(map.malformed(), 0);
    }

    /// Check that an empty map, or one of only blank lines, finds nothing and counts nothing.
    #[test]
    fn empty_map_finds_nothing() {
        for text in [&b""[..], b"\n\n", b"   \n"] {
            let map = PerfMap::parse(text);
            assert_eq!(map.lookup(0), None);
            assert_eq!(map.lookup(u64::MAX), None);
            assert_eq!((map.lines(), map.malformed()), (0, 0));
        }
    }

    /// Check that unsorted lines are found, and that where lines overlap the later one wins.
    #[test]
    fn later_lines_win_over_overlapped_ones() {
        let map = PerfMap::parse(
            b"3000 100 third\n\
              1000 1000 old\n\
              1400 100 new inside\n\
              1f00 200 new across end\n\
              0f00 180 new across start\n\
              2800 10 zero-size follows\n\
              2900 0 nothing\n",
        );
        assert_eq!(map.lookup(0x3050), Some("third"));
        assert_eq!(map.lookup(0xf00), Some("new across start"));
        assert_eq!(map.lookup(0x107f), Some("new across start"));
        assert_eq!(map.lookup(0x1080), Some("old"));
        assert_eq!(map.lookup(0x13ff), Some("old"));
        assert_eq!(map.lookup(0x1400), Some("new inside"));
        assert_eq!(map.lookup(0x1500), Some("old"));
        assert_eq!(map.lookup(0x1eff), Some("old"));
        assert_eq!(map.lookup(0x1f00), Some("new across end"));
        assert_eq!(map.lookup(0x20ff), Some("new across end"));
        assert_eq!(map.lookup(0x2100), None);
        assert_eq!(map.lookup(0x2900), None);

        // A line covering several earlier ones replaces them all.
        let map = PerfMap::parse(b"1000 10 a\n1020 10 b\n1040 10 c\n1000 100 all\n");
        assert_eq!(map.lookup(0x1025), Some("all"));
        assert_eq!(map.lookup(0x10ff), Some("all"));
        assert_eq!(map.ranges.len(), 1);
    }

    /// Check that an unfinished last line is left for later and taken once completed.
    #[test]
    fn unfinished_last_line_waits() {
        let mut map = PerfMap::default();
        let text = b"1000 10 done\n2000 10 half-writ";
        let taken = map.extend(text);
        assert_eq!(taken, 13);
        assert_eq!(map.lookup(0x2000), None);
        assert_eq!(map.malformed(), 0);
        let rest = [&text[taken..], b"ten\n"].concat();
        assert_eq!(map.extend(&rest), rest.len());
        assert_eq!(map.lookup(0x2000), Some("half-written"));
        assert_eq!(map.extend(b"3000 1"), 0);
    }

    /// Check that the namespace pid is the last `NSpid:` field, and missing without one.
    #[test]
    fn parses_namespace_pid() {
        let status = "Name:\tnode\nTgid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t1\n";
        assert_eq!(parse_ns_pid(status), Some(1));
        assert_eq!(parse_ns_pid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(parse_ns_pid("Name:\tnode\n"), None);
    }

    /// Check that our own map path goes through our root and names our pid.
    #[test]
    fn path_of_own_process() {
        let pid = std::process::id();
        assert_eq!(
            path_of(pid),
            PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{pid}.map"))
        );
    }

    /// A scratch file removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "profiler-perf-map-{}-{name}.map",
                std::process::id()
            ));
            std::fs::write(&path, b"").unwrap();
            Scratch(path)
        }

        fn append(&self, bytes: &[u8]) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.0)
                .unwrap();
            f.write_all(bytes).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Check that a miss re-reads what was appended, but not within the re-read interval.
    #[test]
    fn rereads_grown_file_at_most_every_interval() {
        let file = Scratch::new("grow");
        file.append(b"1000 10 first\n");
        let mut map = PerfMapFile::new(file.0.clone());
        let t0 = Instant::now();
        assert_eq!(map.lookup(0x1000, t0), Some("first"));

        file.append(b"2000 10 second\n");
        let soon = t0 + REREAD_INTERVAL / 2;
        assert_eq!(map.lookup(0x2000, soon), None, "re-read too soon");
        let later = t0 + REREAD_INTERVAL;
        assert_eq!(map.lookup(0x2000, later), Some("second"));
        assert_eq!(map.map().lines(), 2);

        // A hit never reads; a miss with nothing appended reads nothing new.
        file.append(b"3000 10 third\n");
        assert_eq!(map.lookup(0x1000, later + REREAD_INTERVAL), Some("first"));
        assert_eq!(map.lookup(0x3000, later + REREAD_INTERVAL), Some("third"));
        assert_eq!(map.lookup(0x9000, later + 3 * REREAD_INTERVAL), None);
        assert_eq!(map.map().lines(), 3);
        assert!(map.take_error().is_none());
    }

    /// Check that a truncated (rewritten) file is read again from its start.
    #[test]
    fn truncated_file_starts_over() {
        let file = Scratch::new("truncate");
        file.append(b"1000 10 old process\n");
        let mut map = PerfMapFile::new(file.0.clone());
        let t0 = Instant::now();
        assert_eq!(map.lookup(0x1000, t0), Some("old process"));
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file.0)
            .unwrap();
        file.append(b"2000 1 new\n");
        assert_eq!(map.lookup(0x2000, t0 + REREAD_INTERVAL), Some("new"));
        assert_eq!(map.lookup(0x1000, t0 + REREAD_INTERVAL), None);
    }

    /// Check that a map that cannot be read is reported once, not at every re-read.
    #[test]
    fn unreadable_map_is_reported_once() {
        let dir = std::env::temp_dir();
        let mut map = PerfMapFile::new(dir.clone());
        let t0 = Instant::now();
        assert_eq!(map.lookup(0x1000, t0), None);
        let e = map.take_error().expect("reading a directory fails");
        assert!(e.contains(&*dir.to_string_lossy()), "{e}");
        assert_eq!(map.lookup(0x1000, t0 + REREAD_INTERVAL), None);
        assert!(map.take_error().is_none());
    }

    /// Check that a missing map is no error and is picked up once it appears.
    #[test]
    fn missing_file_is_not_an_error() {
        let path = std::env::temp_dir().join(format!(
            "profiler-perf-map-{}-missing.map",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let mut map = PerfMapFile::new(path.clone());
        let t0 = Instant::now();
        assert_eq!(map.lookup(0x1000, t0), None);
        assert!(map.take_error().is_none());
        let file = Scratch(path);
        file.append(b"1000 10 late\n");
        assert_eq!(map.lookup(0x1000, t0 + REREAD_INTERVAL), Some("late"));
    }
}
