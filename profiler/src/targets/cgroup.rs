//! Cgroups: which cgroup a process is in (`/proc/PID/cgroup`), where the cgroup file
//! systems are mounted (`/proc/self/mountinfo`), and which hierarchy and path a
//! `--cgroup` argument names.
//!
//! A host has one cgroup v2 hierarchy (pure v2: mounted at `/sys/fs/cgroup`), or v1
//! hierarchies, one per controller group (`/sys/fs/cgroup/memory`, …), or both
//! (hybrid: v2 without controllers at `/sys/fs/cgroup/unified`). `/proc/PID/cgroup` has
//! one line per hierarchy, `0::/path` for v2 and `ID:controllers:/path` for v1, so a
//! cgroup is a (hierarchy, path) pair and membership includes descendants.
use std::path::{Path, PathBuf};

/// A cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hierarchy {
    /// The unified (v2) hierarchy.
    V2,
    /// A v1 hierarchy, by its controller list as `/proc/PID/cgroup` prints it
    /// (`memory`, `cpu,cpuacct`, `name=systemd`).
    V1(String),
}

/// A cgroup: a path (starting with `/`) inside a hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cgroup {
    pub hierarchy: Hierarchy,
    pub path: String,
}

impl Cgroup {
    /// Whether a process in `path` of the same hierarchy is in this cgroup or below it.
    pub fn contains(&self, path: &str) -> bool {
        let base = self.path.trim_end_matches('/');
        base.is_empty()
            || path == base
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The (hierarchy, path) lines of a `/proc/PID/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<Cgroup> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let id = f.next()?;
            let controllers = f.next()?;
            let path = f.next()?.to_string();
            let hierarchy = if id == "0" && controllers.is_empty() {
                Hierarchy::V2
            } else {
                Hierarchy::V1(controllers.to_string())
            };
            Some(Cgroup { hierarchy, path })
        })
        .collect()
}

/// The cgroup a memory limit applies to, as `oom.txt` and `capture.json` name it:
/// the memory controller's path on cgroup v1 (`memory:/path`), the unified path on v2.
pub fn memory_cgroup(lines: &[Cgroup]) -> Option<String> {
    lines
        .iter()
        .find_map(|c| match &c.hierarchy {
            Hierarchy::V1(controllers) if controllers.split(',').any(|c| c == "memory") => {
                Some(format!("memory:{}", c.path))
            }
            _ => None,
        })
        .or_else(|| {
            lines
                .iter()
                .rfind(|c| c.hierarchy == Hierarchy::V2)
                .map(|c| c.path.clone())
        })
}

/// A mounted cgroup file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup the mount's root is (`/` unless a cgroup namespace or a bind mount
    /// shows only a subtree).
    pub root: String,
    /// The hierarchy, for v1 with its controllers as the mount options list them.
    pub version: MountVersion,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountVersion {
    V2,
    /// The mount's super options (`rw,memory`, `rw,name=systemd`, …).
    V1 {
        options: Vec<String>,
    },
}

impl CgroupMount {
    /// Whether this mount shows `hierarchy`: the same version and, for v1, every
    /// controller of the hierarchy among the mount's options.
    pub fn shows(&self, hierarchy: &Hierarchy) -> bool {
        match (&self.version, hierarchy) {
            (MountVersion::V2, Hierarchy::V2) => true,
            (MountVersion::V1 { options }, Hierarchy::V1(controllers)) => controllers
                .split(',')
                .all(|c| options.iter().any(|o| o == c)),
            _ => false,
        }
    }

    /// The hierarchy of this mount, named the way `/proc/PID/cgroup` names it, from the
    /// controller lists that file has (`proc_lines`, usually `/proc/self/cgroup`).
    pub fn hierarchy(&self, proc_lines: &[Cgroup]) -> Option<Hierarchy> {
        match &self.version {
            MountVersion::V2 => Some(Hierarchy::V2),
            MountVersion::V1 { .. } => proc_lines
                .iter()
                .map(|c| &c.hierarchy)
                .find(|h| matches!(h, Hierarchy::V1(_)) && self.shows(h))
                .cloned(),
        }
    }
}

/// Cgroup mounts from a `/proc/self/mountinfo` text, v2 first.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts: Vec<CgroupMount> = text
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let root = unescape(left.get(3)?);
            let mount_point = PathBuf::from(unescape(left.get(4)?));
            let version = match *right.first()? {
                "cgroup2" => MountVersion::V2,
                "cgroup" => MountVersion::V1 {
                    options: right.get(2)?.split(',').map(str::to_string).collect(),
                },
                _ => return None,
            };
            Some(CgroupMount {
                mount_point,
                root,
                version,
            })
        })
        .collect();
    mounts.sort_by_key(|m| !matches!(m.version, MountVersion::V2));
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a `--cgroup` argument names no cgroup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CgroupError {
    #[error("no cgroup file system is mounted (see /proc/self/mountinfo)")]
    NoMounts,
    #[error("cgroup {arg} does not exist (looked under {looked})")]
    NotFound { arg: String, looked: String },
    #[error("{0} is not inside a cgroup file system")]
    NotCgroupFs(String),
}

/// The cgroups `arg` names: an absolute path inside a cgroup mount
/// (`/sys/fs/cgroup/unified/app`), or a path relative to the cgroup mounts, with or
/// without a leading `/`, as `/proc/PID/cgroup` prints it (`/system.slice/x.service`).
/// A relative path is looked up under every mount (v2 first) and names the cgroup in
/// every hierarchy where it exists. `exists` is the file system check (a parameter so
/// that tests need no cgroup mounts).
pub fn resolve(
    arg: &str,
    mounts: &[CgroupMount],
    proc_lines: &[Cgroup],
    exists: impl Fn(&Path) -> bool,
) -> Result<Vec<Cgroup>, CgroupError> {
    if mounts.is_empty() {
        return Err(CgroupError::NoMounts);
    }
    let in_hierarchy = |m: &CgroupMount, rel: &str| -> Option<Cgroup> {
        let root = m.root.trim_end_matches('/');
        let rel = rel.trim_matches('/');
        let path = if rel.is_empty() {
            format!("{root}/")
        } else {
            format!("{root}/{rel}")
        };
        let path = if path.len() > 1 {
            path.trim_end_matches('/').to_string()
        } else {
            path
        };
        Some(Cgroup {
            hierarchy: m.hierarchy(proc_lines)?,
            path,
        })
    };
    let as_path = Path::new(arg);
    if as_path.is_absolute() {
        // A file system path inside a mount: that mount only (the deepest that holds it).
        let owner = mounts
            .iter()
            .filter(|m| as_path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.components().count());
        if let Some(m) = owner {
            if m.mount_point != Path::new("/") {
                if !exists(as_path) {
                    return Err(CgroupError::NotFound {
                        arg: arg.to_string(),
                        looked: m.mount_point.display().to_string(),
                    });
                }
                let rel = as_path.strip_prefix(&m.mount_point).unwrap_or(as_path);
                return in_hierarchy(m, &rel.to_string_lossy())
                    .map(|c| vec![c])
                    .ok_or_else(|| CgroupError::NotCgroupFs(arg.to_string()));
            }
        }
    }
    let rel = arg.trim_start_matches('/');
    let found: Vec<Cgroup> = mounts
        .iter()
        .filter(|m| exists(&m.mount_point.join(rel)))
        .filter_map(|m| in_hierarchy(m, rel))
        .collect();
    if found.is_empty() {
        let looked: Vec<String> = mounts
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        return Err(CgroupError::NotFound {
            arg: arg.to_string(),
            looked: looked.join(", "),
        });
    }
    Ok(found)
}

/// The cgroup path worth showing for a process: where its container was found, else
/// its v2 cgroup unless that is the root (hybrid hosts), else its memory cgroup, else
/// the first non-root v1 cgroup, else `/`.
pub fn display_path(lines: &[Cgroup], container_line: Option<&Cgroup>) -> Option<String> {
    if let Some(c) = container_line {
        return Some(c.path.clone());
    }
    let v2 = lines.iter().find(|c| c.hierarchy == Hierarchy::V2);
    if let Some(c) = v2.filter(|c| c.path != "/") {
        return Some(c.path.clone());
    }
    let memory = Hierarchy::V1("memory".into());
    lines
        .iter()
        .find(|c| c.hierarchy == memory && c.path != "/")
        .or_else(|| {
            lines
                .iter()
                .find(|c| matches!(c.hierarchy, Hierarchy::V1(_)) && c.path != "/")
        })
        .or(v2)
        .or(lines.first())
        .map(|c| c.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: hybrid, v1 controllers and v2 at /sys/fs/cgroup/unified.
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "\
9:name=systemd:/
4:memory:/process_api/114146f00e2da61cce93efdaf128a0a5
2:cpuacct:/
1:cpu:/
0::/
";
    /// A pure v2 host (Debian 12, Fedora, Ubuntu 22.04+).
    const V2_MOUNTINFO: &str =
        "24 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    fn everything_exists(_: &Path) -> bool {
        true
    }

    /// Check that /proc/PID/cgroup lines parse into v1 and v2 hierarchies.
    #[test]
    fn parses_proc_cgroup() {
        let lines = parse_proc_cgroup(HYBRID_SELF);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[1],
            Cgroup {
                hierarchy: Hierarchy::V1("memory".into()),
                path: "/process_api/114146f00e2da61cce93efdaf128a0a5".into()
            }
        );
        assert_eq!(lines[4].hierarchy, Hierarchy::V2);
        let v1_combined = parse_proc_cgroup("3:cpu,cpuacct:/docker/abc\n");
        assert_eq!(
            v1_combined[0].hierarchy,
            Hierarchy::V1("cpu,cpuacct".into())
        );
    }

    /// Check that cgroup mounts are found, v2 first, with their v1 controllers.
    #[test]
    fn parses_mountinfo() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0].mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mounts[0].version, MountVersion::V2);
        let lines = parse_proc_cgroup(HYBRID_SELF);
        let memory = mounts
            .iter()
            .find(|m| m.mount_point.ends_with("memory"))
            .unwrap();
        assert_eq!(
            memory.hierarchy(&lines),
            Some(Hierarchy::V1("memory".into()))
        );
        let systemd = mounts
            .iter()
            .find(|m| m.mount_point.ends_with("systemd"))
            .unwrap();
        assert_eq!(
            systemd.hierarchy(&lines),
            Some(Hierarchy::V1("name=systemd".into()))
        );
        assert_eq!(
            parse_mountinfo(V2_MOUNTINFO)[0].mount_point,
            Path::new("/sys/fs/cgroup")
        );
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
    }

    /// Check that an absolute path inside a mount names that hierarchy only.
    #[test]
    fn resolves_absolute_path() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let lines = parse_proc_cgroup(HYBRID_SELF);
        let got = resolve(
            "/sys/fs/cgroup/unified/test/docker-1.scope",
            &mounts,
            &lines,
            everything_exists,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![Cgroup {
                hierarchy: Hierarchy::V2,
                path: "/test/docker-1.scope".into()
            }]
        );
        let got = resolve(
            "/sys/fs/cgroup/memory/app/",
            &mounts,
            &lines,
            everything_exists,
        )
        .unwrap();
        assert_eq!(got[0].hierarchy, Hierarchy::V1("memory".into()));
        assert_eq!(got[0].path, "/app");
        let v2 = parse_mountinfo(V2_MOUNTINFO);
        let got = resolve(
            "/sys/fs/cgroup/system.slice/docker-x.scope",
            &v2,
            &[],
            everything_exists,
        )
        .unwrap();
        assert_eq!(got[0].path, "/system.slice/docker-x.scope");
    }

    /// Check that a relative path (or one as /proc/PID/cgroup prints it) names the
    /// cgroup in every hierarchy where it exists, and a missing one is an error.
    #[test]
    fn resolves_relative_path() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let lines = parse_proc_cgroup(HYBRID_SELF);
        let only_memory = |p: &Path| p.starts_with("/sys/fs/cgroup/memory");
        let got = resolve("/process_api/x", &mounts, &lines, only_memory).unwrap();
        assert_eq!(
            got,
            vec![Cgroup {
                hierarchy: Hierarchy::V1("memory".into()),
                path: "/process_api/x".into()
            }]
        );
        let got = resolve("app.slice", &mounts, &lines, everything_exists).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].hierarchy, Hierarchy::V2);
        assert_eq!(got[0].path, "/app.slice");
        let err = resolve("nope", &mounts, &lines, |_| false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup nope does not exist (looked under /sys/fs/cgroup/unified, /sys/fs/cgroup/cpu, /sys/fs/cgroup/cpuacct, /sys/fs/cgroup/memory, /sys/fs/cgroup/systemd)"
        );
        assert_eq!(
            resolve("x", &[], &lines, everything_exists),
            Err(CgroupError::NoMounts)
        );
    }

    /// Check that a mount of a subtree (a cgroup namespace) maps paths below its root.
    #[test]
    fn resolves_under_mount_root() {
        let mounts =
            parse_mountinfo("50 40 0:38 /kubepods.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let got = resolve("/sys/fs/cgroup/pod1", &mounts, &[], everything_exists).unwrap();
        assert_eq!(got[0].path, "/kubepods.slice/pod1");
    }

    /// Check that membership includes descendants but not siblings sharing a prefix.
    #[test]
    fn membership_includes_descendants() {
        let c = Cgroup {
            hierarchy: Hierarchy::V2,
            path: "/app".into(),
        };
        assert!(c.contains("/app") && c.contains("/app/worker"));
        assert!(!c.contains("/application") && !c.contains("/"));
        let root = Cgroup {
            hierarchy: Hierarchy::V2,
            path: "/".into(),
        };
        assert!(root.contains("/anything"));
    }

    /// Check which cgroup is shown for a process.
    #[test]
    fn display_path_prefers_meaningful_cgroup() {
        let lines = parse_proc_cgroup(HYBRID_SELF);
        assert_eq!(
            display_path(&lines, None).as_deref(),
            Some("/process_api/114146f00e2da61cce93efdaf128a0a5")
        );
        let v2 = parse_proc_cgroup("0::/system.slice/nginx.service\n");
        assert_eq!(
            display_path(&v2, None).as_deref(),
            Some("/system.slice/nginx.service")
        );
        let root = parse_proc_cgroup("0::/\n");
        assert_eq!(display_path(&root, None).as_deref(), Some("/"));
    }

    /// Check that the memory cgroup is found on v1 and the unified path on v2.
    #[test]
    fn finds_the_memory_cgroup() {
        let v1 = "12:pids:/a\n4:memory:/oomtest\n0::/user.slice\n";
        assert_eq!(
            memory_cgroup(&parse_proc_cgroup(v1)).as_deref(),
            Some("memory:/oomtest")
        );
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            memory_cgroup(&parse_proc_cgroup(v2)).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(memory_cgroup(&[]), None);
    }
}
