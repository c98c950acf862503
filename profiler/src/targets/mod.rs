//! Which processes to profile: `--pid`, `--comm REGEX`, `--cgroup PATH`,
//! `--container ID` and `--all`, and who a process is (container, cgroup, PID in its
//! own namespace).
//!
//! The API, for `record`, `stalls` and `daemon`:
//!
//! ```no_run
//! # fn main() -> Result<(), profiler::targets::TargetError> {
//! use profiler::targets::{TargetSelector, TargetSpec};
//! let spec = TargetSpec { comm: Some("^nginx".into()), ..Default::default() };
//! let mut selector = TargetSelector::new(&spec)?; // bad regex, missing cgroup: error
//! let now = selector.resolve()?; // the matches now; none, or an ambiguous prefix: error
//! // …later, every few hundred ms, to pick up new and restarted processes:
//! let again = selector.scan_unknown(|pid| now.iter().any(|p| p.pid == pid));
//! # Ok(()) }
//! ```
//!
//! Selectors combine as a union. Kernel threads, zombies and the profiler itself are
//! never selected. Matching reads only `/proc` (comm, cgroup, stat), so a scan of a
//! host with a few thousand processes takes milliseconds; the kernel side keeps the
//! chosen PIDs in a map and follows their forks itself.
pub mod cgroup;
pub mod container;
pub mod memory_limit;
pub mod proc_scan;

use regex::Regex;
use serde::Serialize;

pub use cgroup::Cgroup;
pub use container::ContainerId;

/// The selectors as given (the CLI converts its arguments into this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetSpec {
    pub pids: Vec<u32>,
    /// Regular expression searched in the process name (`/proc/PID/comm`).
    pub comm: Option<String>,
    /// Cgroup paths: absolute inside a cgroup mount, or relative to the mounts.
    pub cgroups: Vec<String>,
    /// Container IDs or unique prefixes of them.
    pub containers: Vec<String>,
    /// Every process (kernel threads excluded).
    pub all: bool,
}

impl TargetSpec {
    /// Only `--pid`: the target set changes only by forks of the targets.
    pub fn pids_only(&self) -> bool {
        self.comm.is_none() && self.cgroups.is_empty() && self.containers.is_empty() && !self.all
    }
}

/// A target that cannot be selected, as one line for the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no target: give --pid, --comm, --cgroup, --container or --all")]
    NoSelector,
    #[error("process {0} does not exist")]
    NoSuchProcess(u32),
    #[error("process {0} is a kernel thread, which has no user space to profile")]
    KernelThread(u32),
    #[error("bad --comm regular expression {pattern:?}: {detail}")]
    BadRegex { pattern: String, detail: String },
    #[error("--cgroup")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("--container {0:?} is not a container ID or ID prefix (hex digits)")]
    BadContainerId(String),
    #[error("no running process is in a container whose ID starts with {0}")]
    NoSuchContainer(String),
    #[error("container ID prefix {prefix} is ambiguous: it starts {ids}")]
    AmbiguousContainer { prefix: String, ids: String },
    #[error("no process matches {0}")]
    NoMatch(String),
}

/// Who a process is, beyond its host PID and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessIdentity {
    /// The container, when its cgroup path names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerId>,
    /// Its cgroup (see [`cgroup::display_path`] for which one on v1 hosts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Its PID inside its own PID namespace, when that is not ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
}

impl ProcessIdentity {
    /// From the text of `/proc/PID/cgroup` and the namespace PID.
    pub fn from_cgroups(lines: &[Cgroup], ns_pid: Option<u32>) -> Self {
        let found = lines
            .iter()
            .find_map(|c| Some((container::from_cgroup_path(&c.path)?, c)));
        Self {
            cgroup: cgroup::display_path(lines, found.as_ref().map(|(_, c)| *c)),
            container: found.map(|(id, _)| id),
            ns_pid,
        }
    }

    /// Anything worth printing beyond `comm (pid)`.
    pub fn is_empty(&self) -> bool {
        self.container.is_none() && self.cgroup.is_none() && self.ns_pid.is_none()
    }
}

/// Read who process `pid` is from /proc (empty when it is gone).
pub fn read_identity(pid: u32) -> ProcessIdentity {
    let lines = proc_scan::read_cgroup_text(pid)
        .map(|t| cgroup::parse_proc_cgroup(&t))
        .unwrap_or_default();
    ProcessIdentity::from_cgroups(&lines, proc_scan::read_ns_pid(pid))
}

/// Read the cgroup process `pid`'s memory limit applies to (see
/// [`cgroup::memory_cgroup`]); None once the process is gone.
pub fn read_memory_cgroup(pid: u32) -> Option<String> {
    cgroup::memory_cgroup(&cgroup::parse_proc_cgroup(&proc_scan::read_cgroup_text(
        pid,
    )?))
}

