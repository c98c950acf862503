//! Pushing captures to a Grafana Pyroscope server (`--push-url`).
//!
//! A capture is a directory of `*.pb.gz` profiles already written to disk; pushing
//! never deletes or rewrites it. [`Pusher`] keeps a bounded queue of captures not yet
//! accepted by the server and sends them oldest first, retrying with exponential
//! back-off; beyond the bound the oldest capture leaves the queue (its files stay on
//! disk). [`PushWorker`] runs a pusher on a thread of its own so the capture loop
//! never waits on the network: the daemon calls [`PushWorker::submit`] per interval.
//!
//! The request follows Pyroscope's HTTP ingest API ([`pyroscope`]).
pub mod pyroscope;
mod queue;
mod spool;
mod worker;

use std::{collections::BTreeMap, path::PathBuf, time::Duration, time::SystemTime};

pub use queue::{FlushOutcome, Pusher};
pub use worker::{PushStats, PushWorker};

/// Where and how to push, as plain values (the CLI converts `--push-url` into this).
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// The server, e.g. `http://pyroscope:4040` (`/ingest` is appended unless the URL
    /// already ends with it).
    pub url: String,
    /// The application name in Pyroscope (`service_name`).
    pub app_name: String,
    /// Labels on every capture, e.g. `host`.
    pub labels: BTreeMap<String, String>,
    /// Captures kept in the queue while the server is unreachable.
    pub max_queue: usize,
    /// Tries per profile before the queue waits for the next round.
    pub max_attempts: u32,
    /// Back-off after the first failure; doubles per failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Tenant of a multi-tenant Pyroscope (`X-Scope-OrgID`).
    pub tenant: Option<String>,
    /// A file to keep the queue in, so captures still queued when the profiler stops
    /// are pushed by the next run (e.g. `DIR/.push-queue.json`). None: memory only.
    pub spool: Option<PathBuf>,
}

impl PushOptions {
    /// Defaults for `url`: app `profiler`, label `host`, 64 queued captures, 3 tries,
    /// back-off 1 s doubling to 5 min, 30 s per request.
    pub fn new(url: impl Into<String>) -> Self {
        let mut labels = BTreeMap::new();
        if let Some(host) = hostname() {
            labels.insert("host".to_string(), host);
        }
        Self {
            url: url.into(),
            app_name: "profiler".into(),
            labels,
            max_queue: 64,
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            tenant: None,
            spool: None,
        }
    }
}

/// One capture to push: its profiles on disk, its window and its labels.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Capture {
    /// The capture directory; every `*.pb.gz` in it is pushed.
    pub dir: PathBuf,
    pub from: SystemTime,
    pub until: SystemTime,
    /// Labels of this capture, e.g. `container` and `process`.
    pub labels: BTreeMap<String, String>,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a gzipped pprof profile: {reason}")]
    Profile { path: PathBuf, reason: String },
    /// The server answered with an error status.
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    /// No answer (connection refused, timeout, reset).
    #[error("sending to the server: {0}")]
    Transport(String),
}

impl PushError {
    /// Whether trying again later can succeed: the server was unreachable, busy or
    /// failing, rather than rejecting the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::Url { .. } | Self::Read { .. } | Self::Profile { .. } => false,
        }
    }
}

/// This machine's host name, for the `host` label.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and the last byte stays 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}
