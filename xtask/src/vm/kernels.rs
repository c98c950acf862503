//! The kernels `vm-test` boots: Debian's cloud kernels (fast to boot, virtio and the
//! serial console built in, BTF on), fetched with apt through a throwaway
//! configuration so the machine's own sources and package state are left alone, and
//! cached outside the repository.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// How a boot mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// One hierarchy per controller, as Amazon Linux 2 mounts them.
    V1,
    /// The unified hierarchy.
    V2,
}

impl CgroupMode {
    pub fn param(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// A kernel to boot: Debian suite whose `linux-image-cloud-amd64` it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    /// Column title and command-line name.
    pub name: &'static str,
    pub suite: &'static str,
    pub cgroup: CgroupMode,
    /// Who runs this kernel line (for the README table).
    pub users: &'static str,
}

/// Every kernel booted by default, oldest first.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "5.10",
        suite: "bullseye",
        cgroup: CgroupMode::V1,
        users: "Debian 11, Amazon Linux 2 (cgroup v1)",
    },
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
        cgroup: CgroupMode::V2,
        users: "Debian 12, Amazon Linux 2023",
    },
    KernelSpec {
        name: "6.12",
        suite: "trixie",
        cgroup: CgroupMode::V2,
        users: "Debian 13",
    },
];

/// Where downloaded kernels are kept: `$XDG_CACHE_HOME/profiler-vm` or
/// `~/.cache/profiler-vm`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("profiler-vm")
}

/// The `vmlinuz` of `spec`, downloaded on first use.
pub fn fetch(spec: &KernelSpec) -> Result<PathBuf> {
    let dir = cache_dir().join(spec.suite);
    if let Some(found) = vmlinuz_in(&dir.join("boot")) {
        return Ok(found);
    }
    let apt = dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(sub))
            .with_context(|| format!("creating {}", apt.join(sub).display()))?;
    }
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        format!("deb http://deb.debian.org/debian {} main\n", spec.suite),
    )?;
    let options = apt_options(&apt, &sources);
    println!(
        "==> vm-test: fetching the {} cloud kernel ({})",
        spec.name, spec.suite
    );
    cmd::run(
        Command::new("apt-get")
            .args(&options)
            .args(["-q", "update"]),
    )?;
    let depends = cmd::output(
        Command::new("apt-cache")
            .args(&options)
            .args(["depends", "linux-image-cloud-amd64"]),
    )?;
    let Some(package) = image_package(&depends) else {
        bail!(
            "{}: linux-image-cloud-amd64 names no kernel package:\n{depends}",
            spec.suite
        );
    };
    cmd::run(
        Command::new("apt-get")
            .current_dir(&apt)
            .args(&options)
            .args(["-q", "download", &package]),
    )?;
    let deb = std::fs::read_dir(&apt)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    // Only /boot is kept: the modules are not needed (virtio, serial, cgroups and BPF
    // are built in), and they are most of the package.
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = std::fs::remove_dir_all(dir.join("boot"));
    std::fs::rename(unpacked.join("boot"), dir.join("boot"))?;
    std::fs::remove_dir_all(&unpacked)?;
    std::fs::remove_file(&deb)?;
    vmlinuz_in(&dir.join("boot")).with_context(|| format!("{package} has no /boot/vmlinuz-*"))
}

/// apt options that point every state and cache path into `apt` (nothing of the
/// system's lists or dpkg status is read or written).
fn apt_options(apt: &Path, sources: &Path) -> Vec<String> {
    [
        format!("Dir::Etc::sourcelist={}", sources.display()),
        "Dir::Etc::sourceparts=-".to_string(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "Dir::State::status=/dev/null".to_string(),
        // The cache belongs to root: apt's unprivileged download user cannot write it.
        "APT::Sandbox::User=root".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

/// The versioned image package `linux-image-cloud-amd64` depends on, from
/// `apt-cache depends` output.
fn image_package(depends: &str) -> Option<String> {
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_string)
}

fn vmlinuz_in(boot: &Path) -> Option<PathBuf> {
    std::fs::read_dir(boot)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the versioned kernel package is read from `apt-cache depends`.
    #[test]
    fn finds_image_package() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-50-cloud-amd64\n";
        assert_eq!(
            image_package(out).as_deref(),
            Some("linux-image-6.1.0-50-cloud-amd64")
        );
        assert_eq!(image_package("linux-image-cloud-amd64\n"), None);
    }

    /// Check that every apt path option points inside the throwaway directory.
    #[test]
    fn apt_options_stay_in_their_directory() {
        let options = apt_options(Path::new("/c/apt"), Path::new("/c/apt/sources.list"));
        assert_eq!(options.len(), 12);
        assert!(options.iter().step_by(2).all(|o| o == "-o"));
        assert!(options.contains(&"Dir::State::Lists=/c/apt/lists".to_string()));
        assert!(options.contains(&"Dir::State::status=/dev/null".to_string()));
    }
}