/// A selected process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host PID (thread-group id in the profiler's PID namespace).
    pub pid: u32,
    pub comm: String,
    pub identity: ProcessIdentity,
}

/// What matching looks at for one process.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    pub pid: u32,
    pub comm: String,
    pub cgroups: Vec<Cgroup>,
}

impl Candidate {
    fn container(&self) -> Option<ContainerId> {
        self.cgroups
            .iter()
            .find_map(|c| container::from_cgroup_path(&c.path))
    }
}

/// Compiled selectors. See the module documentation for the API.
#[derive(Clone, Debug)]
pub struct TargetSelector {
    pids: Vec<u32>,
    comm: Option<Regex>,
    cgroups: Vec<Cgroup>,
    /// Lower-case ID prefixes; full IDs after [`TargetSelector::resolve`].
    containers: Vec<String>,
    all: bool,
    /// Never selected: the profiler itself.
    self_pid: u32,
    description: String,
}

impl TargetSelector {
    /// Check and compile the selectors: a bad regex, a cgroup that does not exist or a
    /// container ID that is not hex is an error here, before anything is attached.
    pub fn new(spec: &TargetSpec) -> Result<Self, TargetError> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| cgroup::parse_mountinfo(&t))
            .unwrap_or_default();
        let own = proc_scan::read_cgroup_text(std::process::id())
            .map(|t| cgroup::parse_proc_cgroup(&t))
            .unwrap_or_default();
        Self::with_cgroup_fs(spec, &mounts, &own, |p| p.is_dir())
    }

    /// [`TargetSelector::new`] with the cgroup file systems given (for tests).
    pub fn with_cgroup_fs(
        spec: &TargetSpec,
        mounts: &[cgroup::CgroupMount],
        own_cgroups: &[Cgroup],
        is_dir: impl Fn(&std::path::Path) -> bool,
    ) -> Result<Self, TargetError> {
        if spec.pids.is_empty()
            && spec.comm.is_none()
            && spec.cgroups.is_empty()
            && spec.containers.is_empty()
            && !spec.all
        {
            return Err(TargetError::NoSelector);
        }
        let comm = spec
            .comm
            .as_deref()
            .map(|pattern| {
                Regex::new(pattern).map_err(|e| TargetError::BadRegex {
                    pattern: pattern.to_string(),
                    detail: one_line_regex_error(&e),
                })
            })
            .transpose()?;
        let mut cgroups = Vec::new();
        for arg in &spec.cgroups {
            cgroups.extend(cgroup::resolve(arg, mounts, own_cgroups, &is_dir)?);
        }
        let mut containers = Vec::new();
        for id in &spec.containers {
            if !container::is_id_prefix(id) {
                return Err(TargetError::BadContainerId(id.clone()));
            }
            containers.push(id.to_ascii_lowercase());
        }
        Ok(Self {
            pids: spec.pids.clone(),
            comm,
            cgroups,
            containers,
            all: spec.all,
            self_pid: std::process::id(),
            description: describe(spec),
        })
    }

    /// What is selected, for titles and messages (`comm /^nginx/, pid 12`).
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Every process on the host, kernel threads excluded.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether processes that do not exist yet can match (so the target set must be
    /// rescanned): `--comm`, `--cgroup`, `--container` or `--all`.
    pub fn follows_new_processes(&self) -> bool {
        self.comm.is_some() || !self.cgroups.is_empty() || !self.containers.is_empty() || self.all
    }

    /// Whether `c` is selected.
    pub fn matches(&self, c: &Candidate) -> bool {
        if c.pid == self.self_pid {
            return false;
        }
        self.all
            || self.pids.contains(&c.pid)
            || self.comm.as_ref().is_some_and(|re| re.is_match(&c.comm))
            || self.cgroups.iter().any(|sel| {
                c.cgroups
                    .iter()
                    .any(|p| p.hierarchy == sel.hierarchy && sel.contains(&p.path))
            })
            || (!self.containers.is_empty()
                && c.container()
                    .is_some_and(|id| self.containers.iter().any(|p| id.id.starts_with(p))))
    }

    /// The processes selected now, checked: every `--pid` exists and is no kernel
    /// thread, every container prefix names exactly one container (which the selector
    /// keeps following by its full ID), and something matches.
    pub fn resolve(&mut self) -> Result<Vec<ProcessInfo>, TargetError> {
        for &pid in &self.pids {
            match proc_scan::read_stat(pid) {
                None => return Err(TargetError::NoSuchProcess(pid)),
                Some(s) if s.is_dead() => return Err(TargetError::NoSuchProcess(pid)),
                Some(s) if s.kernel_thread => return Err(TargetError::KernelThread(pid)),
                Some(_) => {}
            }
        }
        if !self.containers.is_empty() {
            let candidates: Vec<Candidate> = proc_scan::list_pids()
                .into_iter()
                .filter_map(|pid| self.candidate(pid, true))
                .collect();
            self.containers = lock_container_prefixes(&self.containers, &candidates)?;
        }
        let found = self.scan();
        if found.is_empty() {
            return Err(TargetError::NoMatch(self.description.clone()));
        }
        Ok(found)
    }

    /// Every process selected now.
    pub fn scan(&self) -> Vec<ProcessInfo> {
        self.scan_unknown(|_| false)
    }

    /// The processes selected now, skipping those `known` says are already tracked
    /// (their files are not even read, so a rescan costs little).
    pub fn scan_unknown(&self, known: impl Fn(u32) -> bool) -> Vec<ProcessInfo> {
        let cgroups_needed = !self.cgroups.is_empty() || !self.containers.is_empty();
        proc_scan::list_pids()
            .into_iter()
            .filter(|&pid| !known(pid))
            .filter_map(|pid| {
                let c = self.candidate(pid, cgroups_needed)?;
                if !self.matches(&c) {
                    return None;
                }
                // Read only for matches: most processes are rejected by name or cgroup.
                let stat = proc_scan::read_stat(pid)?;
                if stat.kernel_thread || stat.is_dead() {
                    return None;
                }
                let cgroups = if cgroups_needed {
                    c.cgroups
                } else {
                    proc_scan::read_cgroup_text(pid)
                        .map(|t| cgroup::parse_proc_cgroup(&t))
                        .unwrap_or_default()
                };
                let comm = if self.comm.is_some() {
                    c.comm
                } else {
                    crate::procfs::read_comm(pid).ok()?
                };
                Some(ProcessInfo {
                    pid,
                    comm,
                    identity: ProcessIdentity::from_cgroups(&cgroups, proc_scan::read_ns_pid(pid)),
                })
            })
            .collect()
    }

    /// What matching needs of `pid`, or None for ourselves and processes that are
    /// gone. Kernel threads and zombies are candidates (in no container, under no
    /// cgroup but the root); callers drop them after matching.
    fn candidate(&self, pid: u32, with_cgroups: bool) -> Option<Candidate> {
        if pid == self.self_pid {
            return None;
        }
        // The name is read here only when matching needs it (see `scan_unknown`).
        let comm = if self.comm.is_some() {
            crate::procfs::read_comm(pid).ok()?
        } else {
            String::new()
        };
        let cgroups = if with_cgroups {
            cgroup::parse_proc_cgroup(&proc_scan::read_cgroup_text(pid)?)
        } else {
            Vec::new()
        };
        Some(Candidate { pid, comm, cgroups })
    }
}

