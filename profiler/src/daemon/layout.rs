//! Where the daemon's captures live and how it recognises its own.
//!
//! ```text
//! DIR/2026-11-24T14-21-07Z/          one interval (files as `profiler record` writes)
//! DIR/oom/2026-11-24T14-21-09Z-leaky-4242/    an OOM snapshot
//! DIR/stall/…-<comm>-<pid>/, DIR/rss/…-<comm>-<pid>/
//! DIR/latest -> 2026-11-24T14-21-07Z  DIR/index.html
//! ```
//!
//! Every capture directory gets the marker file ([`CaptureFile::Marker`]) before anything else is
//! written into it, and `capture.json` ([`CaptureMeta`]) last. Retention only ever
//! deletes directories whose name has the timestamp pattern *and* that hold the marker,
//! so nothing the daemon did not write is touched.
use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime};

use crate::layout::CaptureFile;
pub use crate::layout::{INDEX, LATEST};

/// What made a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureKind {
    /// The end of an interval (or SIGHUP, or shutdown).
    Interval,
    /// A target was chosen by the OOM killer.
    Oom,
    /// The stall verdict fired for a target.
    Stall,
    /// A target's RSS crossed `--rss-threshold`.
    Rss,
}

impl CaptureKind {
    pub const ALL: [CaptureKind; 4] = [Self::Interval, Self::Oom, Self::Stall, Self::Rss];

    /// Sub-directory of DIR holding this kind ("" for intervals).
    pub fn subdir(self) -> &'static str {
        match self {
            Self::Interval => "",
            Self::Oom => "oom",
            Self::Stall => "stall",
            Self::Rss => "rss",
        }
    }
}

/// `capture.json`: what the index shows for a capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub kind: Option<CaptureKind>,
    /// UTC, RFC 3339 with milliseconds.
    pub started: String,
    pub ended: String,
    pub window_secs: f64,
    /// The verdict / headline lines, one per process (or the OOM victim line).
    pub summary: Vec<String>,
    /// Files in the directory, for links (SVGs first).
    pub files: Vec<String>,
    /// Snapshots: the process it is about.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    /// Snapshots: milliseconds from the kernel event (OOM) to the files being written.
    pub latency_ms: Option<f64>,
    /// Each process at the end of the capture, for the page's timeline and verdict
    /// words (absent in captures of older versions).
    #[serde(default)]
    pub processes: Vec<super::timeline::ProcessPoint>,
}

const STAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z");
/// Length of a stamp: `2026-11-24T14-21-07Z`.
const STAMP_LEN: usize = 20;

/// The directory-name timestamp of `t` (UTC, no `:` so that names are plain URL paths).
pub fn stamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(STAMP)
        .expect("formatting a UTC time with a fixed description")
}

/// RFC 3339 UTC time with milliseconds, for `capture.json`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}.{:03}Z",
        t.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .expect("formatting a UTC time with a fixed description"),
        t.millisecond()
    )
}

/// Parse the time of a capture directory name: a stamp, then optionally `-<anything>`
/// (a collision counter or `<comm>-<pid>`). None for names the daemon does not write.
pub fn parse_name(name: &str) -> Option<OffsetDateTime> {
    let head = name.get(..STAMP_LEN)?;
    let rest = &name[STAMP_LEN..];
    if !(rest.is_empty() || rest.starts_with('-')) {
        return None;
    }
    PrimitiveDateTime::parse(head, STAMP)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// A process name made safe for a directory name: `[A-Za-z0-9._]`, others become `_`.
pub fn safe_comm(comm: &str) -> String {
    let s: String = comm
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Create a new capture directory for `kind` at time `t`, marked as ours. Snapshots
/// carry `<comm>-<pid>` in the name. Two captures in the same second get `-1`, `-2`…
pub fn create_capture_dir(
    out: &Path,
    kind: CaptureKind,
    t: OffsetDateTime,
    process: Option<(&str, u32)>,
) -> io::Result<PathBuf> {
    let parent = out.join(kind.subdir());
    std::fs::create_dir_all(&parent)?;
    let base = match process {
        Some((comm, pid)) => format!("{}-{}-{pid}", stamp(t), safe_comm(comm)),
        None => stamp(t),
    };
    for n in 0..1000 {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = parent.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(
                    dir.join(CaptureFile::Marker.name()),
                    b"written by profiler daemon\n",
                )?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free capture directory name for {base} in {}",
        parent.display()
    )))
}

/// Write `capture.json` (last: it completes the capture).
pub fn write_meta(dir: &Path, meta: &CaptureMeta) -> io::Result<()> {
    let text = serde_json::to_string_pretty(meta).map_err(io::Error::other)?;
    write_atomic(&dir.join(CaptureFile::Meta.name()), text.as_bytes())
}

