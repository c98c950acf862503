//! `profiler daemon`: headless, continuous capture for hosts nobody is watching.
//!
//! The probes are loaded and attached once ([`crate::record::Capture`]) and stay
//! attached; every `--interval` the window is written under `DIR/<UTC timestamp>/`
//! (the files `profiler record` writes), `DIR/latest` is pointed at it and
//! `DIR/index.html` lists every capture. Snapshots outside the schedule: an OOM kill of
//! a target (`DIR/oom/`), its RSS crossing `--rss-threshold` (`DIR/rss/`), the stall
//! verdict firing (`DIR/stall/`). Old captures are deleted by age and total size.
//!
//! Modules: [`run`] (the loop and signals), [`layout`] (names, markers, `latest`),
//! [`write`] (one capture directory), [`snapshots`] (when to snapshot, OOM details),
//! [`retention`], [`index`] with its [`timeline`] ([`timeline_svg`]), [`forecast`]
//! (time to OOM across intervals).
pub mod forecast;
pub mod index;
pub mod layout;
pub mod retention;
pub mod run;
pub mod sinks;
pub mod snapshots;
pub mod timeline;
pub mod timeline_svg;
pub mod write;

use std::{path::PathBuf, time::Duration};

use crate::record::RecordOptions;

/// The daemon's settings, as plain values (the CLI converts its arguments into this).
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Targets, probes and thresholds; `duration` and `out` are not used.
    pub record: RecordOptions,
    pub interval: Duration,
    pub out: PathBuf,
    pub retention: retention::Policy,
    /// Snapshot a target when its RSS crosses this many bytes.
    pub rss_threshold: Option<u64>,
    /// At most one RSS or stall snapshot per process per this long.
    pub snapshot_cooldown: Duration,
    /// Push every interval's pprof profiles to Pyroscope (`--push-url`).
    pub push: Option<crate::push::PushOptions>,
}

/// What a daemon run did, for the last line it prints.
#[derive(Debug)]
pub struct DaemonSummary {
    pub stop_reason: &'static str,
    pub windows: u64,
    pub snapshots: u64,
    pub out: PathBuf,
}

/// Run the daemon until SIGTERM / SIGINT. Errors are one-line messages for the user.
pub async fn daemon(opts: DaemonOptions) -> anyhow::Result<DaemonSummary> {
    anyhow::ensure!(
        opts.interval >= Duration::from_secs(1),
        "--interval must be at least 1s"
    );
    let out = opts.out.clone();
    let interval = opts.interval;
    let mut d = run::Daemon::start(opts)?;
    eprintln!(
        "profiler: daemon started; a capture every {:.0} s in {}",
        interval.as_secs_f64(),
        out.display()
    );
    let stop_reason = d.run().await?;
    d.close_sinks();
    Ok(DaemonSummary {
        stop_reason,
        windows: d.windows_written,
        snapshots: d.snapshots_written,
        out,
    })
}