/// Replace each container ID prefix by the one full ID among `candidates` it starts.
pub fn lock_container_prefixes(
    prefixes: &[String],
    candidates: &[Candidate],
) -> Result<Vec<String>, TargetError> {
    let ids: std::collections::BTreeSet<String> = candidates
        .iter()
        .filter_map(|c| c.container().map(|id| id.id))
        .collect();
    prefixes
        .iter()
        .map(|prefix| {
            let hits: Vec<&String> = ids.iter().filter(|id| id.starts_with(prefix)).collect();
            match hits.as_slice() {
                [] => Err(TargetError::NoSuchContainer(prefix.clone())),
                [one] => Ok((*one).clone()),
                many => {
                    // Long enough to tell them apart, and at least the usual short form.
                    let common = many
                        .windows(2)
                        .map(|w| {
                            w[0].bytes()
                                .zip(w[1].bytes())
                                .take_while(|(a, b)| a == b)
                                .count()
                        })
                        .max()
                        .unwrap_or(0);
                    let shown = (common + 1).clamp(12, 64);
                    Err(TargetError::AmbiguousContainer {
                        prefix: prefix.clone(),
                        ids: many
                            .iter()
                            .map(|id| &id[..shown])
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        })
        .collect()
}

/// The selectors in words, for titles and the "no process matches" error.
fn describe(spec: &TargetSpec) -> String {
    let mut parts = Vec::new();
    if spec.all {
        parts.push("all processes".to_string());
    }
    if !spec.pids.is_empty() {
        let pids: Vec<String> = spec.pids.iter().map(u32::to_string).collect();
        parts.push(format!("pid {}", pids.join(", ")));
    }
    if let Some(re) = &spec.comm {
        parts.push(format!("comm /{re}/"));
    }
    for c in &spec.cgroups {
        parts.push(format!("cgroup {c}"));
    }
    for c in &spec.containers {
        parts.push(format!("container {c}"));
    }
    parts.join(", ")
}

/// regex's syntax errors span several lines (the pattern, a caret, the message); keep
/// the message.
fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: ").to_string())
        .unwrap_or(text)
}

#[cfg(test)]
mod tests;
