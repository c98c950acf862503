//! The blocked-on view: folded lines of blocked time and the wait part of the report.
use std::{collections::BTreeMap, fmt::Write as _};

use super::folded::{process_root, sanitize};
use crate::model::{ProcessWaits, WaitReport};

/// `[container ID;]comm (pid);<wait kind>;frames… MICROSECONDS`, in-flight waits
/// included with their time inside the window so far.
pub fn folded_lines(report: &WaitReport) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |p: &ProcessWaits, kind: &str, frames: &[String], ns: u64| {
        let mut key = format!(
            "{};{}",
            process_root(&p.comm, p.pid, &p.identity),
            sanitize(kind)
        );
        for f in frames {
            key.push(';');
            key.push_str(&sanitize(f));
        }
        *merged.entry(key).or_insert(0) += ns / 1000;
    };
    for p in &report.processes {
        for b in &p.completed {
            add(p, &b.kind, &b.frames, b.ns);
        }
        for g in &p.in_flight {
            let ns = g.blocked_at_least_ns.min(p.observed_ns) * g.tids.len() as u64;
            add(p, &g.kind, &g.stack, ns);
        }
    }
    merged
        .into_iter()
        .filter(|(_, us)| *us > 0)
        .map(|(k, us)| format!("{k} {us}"))
        .collect()
}

/// The wait section of report.txt.
pub fn text(report: &WaitReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "waits: threshold {:.1} ms (shorter waits counted only: {}), stall threshold {:.1} s",
        report.threshold_ns as f64 / 1e6,
        report.short_waits,
        report.stall_threshold_ns as f64 / 1e9
    );
    for p in &report.processes {
        let _ = writeln!(
            out,
            "\n== {} (pid {}), {} threads",
            p.comm, p.pid, p.threads
        );
        if let Some(line) = super::report::identity_line(&p.identity) {
            let _ = writeln!(out, "   {line}");
        }
        let _ = writeln!(out, "   {}", super::verdict::stall_line(&p.verdict));
        if let Some(census) = &p.async_census {
            let _ = writeln!(out, "   {}", super::async_census::census_line(census));
        }
        requests_text(&mut out, p);
        if !p.in_flight.is_empty() {
            let _ = writeln!(out, "   blocked now:");
            for g in &p.in_flight {
                let wakes = g
                    .wakes
                    .map(|w| format!(", {w} wakes in window"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "   - {} thread(s) {:?} on {} for at least {:.1} s{}{}",
                    g.tids.len(),
                    g.tids,
                    g.on,
                    g.blocked_at_least_ns as f64 / 1e9,
                    wakes,
                    if g.stuck { " [stuck]" } else { "" }
                );
                for f in g.stack.iter().rev().take(12) {
                    let _ = writeln!(out, "         {f}");
                }
            }
        }
        if !p.futexes.is_empty() {
            let _ = writeln!(out, "   futexes (waits started / wakes in window):");
            for (addr, waits, wakes) in p.futexes.iter().take(10) {
                let _ = writeln!(out, "     0x{addr:x}: {waits} waiters, {wakes} wakes");
            }
        }
        if !p.completed.is_empty() {
            let _ = writeln!(
                out,
                "   longest blocked stacks (waits that ended in the window):"
            );
            for b in p.completed.iter().take(10) {
                let leaf = b.frames.last().map(String::as_str).unwrap_or("?");
                let _ = writeln!(
                    out,
                    "     {:>10.1} ms in {} waits on {} at {leaf}",
                    b.ns as f64 / 1e6,
                    b.count,
                    b.on
                );
            }
        }
    }
    out
}

/// Requests in flight per listener and connections per outbound peer (the request
/// ledger), one line each.
fn requests_text(out: &mut String, p: &ProcessWaits) {
    for l in &p.requests {
        let _ = writeln!(
            out,
            "   requests on :{}: {} in flight (oldest {:.1} s), {} answered in the window; in flight per second: {:?}",
            l.port,
            l.in_flight,
            l.oldest_ns as f64 / 1e9,
            l.answered,
            l.in_flight_series
        );
    }
    for c in &p.peers {
        let tx = if c.in_transaction > 0 {
            format!(
                ", {} in a transaction (longest {:.1} s){}",
                c.in_transaction,
                c.in_transaction_ns as f64 / 1e9,
                super::stall_verdict::begun_under(c)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "   connections to {}{}: {} open, {} silent the whole window{tx}",
            c.peer,
            c.protocol
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default(),
            c.open,
            c.silent
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockedStack, StallVerdict};
    use crate::targets::{container::from_cgroup_path, ProcessIdentity};

    fn process(identity: ProcessIdentity) -> ProcessWaits {
        ProcessWaits {
            pid: 40,
            comm: "api".into(),
            identity,
            threads: 2,
            verdict: StallVerdict::Exited,
            completed: vec![BlockedStack {
                kind: "futex".into(),
                on: "futex 0x10".into(),
                frames: vec!["main".into(), "lock".into()],
                ns: 3_000_000,
                count: 1,
                locations: Vec::new(),
            }],
            in_flight: Vec::new(),
            futexes: Vec::new(),
            observed_ns: 1,
            async_census: None,
            requests: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// Check that a containerised process's waits are rooted under its container, its
    /// identity is in the text and flattened into the JSON, and that a process without
    /// one renders as before.
    #[test]
    fn container_processes_group_under_their_container() {
        let identity = ProcessIdentity {
            container: from_cgroup_path(&format!("/docker/{}", "c0ffee".repeat(10) + "0123")),
            cgroup: Some("/docker/x".into()),
            ns_pid: Some(7),
        };
        let report = WaitReport {
            processes: vec![process(identity), process(ProcessIdentity::default())],
            ..Default::default()
        };
        let lines = folded_lines(&report);
        assert_eq!(
            lines,
            vec![
                "api (40);futex;main;lock 3000",
                "container c0ffeec0ffee;api (40);futex;main;lock 3000"
            ]
        );
        let text = text(&report);
        assert!(text.contains(&format!(
            "== api (pid 40), 2 threads\n   container {} (docker), cgroup /docker/x, pid 7 in its PID namespace\n",
            "c0ffee".repeat(10) + "0123"
        )), "{text}");
        let json = serde_json::to_value(&report.processes[0]).unwrap();
        assert_eq!(json["pid"], 40);
        assert_eq!(json["ns_pid"], 7);
        assert_eq!(json["cgroup"], "/docker/x");
        assert_eq!(json["container"]["runtime"], "docker");
        let plain = serde_json::to_value(&report.processes[1]).unwrap();
        assert!(plain.get("container").is_none() && plain.get("ns_pid").is_none());
    }
}
