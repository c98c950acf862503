//! Keeping the target set up to date during a capture: processes that join (forked
//! children the kernel already follows, new matches of a rescan, any process with
//! `--all`) are seeded and announced, targets that exit are finalised.
//!
//! `record` calls [`apply_batch`] for every batch of records and [`update_targets`]
//! every [`RESCAN_INTERVAL`]; a long-running capture (the daemon) does the same.
use std::time::Duration;

use super::{allocators, RecordOptions, Session};
use crate::{
    collect::{Collector, Record},
    procfs,
    targets::{ProcessInfo, TargetSelector},
};

/// How often the target set is rescanned for new matches of `--comm`, `--cgroup` and
/// `--container` (a restarted container's process is forked by the runtime, not by the
/// old target, so only a scan finds it) and for targets that exited.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(250);

/// Ingest a batch of records (draining it); processes the session adopted from their
/// first event get their program break told to the kernel side and, with
/// `--allocations`, their allocator probed.
pub fn apply_batch(
    collector: &mut Collector,
    session: &mut Session,
    selector: &TargetSelector,
    opts: &RecordOptions,
    batch: &mut Vec<Record>,
) -> anyhow::Result<()> {
    session.prepare_stacks(batch);
    for record in batch.drain(..) {
        session.ingest(record);
    }
    session.forget_prepared();
    for (pid, brk) in session.take_adopted() {
        if let Some(brk) = brk {
            collector.seed_brk(pid, brk)?;
        }
        // With --all every process is adopted: no announcement, no per-process uprobes.
        if !selector.is_all() {
            joined(collector, session, opts, pid, "forked by a target");
        }
    }
    Ok(())
}

/// A process joined: probe its allocator when asked, and say so.
fn joined(
    collector: &mut Collector,
    session: &mut Session,
    opts: &RecordOptions,
    pid: u32,
    why: &str,
) {
    if opts.memory {
        allocators::join(collector, session, pid, opts);
    }
    announce(why, session, pid);
}

/// One rescan: targets that are gone are finalised and leave the kernel's target map
/// (their PID may be reused); new matches of the selectors become targets.
pub fn update_targets(
    collector: &mut Collector,
    session: &mut Session,
    selector: &TargetSelector,
    opts: &RecordOptions,
) -> anyhow::Result<()> {
    let gone: Vec<u32> = session
        .state
        .targets
        .values()
        .filter(|t| !t.exited && !procfs::is_alive(t.pid))
        .map(|t| t.pid)
        .collect();
    for pid in gone {
        session.mark_exited(pid);
        if !selector.is_all() {
            // Its frees are counted in a map entry that leaves with it.
            session.read_free_flow_of(collector, pid);
            collector.remove_target(pid)?;
        }
    }
    if !selector.follows_new_processes() || selector.is_all() {
        return Ok(());
    }
    session.forget_dead_ignored();
    for p in selector.scan_unknown(|pid| session.knows(pid)) {
        // Gone between the scan and now: the next scan will not see it either.
        if let Ok(brk) = session.add_target(p.pid) {
            collector.add_target(p.pid, brk)?;
            joined(collector, session, opts, p.pid, "matched");
        }
    }
    Ok(())
}

/// `profiler: following comm (pid N) …, <why>`: tells a person (and the tests) when a
/// process joined the capture.
fn announce(why: &str, session: &Session, pid: u32) {
    if let Some(t) = session.state.targets.get(&pid) {
        eprintln!(
            "profiler: following {}, {why}",
            describe_processes(&[ProcessInfo {
                pid,
                comm: t.comm.clone(),
                identity: t.identity.clone(),
            }])
        );
    }
}

/// `nginx (pid 12, container 4f1d2c3b5a69), nginx (pid 13)`; the first 10 only.
pub fn describe_processes(processes: &[ProcessInfo]) -> String {
    let mut parts: Vec<String> = processes
        .iter()
        .take(10)
        .map(|p| {
            let mut s = format!("{} (pid {}", p.comm, p.pid);
            if let Some(ns) = p.identity.ns_pid {
                s.push_str(&format!(", pid {ns} in its namespace"));
            }
            if let Some(c) = &p.identity.container {
                s.push_str(&format!(", container {}", c.short()));
            }
            s.push(')');
            s
        })
        .collect();
    if processes.len() > 10 {
        parts.push(format!("and {} more", processes.len() - 10));
    }
    parts.join(", ")
}
