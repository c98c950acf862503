//! A [`Pusher`] on a thread of its own, fed through a channel.
use std::{
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{Capture, PushError, PushOptions, Pusher};

/// Counters of a worker, for the daemon's log and index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    pub sent: u64,
    pub failed_attempts: u64,
    pub rejected: u64,
    pub queued: usize,
    pub dropped_from_queue: u64,
    pub last_error: Option<String>,
}

enum Message {
    Capture(Capture),
    Stop { grace: Duration },
}

/// Pushes captures in the background; dropping it stops the thread after one last
/// round.
pub struct PushWorker {
    tx: mpsc::Sender<Message>,
    stats: Arc<Mutex<PushStats>>,
    thread: Option<JoinHandle<()>>,
}

impl PushWorker {
    /// Check `opts` and start the thread.
    pub fn spawn(opts: PushOptions) -> Result<Self, PushError> {
        let mut pusher = Pusher::new(opts)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(PushStats::default()));
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("pyroscope-push".into())
            .spawn(move || run(&mut pusher, &rx, &shared))
            .map_err(|e| PushError::Transport(format!("starting the push thread: {e}")))?;
        Ok(Self {
            tx,
            stats,
            thread: Some(thread),
        })
    }

    /// Queue a capture for pushing; returns at once.
    pub fn submit(&self, capture: Capture) {
        let _ = self.tx.send(Message::Capture(capture));
    }

    pub fn stats(&self) -> PushStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stop after one last round, waiting at most `grace` for it to start; what is
    /// still queued stays on disk only.
    pub fn shutdown(mut self, grace: Duration) -> PushStats {
        self.stop(grace);
        self.stats()
    }

    fn stop(&mut self, grace: Duration) {
        let _ = self.tx.send(Message::Stop { grace });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PushWorker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}

fn run(pusher: &mut Pusher, rx: &mpsc::Receiver<Message>, stats: &Mutex<PushStats>) {
    loop {
        let wait = pusher.not_before().map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        let wait = if pusher.queued() == 0 {
            Duration::from_secs(3600)
        } else {
            wait
        };
        match rx.recv_timeout(wait) {
            Ok(Message::Capture(c)) => {
                if let Err(e) = pusher.enqueue(c) {
                    record(stats, pusher, None, Some(e.to_string()));
                    continue;
                }
            }
            Ok(Message::Stop { grace }) => {
                let deadline = Instant::now() + grace;
                if pusher.not_before().is_none_or(|t| t <= deadline) {
                    if let Some(t) = pusher.not_before() {
                        std::thread::sleep(t.saturating_duration_since(Instant::now()));
                    }
                    let outcome = pusher.flush();
                    record(stats, pusher, Some(&outcome), outcome.last_error.clone());
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let outcome = pusher.flush();
        record(stats, pusher, Some(&outcome), outcome.last_error.clone());
    }
}

fn record(
    stats: &Mutex<PushStats>,
    pusher: &Pusher,
    outcome: Option<&super::FlushOutcome>,
    error: Option<String>,
) {
    if let Ok(mut s) = stats.lock() {
        if let Some(o) = outcome {
            s.sent += o.sent;
            s.failed_attempts += o.failed_attempts;
            s.rejected += o.rejected;
        }
        s.queued = pusher.queued();
        s.dropped_from_queue = pusher.dropped();
        if error.is_some() {
            s.last_error = error;
        }
    }
}
