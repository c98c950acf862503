//! Stall verdicts in words: the sentences of `stalls`, report.txt, the waits.svg
//! subtitle and daemon stall snapshots, from the plain facts of
//! [`crate::analyze::waits`]. Memory verdicts are in [`super::verdict`].
use crate::model::{CycleStep, Evidence, OwnerWait, PeerPool, RequestStall, StallVerdict};

/// One line for the report.
pub fn stall_line(v: &StallVerdict) -> String {
    match v {
        StallVerdict::Stalled { stuck, threads, on, frame_below_lock, blocked_at_least_ns, evidence } => format!(
            "STALLED: {stuck} of {threads} threads blocked for at least {:.1} s on {on} with no wake{}; unmet demand: {}",
            *blocked_at_least_ns as f64 / 1e9,
            frame_below_lock.as_ref().map(|f| format!(", waiting in {f}")).unwrap_or_default(),
            evidence.iter().map(evidence_clause).collect::<Vec<_>>().join("; ")
        ),
        StallVerdict::Deadlocked { threads, cycle, stuck, blocked_at_least_ns } => format!(
            "DEADLOCK: {} threads wait for each other's locks, blocked for at least {:.1} s: {} ({stuck} of {threads} threads stuck with them)",
            cycle.len(),
            *blocked_at_least_ns as f64 / 1e9,
            cycle.iter().map(cycle_clause).collect::<Vec<_>>().join("; ")
        ),
        StallVerdict::Idle { threads, detail } => format!("not stalled: idle ({detail}; {threads} threads)"),
        StallVerdict::Exited => "exited before the end of the window: completed waits only".into(),
        StallVerdict::Progressing { stuck, threads } => {
            format!("not stalled: {stuck} of {threads} threads blocked past the threshold with no wake")
        }
        StallVerdict::Requests(r) => requests_line(r),
    }
}

/// `STALLED (requests): 214 requests (POST /orders) on :3000 unanswered, oldest 43.0 s,
/// none answered in 40.0 s (while GET /health on :3000 answered 38); pool to
/// 127.0.0.1:5432: 10/10 connections idle for the whole 2.0 s window — …`
pub fn requests_line(r: &RequestStall) -> String {
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut line = format!(
        "STALLED (requests): {} {} ({}) on :{} unanswered, oldest {:.1} s, none answered in {:.1} s",
        r.unanswered,
        r.unit,
        r.routes.join(", "),
        r.port,
        secs(r.oldest_ns),
        secs(r.none_answered_ns)
    );
    if let Some((what, n)) = &r.while_answered {
        line.push_str(&format!(" (while {what} answered {n})"));
    }
    if let Some(p) = &r.pool {
        let (held, idle) = if p.in_transaction == p.open {
            (
                p.in_transaction,
                format!("idle in transaction for {:.1} s", secs(p.in_transaction_ns)),
            )
        } else {
            (
                p.silent,
                format!("idle for the whole {:.1} s window", secs(r.window_ns)),
            )
        };
        line.push_str(&format!(
            "; pool to {}{}: {held}/{} connections {idle}{} — the pool is exhausted by requests that hold a connection and wait for another",
            p.peer,
            p.protocol.as_deref().map(|p| format!(" ({p})")).unwrap_or_default(),
            p.open,
            begun_under(p)
        ));
    }
    line
}

