//! Every file name a capture directory holds, in one place: what `record` and the
//! daemon write, what `diff`, the daemon's index and the Pyroscope pusher read.
//!
//! ```text
//! report.txt  report.json                      the report, for people and machines
//! memory.{folded,svg,pb.gz}                    memory growth by stack
//! allocations.{folded,svg,pb.gz}               live allocations (allocator probes)
//! memory-diff.{folded,svg}                     second half of the window vs the first
//! waits.{folded,svg,pb.gz}                     blocked time by stack
//! waiting.{folded,svg}                         suspended async calls by await chain (node)
//! oom.txt  rss.txt  stall.txt                  why a daemon snapshot was taken
//! capture.json  .profiler-capture              the daemon's description and marker
//! ```
use std::path::{Path, PathBuf};

/// A flamegraph view of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Memory,
    Allocations,
    MemoryDiff,
    Waits,
    /// Suspended async functions by await chain (node targets).
    Waiting,
}

impl View {
    /// The stem of the view's files.
    pub fn name(self) -> &'static str {
        match self {
            View::Memory => "memory",
            View::Allocations => "allocations",
            View::MemoryDiff => "memory-diff",
            View::Waits => "waits",
            View::Waiting => "waiting",
        }
    }
}

/// One file of a capture directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFile {
    ReportText,
    ReportJson,
    Folded(View),
    Svg(View),
    Pprof(View),
    /// Why an OOM, RSS or stall snapshot was taken.
    Oom,
    Rss,
    Stall,
    /// The daemon's description of the capture, written last.
    Meta,
    /// The daemon's marker: "the profiler daemon created this directory".
    Marker,
}

/// The suffix of pprof files.
pub const PPROF_SUFFIX: &str = ".pb.gz";

impl CaptureFile {
    /// The file's name in the capture directory.
    pub fn name(self) -> String {
        match self {
            CaptureFile::ReportText => "report.txt".into(),
            CaptureFile::ReportJson => "report.json".into(),
            CaptureFile::Folded(v) => format!("{}.folded", v.name()),
            CaptureFile::Svg(v) => format!("{}.svg", v.name()),
            CaptureFile::Pprof(v) => format!("{}{PPROF_SUFFIX}", v.name()),
            CaptureFile::Oom => "oom.txt".into(),
            CaptureFile::Rss => "rss.txt".into(),
            CaptureFile::Stall => "stall.txt".into(),
            CaptureFile::Meta => "capture.json".into(),
            CaptureFile::Marker => ".profiler-capture".into(),
        }
    }

    /// The files the daemon's index links to, in this order, when a capture has them.
    pub const LINKED: &[CaptureFile] = &[
        CaptureFile::Svg(View::Memory),
        CaptureFile::Svg(View::Allocations),
        CaptureFile::Svg(View::Waits),
        CaptureFile::Svg(View::Waiting),
        CaptureFile::ReportText,
        CaptureFile::Oom,
        CaptureFile::Stall,
        CaptureFile::Rss,
        CaptureFile::ReportJson,
        CaptureFile::Pprof(View::Memory),
        CaptureFile::Pprof(View::Allocations),
        CaptureFile::Pprof(View::Waits),
    ];
}

/// Files of the daemon's output directory, next to the capture directories.
pub const INDEX: &str = "index.html";
pub const LATEST: &str = "latest";

/// A capture directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureLayout {
    dir: PathBuf,
}

impl CaptureLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `file` is.
    pub fn path(&self, file: CaptureFile) -> PathBuf {
        self.dir.join(file.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check the names other tools and people rely on.
    #[test]
    fn file_names() {
        let l = CaptureLayout::new("/c");
        assert_eq!(
            l.path(CaptureFile::Folded(View::MemoryDiff)),
            Path::new("/c/memory-diff.folded")
        );
        assert_eq!(CaptureFile::Pprof(View::Waits).name(), "waits.pb.gz");
        assert_eq!(
            CaptureFile::Svg(View::Allocations).name(),
            "allocations.svg"
        );
        assert_eq!(CaptureFile::Meta.name(), "capture.json");
    }
}
