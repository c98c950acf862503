//! The plain-text report (`report.txt`) and its JSON twin (`report.json`).
use std::fmt::Write as _;

use super::TOP_STACKS;
use crate::{
    model::{MemoryReport, ProcessMemory, StackGrowth},
    targets::ProcessIdentity,
    units::human_bytes,
};

/// The report as text, for a person in the middle of an incident.
pub fn text(report: &MemoryReport) -> String {
    let mut out = String::new();
    let c = &report.counters;
    let _ = writeln!(out, "{}", header(report));
    // Allocator calls are not events (they are counted apart), yet their samples are
    // among the stack samples: say so, or "samples 478" next to "events 336" reads
    // as an error.
    let _ = writeln!(
        out,
        "events seen {} (mapping calls, waits, exits), events lost {}{}",
        c.seen,
        c.lost,
        if c.lost > 0 {
            " (ring buffer full: totals below are incomplete; raise --sample-bytes)"
        } else {
            ""
        }
    );
    let allocator = c.alloc_calls > 0 || c.alloc_table_full > 0;
    if allocator {
        let _ = writeln!(
            out,
            "allocator calls seen {} (malloc, free, …: counted apart from events){}",
            c.alloc_calls,
            if c.alloc_table_full > 0 {
                format!(
                    ", sampled allocations not tracked (kernel table full) {}",
                    c.alloc_table_full
                )
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "stack samples taken {}{}: one per {} mapped{} on average (unbiased estimates)",
        c.sampled,
        if allocator {
            " from events and allocator calls together"
        } else {
            ""
        },
        human_bytes(report.sample_bytes as f64),
        if allocator {
            format!(
                ", one per {} allocated",
                human_bytes(report.alloc_sample_bytes as f64)
            )
        } else {
            String::new()
        }
    );
    if c.decode_errors > 0 || c.stack_read_failed > 0 {
        let _ = writeln!(
            out,
            "records not decoded {}, stacks not readable {}",
            c.decode_errors, c.stack_read_failed
        );
    }
    if c.forks_followed > 0 {
        let _ = writeln!(
            out,
            "child processes of targets followed from their fork: {}",
            c.forks_followed
        );
    }
    if c.sock_records > 0 || c.sock_table_full > 0 {
        let _ = writeln!(
            out,
            "socket records (connection ledger) {}, sockets not followed (kernel table full) {}, transfers whose bytes could not be read {}",
            c.sock_records, c.sock_table_full, c.sock_copy_failed
        );
    }
    for p in &report.processes {
        out.push('\n');
        process_text(&mut out, p, span(report));
    }
    out
}

/// The first line: what recorded the report and what span its numbers cover. A daemon
/// interval's live memory counts from the attach, not from the interval's start.
pub fn header(report: &MemoryReport) -> String {
    match report.since_follow_secs {
        Some(since) => format!(
            "profiler daemon: {}, interval {:.1} s; live memory counted since the probes attached {:.1} s ago",
            report.target, report.window_secs, since
        ),
        None => format!(
            "profiler record: {}, window {:.1} s",
            report.target, report.window_secs
        ),
    }
}

/// The span the live bytes of the stacks were created in: `in the window`, or for a
/// daemon `since the process was first followed`.
pub fn span(report: &MemoryReport) -> &'static str {
    if report.since_follow_secs.is_some() {
        "since the process was first followed"
    } else {
        "in the window"
    }
}

fn process_text(out: &mut String, p: &ProcessMemory, span: &str) {
    let _ = writeln!(
        out,
        "== {} (pid {}){}",
        p.comm,
        p.pid,
        if p.exited {
            " — exited during the window"
        } else {
            ""
        }
    );
    if let Some(line) = identity_line(&p.identity) {
        let _ = writeln!(out, "   {line}");
    }
    super::verdict::memory_text(out, p);
    if let Some(f) = &p.oom {
        let _ = writeln!(out, "   time to OOM: {}", super::oom::line(f));
    }
    let _ = writeln!(out, "   memory events {}, sampled {}", p.events, p.samples);
    if let (Some(before), Some(after)) = (&p.rss_before, &p.rss_after) {
        let _ = writeln!(
            out,
            "   RSS {} -> {} ({}; anon {} -> {}, file {} -> {}, shmem {} -> {})",
            human_bytes(before.total as f64),
            human_bytes(after.total as f64),
            signed(after.total as f64 - before.total as f64),
            human_bytes(before.anon as f64),
            human_bytes(after.anon as f64),
            human_bytes(before.file as f64),
            human_bytes(after.file as f64),
            human_bytes(before.shmem as f64),
            human_bytes(after.shmem as f64),
        );
    } else if let Some(before) = &p.rss_before {
        let _ = writeln!(out, "   RSS at start {}", human_bytes(before.total as f64));
    }
    super::allocations::resident_text(out, p);
    super::allocations::allocations_text(out, p);
    let _ = writeln!(
        out,
        "   mapped (committed) by region kind: before -> after (net)"
    );
    let net = p.net_by_kind();
    for (kind, delta) in &net {
        let before = p.mapped_before.get(kind).copied().unwrap_or(0);
        let after = p.mapped_after.get(kind).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "     {:<14} {:>11} -> {:>11} ({})",
            kind,
            human_bytes(before as f64),
            human_bytes(after as f64),
            signed(*delta as f64)
        );
    }
    let total: i64 = net.values().sum();
    let _ = writeln!(
        out,
        "     {:<14} {:>29}",
        "total",
        format!("({})", signed(total as f64))
    );
    if p.reserved_after > 0 {
        let _ = writeln!(
            out,
            "   reserved, not committed (PROT_NONE): {}",
            human_bytes(p.reserved_after as f64)
        );
    }
    let attributed = p.attributed_growth();
    if p.growth.is_empty() {
        let _ = writeln!(out, "   no stack holds memory created {span}");
        return;
    }
    let _ = writeln!(
        out,
        "   top growing stacks (live bytes created {span}, estimated {}):",
        human_bytes(attributed)
    );
    for (i, g) in top_stacks(p).iter().enumerate() {
        let pct = if attributed > 0.0 {
            100.0 * g.bytes / attributed
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "   {:>2}. {:>10} {:>5.1}%  [{}]",
            i + 1,
            human_bytes(g.bytes),
            pct,
            g.kind.label()
        );
        for f in g.frames.iter().rev().take(12) {
            let _ = writeln!(out, "         {f}");
        }
        if g.frames.len() > 12 {
            let _ = writeln!(out, "         … {} more callers", g.frames.len() - 12);
        }
    }
    if let Some(js) = &p.js_frames {
        let _ = writeln!(out, "   {}", js.summary());
    }
    if p.truncated_stacks > 0 {
        let _ = writeln!(out, "   note: {} stacks ended early (stack copy too short or unreadable); raise --stack-pages", p.truncated_stacks);
    }
}

