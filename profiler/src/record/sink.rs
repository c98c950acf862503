//! Where a finished window goes. `record` has one [`DirSink`]; the daemon writes each
//! interval under a timestamped directory and may push it to Pyroscope
//! (`daemon::sinks`). Sinks run in order; a later one can use what an earlier one did
//! (the pusher sends the files the interval sink wrote).
use std::{collections::BTreeMap, path::PathBuf};

use time::OffsetDateTime;

use super::{output, Window};
use crate::layout::CaptureFile;

/// What the sinks of one window share.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub started: OffsetDateTime,
    pub ended: OffsetDateTime,
    /// The directory the window's files were written to, once a sink wrote them.
    pub dir: Option<PathBuf>,
    /// Who the window was of, for remote sinks (`process`, `container`, `targets`).
    pub labels: BTreeMap<String, String>,
}

/// A destination of finished windows.
pub trait Sink {
    /// Take one window.
    fn deliver(&mut self, window: &Window, delivery: &mut Delivery) -> anyhow::Result<()>;
    /// The capture is over: finish what is pending.
    fn close(&mut self) {}
}

/// Writes the window's files into one directory (`record --out DIR`).
pub struct DirSink {
    pub dir: PathBuf,
    /// The files the last window wrote, in the order written.
    pub written: Vec<CaptureFile>,
}

impl DirSink {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            written: Vec::new(),
        }
    }
}

impl Sink for DirSink {
    fn deliver(&mut self, window: &Window, delivery: &mut Delivery) -> anyhow::Result<()> {
        self.written = output::write_all(&self.dir, window)?;
        delivery.dir = Some(self.dir.clone());
        Ok(())
    }
}
