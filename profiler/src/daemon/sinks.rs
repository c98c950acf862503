//! The daemon's sinks: each interval is written under `DIR/<UTC time>/` (and
//! `DIR/latest` pointed at it), then, with `--push-url`, queued for Pyroscope.
use std::{path::PathBuf, time::Duration};

use super::{layout, write};
use crate::{
    push::{self, PushWorker},
    record::{Delivery, Sink, Window},
};

/// Writes each interval into its own timestamped capture directory.
pub struct IntervalSink {
    pub out: PathBuf,
}

impl Sink for IntervalSink {
    fn deliver(&mut self, window: &Window, delivery: &mut Delivery) -> anyhow::Result<()> {
        let dir = write::CaptureWrite {
            kind: layout::CaptureKind::Interval,
            started: delivery.started,
            ended: delivery.ended,
            process: None,
            cgroup: None,
            extra: None,
        }
        .write(&self.out, window)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = layout::update_latest(&self.out, &name) {
            eprintln!(
                "profiler: warning: cannot update {}/latest: {e}",
                self.out.display()
            );
        }
        delivery.dir = Some(dir);
        Ok(())
    }
}

/// Queues the pprof profiles of each written interval for Pyroscope.
pub struct PushSink {
    worker: Option<PushWorker>,
}

impl PushSink {
    pub fn new(worker: PushWorker) -> Self {
        Self {
            worker: Some(worker),
        }
    }
}

impl Sink for PushSink {
    fn deliver(&mut self, _window: &Window, delivery: &mut Delivery) -> anyhow::Result<()> {
        if let (Some(worker), Some(dir)) = (&self.worker, &delivery.dir) {
            worker.submit(push::Capture {
                dir: dir.clone(),
                from: delivery.started.into(),
                until: delivery.ended.into(),
                labels: delivery.labels.clone(),
            });
        }
        Ok(())
    }

    /// Stop the worker, giving queued captures a few seconds to go out.
    fn close(&mut self) {
        if let Some(worker) = self.worker.take() {
            let stats = worker.shutdown(Duration::from_secs(5));
            eprintln!(
                "profiler: pushed {} profiles to Pyroscope, {} still queued, {} failed attempts{}",
                stats.sent,
                stats.queued,
                stats.failed_attempts,
                stats
                    .last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
    }
}
