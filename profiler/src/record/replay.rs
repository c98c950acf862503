//! `profiler replay FILE --out DIR`: render a capture saved with
//! `record --save-records` again, through the same analysis and renderers as a live
//! capture. Offline and rootless: the saved stream carries every `/proc` fact and every
//! symbolized stack the analysis used.
use std::path::PathBuf;

use anyhow::Context as _;

use super::Sink as _;
use super::{
    output,
    records_file::{RecordReader, RecordSource},
    Delivery, DirSink, Window,
};
use crate::analyze::CaptureState;

/// What to replay, as plain values.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub file: PathBuf,
    pub out: PathBuf,
}

/// What a replay wrote, for the command line summary.
#[derive(Debug)]
pub struct ReplaySummary {
    pub records: u64,
    pub window_secs: f64,
}

/// Apply every record of `source` and return the reports of the window it ended with.
pub fn replay_source(source: &mut dyn RecordSource) -> anyhow::Result<(Window, u64)> {
    let mut state = CaptureState::default();
    let mut records = 0;
    while let Some(record) = source.next_record()? {
        state.apply(&record);
        records += 1;
    }
    let window = Window::of(&state, source.stacks(), None)
        .context("the recording ends before its window did (was the capture killed?)")?;
    Ok((window, records))
}

/// Replay `opts.file` into `opts.out`.
pub fn replay(opts: &ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let mut reader = RecordReader::open(&opts.file)?;
    let (window, records) = replay_source(&mut reader)?;
    output::prepare_dir(&opts.out)?;
    let now = time::OffsetDateTime::now_utc();
    let mut delivery = Delivery {
        started: now - time::Duration::seconds_f64(window.window_secs),
        ended: now,
        dir: None,
        labels: Default::default(),
    };
    DirSink::new(opts.out.clone()).deliver(&window, &mut delivery)?;
    Ok(ReplaySummary {
        records,
        window_secs: window.window_secs,
    })
}
