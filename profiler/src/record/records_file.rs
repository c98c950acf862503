//! The saved capture stream (`record --save-records FILE`, read by `profiler replay`).
//!
//! Format: gzip of JSON lines. The first line is a header naming the format and its
//! version; then, in order, each interned stack (before the first record that refers
//! to it) and each [`CaptureRecord`]. JSON lines keep the file inspectable with
//! `zcat | jq` and need no new dependency (serde_json and flate2 are already used for
//! `report.json` and pprof); gzip makes the repeated frame names and paths cheap.
//! Stack memory is not saved: stacks are saved unwound and symbolized, so a replay
//! needs neither the target's binaries nor root.
use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use flate2::{read::GzDecoder, write::GzEncoder, Compression};
use serde::{Deserialize, Serialize};

use crate::{
    events::StackId,
    model::{CaptureRecord, CodeLocation},
    stacks::{StackTable, SymbolizedStack},
};

/// The format's name in the header.
pub const FORMAT: &str = "profiler-records";
/// Bumped whenever a record changes shape; a reader refuses other versions.
pub const VERSION: u32 = 1;

/// A saved-stream error, with the file and line it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot read line {line}: {source}")]
    Read {
        path: PathBuf,
        line: usize,
        source: std::io::Error,
    },
    #[error("{path}: line {line} is not a capture record: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path} is not a profiler recording (no {FORMAT} header)")]
    NotRecords { path: PathBuf },
    #[error("{path} is a version {found} recording; this profiler reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: line {line}: stack {id} is out of order")]
    StackOrder {
        path: PathBuf,
        line: usize,
        id: StackId,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line of the file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header { format: String, version: u32 },
    Stack(SavedStack),
    Record(CaptureRecord),
}

/// An interned stack as saved.
#[derive(Serialize, Deserialize)]
struct SavedStack {
    id: StackId,
    pid: u32,
    /// Lookup addresses, leaf first (the interning key).
    addrs: Vec<u64>,
    names: Vec<String>,
    locations: Vec<CodeLocation>,
    truncated: bool,
}

/// Writes a capture stream as it is applied.
pub struct RecordWriter {
    path: PathBuf,
    out: Option<GzEncoder<BufWriter<File>>>,
    stacks_written: usize,
    error: Option<std::io::Error>,
}

impl RecordWriter {
    /// Create `path` and write the header.
    pub fn create(path: &Path) -> Result<Self, RecordsError> {
        let file = File::create(path).map_err(|source| RecordsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = Self {
            path: path.to_path_buf(),
            out: Some(GzEncoder::new(BufWriter::new(file), Compression::default())),
            stacks_written: 0,
            error: None,
        };
        w.line(&Line::Header {
            format: FORMAT.into(),
            version: VERSION,
        });
        Ok(w)
    }

    /// Write `record`, after the stacks of `stacks` not written yet.
    pub fn write(&mut self, stacks: &StackTable, record: &CaptureRecord) {
        while self.stacks_written < stacks.len() {
            let id = self.stacks_written as StackId;
            if let Some(s) = stacks.get(id) {
                self.line(&Line::Stack(SavedStack {
                    id,
                    pid: s.pid,
                    addrs: s.addrs.clone(),
                    names: s.names.clone(),
                    locations: s.locations.clone(),
                    truncated: s.truncated,
                }));
            }
            self.stacks_written += 1;
        }
        self.line(&Line::Record(record.clone()));
    }

    fn line(&mut self, line: &Line) {
        let (Some(out), None) = (&mut self.out, &self.error) else {
            return;
        };
        let written = serde_json::to_writer(&mut *out, line)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            self.error = Some(e);
        }
    }

    /// Flush and close the file; the first write error, if any.
    pub fn finish(mut self) -> Result<PathBuf, RecordsError> {
        let closed = match self.out.take() {
            Some(out) => out.finish().and_then(|mut inner| inner.flush()).map(|_| ()),
            None => Ok(()),
        };
        match self.error.take().map_or(closed, Err) {
            Ok(()) => Ok(self.path),
            Err(source) => Err(RecordsError::Write {
                path: self.path,
                source,
            }),
        }
    }
}

/// A source of capture records: the kernel (through `collect` and `stacks`), or a
/// saved stream.
pub trait RecordSource {
    /// The next record; None at the end of the stream.
    fn next_record(&mut self) -> Result<Option<CaptureRecord>, RecordsError>;
    /// The interned stacks the records so far refer to.
    fn stacks(&self) -> &StackTable;
}

