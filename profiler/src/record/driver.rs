//! The capture driver: the one loop `record` and the daemon run around a [`Capture`].
//! It waits for whichever comes first: a batch of kernel records, the rescan tick, a
//! signal, the end of the window, or one of the caller's periodic checks, and says
//! which ([`Wake`]); the caller decides what each means (`record` stops at the
//! deadline, the daemon writes an interval and goes on).
use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    time::{Instant, Interval, MissedTickBehavior},
};

use super::{Capture, RESCAN_INTERVAL};
use crate::collect::{CollectError, Record};

/// What woke the driver.
#[derive(Debug)]
pub enum Wake {
    /// The deadline passed (the end of `record`'s window, the daemon's interval).
    Deadline,
    /// SIGHUP (only when asked for).
    Hangup,
    /// SIGTERM or SIGINT: the reason, for the summary line.
    Stop(&'static str),
    /// The periodic check of this index (see [`Driver::every`]) is due.
    Check(usize),
    /// Time to rescan the targets.
    Rescan,
    /// Records arrived (in the caller's batch), or reading the ring failed.
    Batch(Result<(), CollectError>),
}

/// A periodic check: first due at once, then every `period` (late ones are not made
/// up: the next is a period after the late one).
struct Check {
    period: Duration,
    next: Instant,
}

/// Signals, timers and the record stream of one capture.
pub struct Driver {
    sigterm: Signal,
    sigint: Signal,
    sighup: Option<Signal>,
    rescan: Interval,
    checks: Vec<Check>,
    /// When [`Wake::Deadline`] fires; None: never.
    pub deadline: Option<Instant>,
}

impl Driver {
    /// Install the signal handlers (SIGHUP too when `hangup`).
    pub fn new(hangup: bool) -> anyhow::Result<Self> {
        let sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let sighup = hangup
            .then(|| signal(SignalKind::hangup()).context("installing the SIGHUP handler"))
            .transpose()?;
        let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            sigterm,
            sigint,
            sighup,
            rescan,
            checks: Vec::new(),
            deadline: None,
        })
    }

    /// Add a periodic check; its index in [`Wake::Check`].
    pub fn every(&mut self, period: Duration) -> usize {
        self.checks.push(Check {
            period,
            next: Instant::now(),
        });
        self.checks.len() - 1
    }

    /// Wait for the next thing to do. Records land in `batch`, not yet ingested.
    pub async fn wait(&mut self, capture: &mut Capture, batch: &mut Vec<Record>) -> Wake {
        let check = self
            .checks
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.next)
            .map(|(i, c)| (i, c.next));
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let sighup = &mut self.sighup;
        let hup = async {
            match sighup {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(self.deadline.unwrap_or(far)), if self.deadline.is_some() => Wake::Deadline,
            _ = hup => Wake::Hangup,
            _ = self.sigterm.recv() => Wake::Stop("terminated (SIGTERM)"),
            _ = self.sigint.recv() => Wake::Stop("interrupted (SIGINT)"),
            _ = tokio::time::sleep_until(check.map_or(far, |(_, at)| at)), if check.is_some() => {
                let i = check.map_or(0, |(i, _)| i);
                let c = &mut self.checks[i];
                let now = Instant::now();
                c.next += c.period;
                if c.next <= now {
                    c.next = now + c.period;
                }
                Wake::Check(i)
            }
            _ = self.rescan.tick() => Wake::Rescan,
            r = capture.next_batch(batch, super::capture::DRAIN_INTERVAL) => Wake::Batch(r),
        }
    }
}