/// `container docker 4f1d… , cgroup /…, pid 1 in its PID namespace`: who a process is
/// beyond `comm (pid)`; None when nothing is known (no line, so reports of processes on
/// a host without that information read as before).
pub fn identity_line(id: &ProcessIdentity) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(c) = &id.container {
        parts.push(match c.runtime {
            Some(runtime) => format!("container {} ({runtime})", c.id),
            None => format!("container {}", c.id),
        });
    }
    if let Some(cgroup) = &id.cgroup {
        parts.push(format!("cgroup {cgroup}"));
    }
    if let Some(ns_pid) = id.ns_pid {
        parts.push(format!("pid {ns_pid} in its PID namespace"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The largest growing stacks of a process, biggest first.
pub fn top_stacks(p: &ProcessMemory) -> Vec<&StackGrowth> {
    let mut v: Vec<_> = p.growth.iter().filter(|g| g.bytes >= 1.0).collect();
    v.sort_by(|a, b| {
        b.bytes
            .total_cmp(&a.bytes)
            .then_with(|| a.frames.cmp(&b.frames))
    });
    v.truncate(TOP_STACKS);
    v
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", human_bytes(v))
    } else {
        human_bytes(v)
    }
}

/// The report as JSON (the same numbers, for machines).
pub fn json(report: &MemoryReport) -> serde_json::Value {
    let processes: Vec<_> = report
        .processes
        .iter()
        .map(|p| {
            let attributed = p.attributed_growth();
            let mut fields = super::allocations::json_fields(p);
            let base = serde_json::json!({
                "pid": p.pid,
                "comm": p.comm,
                "exited": p.exited,
                "rss_before": p.rss_before,
                "rss_after": p.rss_after,
                "mapped_before": p.mapped_before,
                "mapped_after": p.mapped_after,
                "net_growth": p.net_by_kind(),
                "reserved_after": p.reserved_after,
                "events": p.events,
                "samples": p.samples,
                "truncated_stacks": p.truncated_stacks,
                "attributed_growth_bytes": attributed.round() as u64,
                "top_stacks": top_stacks(p).iter().map(|g| serde_json::json!({
                    "kind": g.kind,
                    "bytes": g.bytes.round() as u64,
                    "percent": if attributed > 0.0 { 100.0 * g.bytes / attributed } else { 0.0 },
                    "frames": g.frames,
                })).collect::<Vec<_>>(),
            });
            if let serde_json::Value::Object(base) = base {
                fields.extend(base);
            }
            // Container, cgroup and namespace PID only when known.
            if let Ok(serde_json::Value::Object(id)) = serde_json::to_value(&p.identity) {
                fields.extend(id);
            }
            // A daemon's forecast, when its growth is steady.
            if let Some(f) = &p.oom {
                fields.insert(
                    "time_to_oom".into(),
                    serde_json::json!({ "line": super::oom::line(f), "forecast": f }),
                );
            }
            // JavaScript frames only for node processes.
            if let Some(js) = &p.js_frames {
                fields.insert("js_frames".into(), serde_json::json!(js));
            }
            serde_json::Value::Object(fields)
        })
        .collect();
    let mut json = serde_json::json!({
        "target": report.target,
        "window_secs": report.window_secs,
        "sample_bytes": report.sample_bytes,
        "alloc_sample_bytes": report.alloc_sample_bytes,
        "events_seen": report.counters.seen,
        "samples_taken": report.counters.sampled,
        "events_lost": report.counters.lost,
        "records_not_decoded": report.counters.decode_errors,
        "allocator_calls": report.counters.alloc_calls,
        "allocations_not_tracked_table_full": report.counters.alloc_table_full,
        "stacks_not_readable": report.counters.stack_read_failed,
        "forks_followed": report.counters.forks_followed,
        "processes": processes,
    });
    if let Some(since) = report.since_follow_secs {
        json["since_follow_secs"] = since.into();
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that report.json carries a process's container, cgroup and namespace PID
    /// next to its host PID, and leaves them out when unknown.
    #[test]
    fn json_carries_identity_when_known() {
        let id = "ab".repeat(32);
        let known = ProcessMemory {
            pid: 4321,
            comm: "app".into(),
            identity: ProcessIdentity {
                container: crate::targets::container::from_cgroup_path(&format!(
                    "/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"
                )),
                cgroup: Some("/kubepods.slice/x".into()),
                ns_pid: Some(1),
            },
            ..Default::default()
        };
        let unknown = ProcessMemory {
            pid: 5,
            ..Default::default()
        };
        let report = MemoryReport {
            processes: vec![known, unknown],
            ..Default::default()
        };
        let json = json(&report);
        let p = &json["processes"][0];
        assert_eq!(p["pid"], 4321);
        assert_eq!(p["ns_pid"], 1);
        assert_eq!(p["cgroup"], "/kubepods.slice/x");
        assert_eq!(p["container"]["id"], id);
        assert_eq!(p["container"]["runtime"], "containerd");
        let q = &json["processes"][1];
        assert!(q.get("container").is_none() && q.get("cgroup").is_none());
        assert!(text(&report).contains(&format!(
            "   container {id} (containerd), cgroup /kubepods.slice/x, pid 1 in its PID namespace\n"
        )));
    }
}