/// Reads a saved capture stream.
pub struct RecordReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<GzDecoder<File>>>,
    line: usize,
    stacks: StackTable,
}

impl RecordReader {
    /// Open `path` and check its header.
    pub fn open(path: &Path) -> Result<Self, RecordsError> {
        let file = File::open(path).map_err(|source| RecordsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut r = Self {
            path: path.to_path_buf(),
            lines: BufReader::new(GzDecoder::new(file)).lines(),
            line: 0,
            stacks: StackTable::new(),
        };
        match r.next_line() {
            Ok(Some(Line::Header { format, version })) if format == FORMAT => {
                if version != VERSION {
                    return Err(RecordsError::Version {
                        path: r.path,
                        found: version,
                    });
                }
                Ok(r)
            }
            Ok(_) | Err(RecordsError::Parse { .. } | RecordsError::Read { .. }) => {
                Err(RecordsError::NotRecords { path: r.path })
            }
            Err(e) => Err(e),
        }
    }

    fn next_line(&mut self) -> Result<Option<Line>, RecordsError> {
        let Some(text) = self.lines.next() else {
            return Ok(None);
        };
        self.line += 1;
        let text = text.map_err(|source| RecordsError::Read {
            path: self.path.clone(),
            line: self.line,
            source,
        })?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| RecordsError::Parse {
                path: self.path.clone(),
                line: self.line,
                source,
            })
    }
}

impl RecordSource for RecordReader {
    fn next_record(&mut self) -> Result<Option<CaptureRecord>, RecordsError> {
        loop {
            match self.next_line()? {
                None => return Ok(None),
                Some(Line::Record(r)) => return Ok(Some(r)),
                Some(Line::Stack(s)) => {
                    let id = self.stacks.push(SymbolizedStack {
                        pid: s.pid,
                        addrs: s.addrs,
                        names: s.names,
                        locations: s.locations,
                        truncated: s.truncated,
                    });
                    if id != s.id {
                        return Err(RecordsError::StackOrder {
                            path: self.path.clone(),
                            line: self.line,
                            id: s.id,
                        });
                    }
                }
                Some(Line::Header { .. }) => {
                    return Err(RecordsError::NotRecords {
                        path: self.path.clone(),
                    })
                }
            }
        }
    }

    fn stacks(&self) -> &StackTable {
        &self.stacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StackRef, WindowEnd};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("profiler-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Check that records and the stacks they refer to read back as written, stacks
    /// before the first record that needs them.
    #[test]
    fn records_and_stacks_round_trip() {
        let path = temp("round-trip.jsonl.gz");
        let mut table = StackTable::new();
        let id = table.intern(7, vec![0x20, 0x10], true, |_| {
            vec!["main".into(), "leak".into()]
        });
        let records = vec![
            CaptureRecord::WindowStart { start_ns: 5 },
            CaptureRecord::Mem {
                pid: 7,
                op: crate::events::MemOp::Brk { new_brk: 0x9000 },
                sample: Some(crate::model::MemSampleRef {
                    stack: Some(StackRef {
                        id,
                        truncated: true,
                    }),
                    scale: 1.0 / 3.0,
                }),
            },
            CaptureRecord::WindowEnd(WindowEnd {
                window_secs: 0.1 + 0.2,
                ..Default::default()
            }),
        ];
        let mut w = RecordWriter::create(&path).unwrap();
        for r in &records {
            w.write(&table, r);
        }
        w.finish().unwrap();
        let mut r = RecordReader::open(&path).unwrap();
        let mut read = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            read.push(rec);
        }
        assert_eq!(read, records, "floats included, bit for bit");
        let s = r.stacks().get(id).unwrap();
        assert_eq!((s.pid, s.truncated), (7, true));
        assert_eq!(s.names, vec!["main", "leak"]);
    }

    /// Check that a recording of another format version is refused, naming both.
    #[test]
    fn other_version_is_refused() {
        let path = temp("v99.jsonl.gz");
        let mut gz = GzEncoder::new(File::create(&path).unwrap(), Compression::default());
        writeln!(gz, r#"{{"header":{{"format":"{FORMAT}","version":99}}}}"#).unwrap();
        gz.finish().unwrap();
        let Err(e) = RecordReader::open(&path) else {
            panic!("version 99 was accepted")
        };
        assert!(e.to_string().contains("version 99 recording"), "{e}");
    }
}
