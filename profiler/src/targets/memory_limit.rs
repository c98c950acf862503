//! The memory limit a process runs into: the smallest limit of its memory cgroup and
//! the cgroup's ancestors (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`), with
//! that cgroup's charged bytes (`memory.current`, `memory.usage_in_bytes`); the host's
//! memory when no cgroup limits it.
//!
//! A container's limit often sits on its pod's cgroup, one level up, so every ancestor
//! up to the mount's root is read. File reads go through a closure, so the rules are
//! tested on made-up trees.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::{self, Cgroup, CgroupMount, Hierarchy, MountVersion};

/// v1 reports "no limit" as a huge page-aligned number (`PAGE_COUNTER_MAX` pages):
/// anything from here on is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// Where a limit comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum LimitSource {
    /// cgroup v2 `memory.max` of this cgroup (path inside the hierarchy).
    CgroupV2 { cgroup: String },
    /// cgroup v1 `memory.limit_in_bytes` of this cgroup.
    CgroupV1 { cgroup: String },
    /// No cgroup limit: the host's memory (`MemTotal`).
    Host,
}

/// A limit and how much of it is in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLimit {
    pub limit_bytes: u64,
    /// Charged to the limiting cgroup (page cache included), or used on the host
    /// (`MemTotal - MemAvailable`).
    pub used_bytes: u64,
    #[serde(flatten)]
    pub source: LimitSource,
}

/// The limit of a process in the cgroup `lines` (its `/proc/PID/cgroup`), with the
/// cgroup mounts `mounts` and `meminfo` (`/proc/meminfo`) for the host. `read` reads a
/// file (None when absent or unreadable).
pub fn find(
    lines: &[Cgroup],
    mounts: &[CgroupMount],
    meminfo: Option<&str>,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<MemoryLimit> {
    cgroup_limit(lines, mounts, &read).or_else(|| host_limit(meminfo?))
}

/// The smallest limit on the path from the process's memory cgroup up to the root.
fn cgroup_limit(
    lines: &[Cgroup],
    mounts: &[CgroupMount],
    read: &impl Fn(&Path) -> Option<String>,
) -> Option<MemoryLimit> {
    let v1_memory = lines.iter().find(|c| match &c.hierarchy {
        Hierarchy::V1(controllers) => controllers.split(',').any(|c| c == "memory"),
        Hierarchy::V2 => false,
    });
    let (line, v2) = match v1_memory {
        Some(line) => (line, false),
        None => (lines.iter().find(|c| c.hierarchy == Hierarchy::V2)?, true),
    };
    let mount = mounts.iter().find(|m| match (&m.version, v2) {
        (MountVersion::V2, true) => true,
        (MountVersion::V1 { options }, false) => options.iter().any(|o| o == "memory"),
        _ => false,
    })?;
    let (limit_file, usage_file) = if v2 {
        ("memory.max", "memory.current")
    } else {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    };
    let root = mount.root.trim_end_matches('/');
    let mut best: Option<MemoryLimit> = None;
    let mut path = line.path.trim_end_matches('/').to_string();
    // The cgroup as the mount shows it (a cgroup namespace shows only a subtree).
    while let Some(rel) = path.strip_prefix(root) {
        let dir: PathBuf = mount.mount_point.join(rel.trim_start_matches('/'));
        let limit = read(&dir.join(limit_file)).and_then(|t| parse_limit(&t));
        if let Some(limit) = limit {
            if best.as_ref().is_none_or(|b| limit < b.limit_bytes) {
                let used = read(&dir.join(usage_file))
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                let cgroup = if path.is_empty() {
                    "/".into()
                } else {
                    path.clone()
                };
                best = Some(MemoryLimit {
                    limit_bytes: limit,
                    used_bytes: used,
                    source: if v2 {
                        LimitSource::CgroupV2 { cgroup }
                    } else {
                        LimitSource::CgroupV1 { cgroup }
                    },
                });
            }
        }
        match path.rfind('/') {
            Some(i) if path.len() > root.len() => path.truncate(i),
            _ => break,
        }
    }
    best
}

/// `max` (v2) or a v1 "unlimited" value: None.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse().ok().filter(|&v| v > 0 && v < V1_UNLIMITED)
}