/// Write a file through a temporary name and a rename, so readers never see half (and
/// a failed write leaves no temporary file).
pub(crate) use crate::record::output::write_atomic;

/// Point `DIR/latest` at the interval capture `name`, replacing the link atomically.
pub fn update_latest(out: &Path, name: &str) -> io::Result<()> {
    let tmp = out.join(format!(".latest.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)?;
    std::fs::rename(&tmp, out.join(LATEST))
}

/// One capture directory found on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub kind: CaptureKind,
    pub path: PathBuf,
    /// Path relative to DIR, `/`-separated (for links).
    pub rel: String,
    pub time: OffsetDateTime,
    /// None while the capture is incomplete (no `capture.json` yet).
    pub meta: Option<CaptureMeta>,
}

/// Every capture directory the daemon wrote under `out` (name pattern and marker),
/// oldest first.
pub fn list_captures(out: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    for kind in CaptureKind::ALL {
        let parent = out.join(kind.subdir());
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(time) = parse_name(&name) else {
                continue;
            };
            let path = entry.path();
            // symlink_metadata: a link named like a capture is not ours to follow.
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if !is_dir || !path.join(CaptureFile::Marker.name()).is_file() {
                continue;
            }
            let meta = std::fs::read_to_string(path.join(CaptureFile::Meta.name()))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let rel = match kind.subdir() {
                "" => name,
                sub => format!("{sub}/{name}"),
            };
            found.push(Found {
                kind,
                path,
                rel,
                time,
                meta,
            });
        }
    }
    found.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.rel.cmp(&b.rel)));
    found
}

/// Bytes a file tree occupies on disk (allocated blocks, as `du` counts them),
/// directories included, symbolic links not followed.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.filter_map(Result::ok) {
                total += disk_usage(&entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Check that stamps round-trip and that only the daemon's names parse.
    #[test]
    fn names_round_trip_and_foreign_names_are_rejected() {
        let t = datetime!(2026-11-24 14:21:07 UTC);
        assert_eq!(stamp(t), "2026-11-24T14-21-07Z");
        assert_eq!(parse_name("2026-11-24T14-21-07Z"), Some(t));
        assert_eq!(parse_name("2026-11-24T14-21-07Z-2"), Some(t));
        assert_eq!(parse_name("2026-11-24T14-21-07Z-leaky-42"), Some(t));
        assert_eq!(parse_name("2026-11-24T14-21-07Zx"), None);
        assert_eq!(parse_name("my-notes"), None);
        assert_eq!(parse_name("2026-13-24T14-21-07Z"), None);
        assert_eq!(rfc3339(t), "2026-11-24T14:21:07.000Z");
    }

    /// Check that process names cannot escape the capture directory.
    #[test]
    fn comm_is_made_safe() {
        assert_eq!(safe_comm("../etc"), ".._etc");
        assert_eq!(safe_comm("a b/c"), "a_b_c");
        assert_eq!(safe_comm(""), "_");
    }

    /// Check that capture directories are unique, marked, listed oldest first, and that
    /// unmarked or foreign directories are not listed.
    #[test]
    fn creates_and_lists_only_marked_captures() {
        let out = std::env::temp_dir().join(format!("profiler-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let t1 = datetime!(2026-11-24 14:21:07 UTC);
        let t0 = datetime!(2026-11-24 14:20:07 UTC);
        let a = create_capture_dir(&out, CaptureKind::Interval, t1, None).unwrap();
        let b = create_capture_dir(&out, CaptureKind::Interval, t1, None).unwrap();
        assert_ne!(a, b);
        let o = create_capture_dir(&out, CaptureKind::Oom, t0, Some(("leaky", 42))).unwrap();
        assert!(o.ends_with("oom/2026-11-24T14-20-07Z-leaky-42"));
        write_meta(&a, &CaptureMeta::default()).unwrap();
        std::fs::create_dir(out.join("2026-11-24T10-00-00Z")).unwrap(); // no marker
        std::fs::create_dir(out.join("notes")).unwrap();
        let found = list_captures(&out);
        let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "oom/2026-11-24T14-20-07Z-leaky-42",
                "2026-11-24T14-21-07Z",
                "2026-11-24T14-21-07Z-1"
            ]
        );
        assert!(found[1].meta.is_some() && found[2].meta.is_none());
        update_latest(&out, "2026-11-24T14-21-07Z-1").unwrap();
        update_latest(&out, "2026-11-24T14-21-07Z").unwrap();
        assert_eq!(
            std::fs::read_link(out.join(LATEST)).unwrap(),
            Path::new("2026-11-24T14-21-07Z")
        );
        assert!(disk_usage(&out) > 0);
        std::fs::remove_dir_all(&out).unwrap();
    }
}