/// `, each begun under insertOrder (orders.js:63)` when one function began every open
/// transaction the probes saw begin, `, begun under f (6), g (4)` for several, or
/// nothing.
pub fn begun_under(p: &PeerPool) -> String {
    match p.begun_under.as_slice() {
        [] => String::new(),
        [one] if one.connections == p.in_transaction => {
            format!(", each begun under {}", frame_label(&one.function))
        }
        several => format!(
            ", begun under {}",
            several
                .iter()
                .map(|o| format!("{} ({})", frame_label(&o.function), o.connections))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A frame as a verdict names it: `JS:insertOrder /srv/app/orders.js:63` reads
/// `insertOrder (orders.js:63)`, a library's frame keeps its package
/// (`query (typeorm/…/PostgresQueryRunner.js:185)`).
fn frame_label(frame: &str) -> String {
    let Some(js) = frame.strip_prefix("JS:") else {
        return frame.to_string();
    };
    match js.split_once(' ') {
        Some((function, location)) => {
            let file = location.rsplit('/').next().unwrap_or(location);
            let package = location
                .rsplit_once("/node_modules/")
                .and_then(|(_, rest)| rest.split('/').next())
                .filter(|p| !p.is_empty() && *p != file)
                .map(|p| format!("{p}/…/"))
                .unwrap_or_default();
            format!("{} ({package}{file})", function.trim_start_matches('*'))
        }
        None => js.trim_start_matches('*').to_string(),
    }
}

/// A short form for a flamegraph subtitle, which has one line of ~150 characters.
pub fn stall_short(v: &StallVerdict) -> String {
    match v {
        StallVerdict::Stalled {
            stuck,
            threads,
            on,
            frame_below_lock,
            evidence,
            ..
        } => format!(
            "STALLED: {stuck}/{threads} threads on {on}{}{}",
            frame_below_lock
                .as_ref()
                .map(|f| format!(" in {f}"))
                .unwrap_or_default(),
            evidence
                .first()
                .map(|e| format!(" ({})", evidence_short(e)))
                .unwrap_or_default()
        ),
        // The first clause of the detail: `idle: 8 threads waiting for work in
        // worker_wait_for_job`, `idle in epoll_wait`.
        StallVerdict::Idle { detail, .. } => {
            let first = detail.split([';', ',']).next().unwrap_or_default();
            let first = first.split(" on futex ").next().unwrap_or_default();
            if first.starts_with("idle") {
                first.to_string()
            } else {
                format!("idle: {first}")
            }
        }
        StallVerdict::Deadlocked { cycle, .. } => format!(
            "DEADLOCK: TIDs {} wait for each other's locks{}",
            cycle
                .iter()
                .map(|c| c.tid.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            cycle
                .first()
                .and_then(|c| c.frame.as_ref())
                .map(|f| format!(" in {f}"))
                .unwrap_or_default()
        ),
        StallVerdict::Progressing { .. } => "not stalled".into(),
        StallVerdict::Exited => "exited".into(),
        StallVerdict::Requests(r) => format!(
            "STALLED (requests): {} {} on :{} unanswered, oldest {:.0} s{}",
            r.unanswered,
            r.unit,
            r.port,
            r.oldest_ns as f64 / 1e9,
            r.pool
                .as_ref()
                .map(|p| if p.in_transaction == p.open {
                    format!(
                        "; pool to {}: {}/{} idle in transaction",
                        p.peer, p.in_transaction, p.open
                    )
                } else {
                    format!("; pool to {}: {}/{} idle", p.peer, p.silent, p.open)
                })
                .unwrap_or_default()
        ),
    }
}

/// `TID 3001 in transfer waits for futex 0xa000 held by TID 3002`.
fn cycle_clause(c: &CycleStep) -> String {
    format!(
        "TID {}{} waits for {} held by TID {}",
        c.tid,
        in_frame(c.frame.as_deref()),
        c.on,
        c.owner
    )
}

/// `340 ms` under a second (an owner's current nap is often young), else `2.0 s`.
fn short_duration(ns: u64) -> String {
    if ns < 1_000_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else {
        format!("{:.1} s", ns as f64 / 1e9)
    }
}

/// ` in hold_lock`, or nothing when the frame is not known.
fn in_frame(frame: Option<&str>) -> String {
    frame.map(|f| format!(" in {f}")).unwrap_or_default()
}

/// What the owner of a lock is doing, after `held by TID N`: ` in hold_lock, which is
/// itself sleeping (clock_nanosleep for at least 340 ms)`.
fn owner_clause(w: Option<&OwnerWait>) -> String {
    match w {
        Some(w) => format!(
            "{}, which is itself {} ({} for at least {})",
            in_frame(w.frame.as_deref()),
            if w.sleeping { "sleeping" } else { "blocked" },
            w.on,
            short_duration(w.blocked_at_least_ns)
        ),
        None => ", which is not in a wait (running, or in another system call)".into(),
    }
}

/// One clause of the STALLED sentence: what demand is not being met.
pub fn evidence_clause(e: &Evidence) -> String {
    match e {
        Evidence::QueuedConnections { listener, queued } => {
            format!("{queued} connection(s) queued unaccepted on {listener}")
        }
        Evidence::UnreadRequests {
            listener,
            connections,
            bytes,
        } => format!(
            "{bytes} request byte(s) unread on {connections} connection(s) accepted on {listener}"
        ),
        Evidence::PileUp {
            on,
            arrived,
            over_ns,
        } => format!(
            "{arrived} threads began waiting on {on} over {:.1} s while watched, none woken",
            *over_ns as f64 / 1e9
        ),
        Evidence::LockCycle { tids } => {
            let chain: Vec<String> = tids.iter().map(u32::to_string).collect();
            format!(
                "lock cycle (deadlock): TID {} waits for {}",
                chain.join(" waits for "),
                chain[0]
            )
        }
        Evidence::LockHeld {
            on,
            owner,
            waiters,
            owner_waits,
        } => format!(
            "{waiters} thread(s) wait on the lock {on} held by TID {owner}{}",
            owner_clause(owner_waits.as_ref())
        ),
        Evidence::AwaitingPeer { peer, threads } => {
            format!("{threads} thread(s) waiting for an answer from {peer}")
        }
    }
}

/// A few words of evidence for a flamegraph subtitle.
pub fn evidence_short(e: &Evidence) -> String {
    match e {
        Evidence::QueuedConnections { listener, queued } => {
            format!("{queued} queued on {listener}")
        }
        Evidence::UnreadRequests { listener, .. } => format!("unread requests on {listener}"),
        Evidence::PileUp { arrived, .. } => format!("{arrived} waiters piled up"),
        Evidence::LockCycle { .. } => "lock cycle".into(),
        Evidence::LockHeld {
            owner, owner_waits, ..
        } => match owner_waits {
            Some(w) if w.sleeping => format!("lock held by {owner}, sleeping"),
            Some(_) => format!("lock held by {owner}, blocked"),
            None => format!("lock held by {owner}"),
        },
        Evidence::AwaitingPeer { peer, .. } => format!("no answer from {peer}"),
    }
}