/// The host's memory from `/proc/meminfo`.
fn host_limit(meminfo: &str) -> Option<MemoryLimit> {
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").unwrap_or(total);
    Some(MemoryLimit {
        limit_bytes: total,
        used_bytes: total.saturating_sub(available),
        source: LimitSource::Host,
    })
}

/// The limit of process `pid`, read now (None when the process is gone).
pub fn read(pid: u32) -> Option<MemoryLimit> {
    let lines = cgroup::parse_proc_cgroup(&super::proc_scan::read_cgroup_text(pid)?);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| cgroup::parse_mountinfo(&t))
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    find(&lines, &mounts, meminfo.as_deref(), |p| {
        std::fs::read_to_string(p).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p| map.get(p).cloned()
    }

    const MEMINFO: &str =
        "MemTotal:       24576000 kB\nMemFree:  1000 kB\nMemAvailable:   20480000 kB\n";

    fn v2_mount() -> Vec<CgroupMount> {
        cgroup::parse_mountinfo(
            "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        )
    }

    /// Check that on cgroup v2 the smallest limit on the way up wins (a pod's limit
    /// above its container's "max"), with that cgroup's charge.
    #[test]
    fn v2_takes_the_smallest_ancestor_limit() {
        let lines = cgroup::parse_proc_cgroup("0::/kubepods/pod1/ctr\n");
        let read = files(&[
            ("/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n"),
            ("/sys/fs/cgroup/kubepods/pod1/memory.max", "536870912\n"),
            ("/sys/fs/cgroup/kubepods/pod1/memory.current", "104857600\n"),
            ("/sys/fs/cgroup/kubepods/memory.max", "1073741824\n"),
            ("/sys/fs/cgroup/kubepods/memory.current", "204857600\n"),
        ]);
        let limit = find(&lines, &v2_mount(), Some(MEMINFO), read).unwrap();
        assert_eq!(limit.limit_bytes, 512 << 20);
        assert_eq!(limit.used_bytes, 100 << 20);
        assert_eq!(
            limit.source,
            LimitSource::CgroupV2 {
                cgroup: "/kubepods/pod1".into()
            }
        );
    }

    /// Check that a v1 memory hierarchy is read through its mount, and that v1's
    /// "unlimited" number is no limit.
    #[test]
    fn v1_limit_and_unlimited() {
        let mounts = cgroup::parse_mountinfo(
            "40 30 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        let lines = cgroup::parse_proc_cgroup("9:memory:/docker/abc\n0::/\n");
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "268435456\n",
            ),
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes",
                "1048576\n",
            ),
            (
                "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        let limit = find(&lines, &mounts, None, read).unwrap();
        assert_eq!((limit.limit_bytes, limit.used_bytes), (256 << 20, 1 << 20));
        assert!(matches!(limit.source, LimitSource::CgroupV1 { .. }));
    }

    /// Check that without any cgroup limit the host's memory is the limit, with what
    /// is not available as used.
    #[test]
    fn unlimited_falls_back_to_the_host() {
        let lines = cgroup::parse_proc_cgroup("0::/user.slice/session\n");
        let read = files(&[("/sys/fs/cgroup/user.slice/session/memory.max", "max\n")]);
        let limit = find(&lines, &v2_mount(), Some(MEMINFO), read).unwrap();
        assert_eq!(limit.source, LimitSource::Host);
        assert_eq!(limit.limit_bytes, 24_576_000 * 1024);
        assert_eq!(limit.used_bytes, 4_096_000 * 1024);
        assert!(find(&lines, &v2_mount(), None, files(&[])).is_none());
    }
}
