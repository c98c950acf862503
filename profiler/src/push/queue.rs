//! The bounded queue of captures not yet accepted, and the retry schedule.
use std::{
    collections::VecDeque,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{pyroscope, spool::Pending, Capture, PushError, PushOptions};

/// What one [`Pusher::flush`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Profiles the server accepted.
    pub sent: u64,
    /// Requests that failed (each retry counts).
    pub failed_attempts: u64,
    /// Profiles given up on because the server rejected them (a 4xx other than
    /// 408/429) or they could not be read.
    pub rejected: u64,
    /// The last error, for the log.
    pub last_error: Option<String>,
}

/// Pushes captures oldest first; see the module docs of [`super`].
pub struct Pusher {
    opts: PushOptions,
    url: String,
    agent: ureq::Agent,
    queue: VecDeque<Pending>,
    /// Captures that left the queue because it was full (their files stay on disk).
    dropped: u64,
    /// Back-off before the next round after a round that failed, and its time.
    backoff: Duration,
    not_before: Option<Instant>,
    /// The last failure to save the queue to `opts.spool`, reported once by `flush`.
    spool_error: Option<String>,
}

impl Pusher {
    /// A pusher for `opts`, with the queue saved in `opts.spool` by an earlier run
    /// (captures whose directory is gone are skipped); fails on a URL it cannot use or
    /// a spool file it cannot read.
    pub fn new(opts: PushOptions) -> Result<Self, PushError> {
        let url = pyroscope::ingest_url(&opts.url)?;
        let agent = pyroscope::agent(opts.timeout);
        let queue = match &opts.spool {
            Some(path) => super::spool::load(path).map_err(|source| PushError::Read {
                path: path.clone(),
                source,
            })?,
            None => VecDeque::new(),
        };
        let mut pusher = Self {
            backoff: opts.initial_backoff,
            opts,
            url,
            agent,
            queue,
            dropped: 0,
            not_before: None,
            spool_error: None,
        };
        pusher.trim();
        Ok(pusher)
    }

    /// Keep at most `max_queue` captures, dropping the oldest from the queue.
    fn trim(&mut self) {
        while self.queue.len() > self.opts.max_queue.max(1) {
            self.queue.pop_front();
            self.dropped += 1;
        }
    }

    /// Save the queue to the spool file, if there is one.
    fn save(&mut self) {
        if let Some(path) = &self.opts.spool {
            if let Err(e) = super::spool::save(path, &self.queue) {
                self.spool_error =
                    Some(format!("saving the push queue to {}: {e}", path.display()));
            }
        }
    }

    /// Queue a capture (its `*.pb.gz` files as they are now). Beyond `max_queue`, the
    /// oldest capture leaves the queue; nothing is deleted from disk.
    pub fn enqueue(&mut self, capture: Capture) -> Result<(), PushError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&capture.dir)
            .map_err(|source| PushError::Read {
                path: capture.dir.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(crate::layout::PPROF_SUFFIX))
            .collect();
        files.sort();
        self.queue.push_back(Pending { capture, files });
        self.trim();
        self.save();
        Ok(())
    }

    /// Captures waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Captures dropped from the queue because it was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// When the next round may start (None: now).
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// Send queued captures oldest first. Each profile gets up to `max_attempts` tries
    /// with exponential back-off between them; when they all fail the round stops,
    /// the queue stays, and the next round waits a back-off that doubles per failed
    /// round (up to `max_backoff`). A round before that time does nothing.
    pub fn flush(&mut self) -> FlushOutcome {
        let mut outcome = FlushOutcome {
            last_error: self.spool_error.take(),
            ..FlushOutcome::default()
        };
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return outcome;
        }
        while let Some(front) = self.queue.front() {
            let Some(file) = front.files.first().cloned() else {
                self.queue.pop_front();
                self.save();
                continue;
            };
            let capture = front.capture.clone();
            match self.send_with_retries(&capture, &file, &mut outcome) {
                Ok(()) => {
                    outcome.sent += 1;
                    self.done_with_first_file();
                    self.backoff = self.opts.initial_backoff;
                    self.not_before = None;
                }
                Err(e) if e.is_retryable() => {
                    outcome.last_error = Some(e.to_string());
                    self.not_before = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(self.opts.max_backoff);
                    return outcome;
                }
                Err(e) => {
                    outcome.rejected += 1;
                    outcome.last_error = Some(format!("{}: {e}", file.display()));
                    self.done_with_first_file();
                }
            }
        }
        outcome
    }

    fn done_with_first_file(&mut self) {
        if let Some(front) = self.queue.front_mut() {
            front.files.remove(0);
        }
        self.save();
    }

    fn send_with_retries(
        &self,
        capture: &Capture,
        file: &std::path::Path,
        outcome: &mut FlushOutcome,
    ) -> Result<(), PushError> {
        let mut labels = self.opts.labels.clone();
        labels.extend(capture.labels.clone());
        let name = pyroscope::series_name(&self.opts.app_name, &labels);
        let mut req = pyroscope::request(&self.url, &name, capture.from, capture.until, file)?;
        req.tenant.clone_from(&self.opts.tenant);
        let mut delay = self.opts.initial_backoff;
        let mut attempt = 1;
        loop {
            match pyroscope::send(&self.agent, &req) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    outcome.failed_attempts += 1;
                    if !e.is_retryable() || attempt >= self.opts.max_attempts.max(1) {
                        return Err(e);
                    }
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(self.opts.max_backoff);
            attempt += 1;
        }
    }
}
