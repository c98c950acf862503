//! Debian packages the root integration tests need, installed with apt-get when missing.

use std::{
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Result};

use crate::{cmd, setup::note};

/// A Debian package and a command on `PATH` that shows it is installed.
#[derive(Debug, Clone, Copy)]
pub struct DebPackage {
    pub name: &'static str,
    /// A command name looked up on `PATH`, or an absolute path for what a package installs
    /// elsewhere; a `*` in a path component matches any directory or file name there
    /// (`/usr/lib/postgresql/*/bin/initdb`, whatever the server's major version).
    pub command: &'static str,
}

impl DebPackage {
    /// Whether the command (or file) that proves the package is installed exists.
    fn is_installed(&self) -> bool {
        if self.command.starts_with('/') {
            !matching_paths(Path::new(self.command)).is_empty()
        } else {
            cmd::which(self.command).is_some()
        }
    }
}

/// What the root integration tests need (`testprogs/` are compiled with gcc and musl-gcc).
/// Add workload packages (e.g. postgresql, chromium, nodejs) here.
pub const TEST_PACKAGES: &[DebPackage] = &[
    DebPackage {
        name: "gcc",
        command: "gcc",
    },
    DebPackage {
        name: "musl-tools",
        command: "musl-gcc",
    },
    // The server binaries are not on PATH: Debian keeps them per major version.
    DebPackage {
        name: "postgresql",
        command: "/usr/lib/postgresql/*/bin/initdb",
    },
    // Not `pg_config`: postgresql-common installs a wrapper of that name too.
    DebPackage {
        name: "libpq-dev",
        command: "/usr/include/postgresql/libpq-fe.h",
    },
    // Static libc for the namespace test's static program (gcc only recommends it).
    DebPackage {
        name: "libc6-dev",
        command: "/usr/lib/x86_64-linux-gnu/libc.a",
    },
    // The JIT test runs `node --perf-basic-prof`.
    DebPackage {
        name: "nodejs",
        command: "node",
    },
    // The V8 tests give the musl nodes of PyPI's wheels a musl loader (`node_musl`), which
    // pip downloads.
    DebPackage {
        name: "patchelf",
        command: "patchelf",
    },
    DebPackage {
        name: "python3-pip",
        command: "pip3",
    },
    // The SVG check loads flamegraphs in a real browser.
    DebPackage {
        name: "chromium",
        command: "chromium",
    },
    // cli_errors drops the eBPF capabilities from root with capsh.
    DebPackage {
        name: "libcap2-bin",
        command: "capsh",
    },
    // The pprof tests read the .pb.gz files with Go's own reader (`go tool pprof`).
    DebPackage {
        name: "golang-go",
        command: "go",
    },
    // `vm-test` boots other kernels in QEMU, with a busybox initramfs.
    DebPackage {
        name: "qemu-system-x86",
        command: "qemu-system-x86_64",
    },
    DebPackage {
        name: "busybox-static",
        command: "busybox",
    },
];

/// Installs the packages of `wanted` whose command is not on `PATH`.
pub fn ensure(wanted: &[DebPackage]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|package| !package.is_installed())
        .map(|package| package.name)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|package| package.name).collect();
        note(
            "test packages",
            &format!("installed ({})", names.join(", ")),
        );
        return Ok(());
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        bail!("missing Debian packages {list}: install them as root with `apt-get install {list}`");
    }
    if cmd::which("apt-get").is_none() {
        bail!("missing packages {list}, and apt-get is not available to install them");
    }
    note("test packages", &format!("installing {list}"));
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still: Vec<&str> = wanted
        .iter()
        .filter(|package| !package.is_installed())
        .map(|package| package.command)
        .collect();
    if !still.is_empty() {
        bail!(
            "installed {list}, but {} is still not found",
            still.join(", ")
        );
    }
    Ok(())
}

/// The existing paths that `pattern` (absolute, `*` within components) matches.
fn matching_paths(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            continue;
        };
        let part = part.to_string_lossy();
        found = found
            .iter()
            .flat_map(|dir| children_matching(dir, &part))
            .collect();
    }
    found.retain(|path| path.exists());
    found
}

/// The entries of `dir` whose name matches `part` (a plain name, or one with `*`s).
fn children_matching(dir: &Path, part: &str) -> Vec<PathBuf> {
    if !part.contains('*') {
        return vec![dir.join(part)];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| wildcard_match(part, &entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect();
    names.sort();
    names
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that `*` matches any run of characters, and only within the name.
    #[test]
    fn wildcard_matches_runs() {
        assert!(wildcard_match("15", "15"));
        assert!(!wildcard_match("15", "16"));
        assert!(wildcard_match("*", "15"));
        assert!(wildcard_match("lib*.so*", "libpq.so.5"));
        assert!(!wildcard_match("lib*.so", "libpq.so.5"));
        assert!(wildcard_match("a*b*a", "aba"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    /// Check that a path pattern finds a file under a version directory of any name, and
    /// that a pattern with no match (or a plain path that does not exist) finds nothing.
    #[test]
    fn path_pattern_finds_file_under_any_version() {
        let root = std::env::temp_dir().join(format!("xtask-glob-{}", std::process::id()));
        let bin = root.join("17").join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("initdb"), b"").unwrap();
        std::fs::create_dir_all(root.join("16")).unwrap();
        let pattern = root.join("*").join("bin").join("initdb");
        assert_eq!(matching_paths(&pattern), vec![bin.join("initdb")]);
        assert!(matching_paths(&root.join("*").join("bin").join("pg_ctl")).is_empty());
        assert!(matching_paths(&root.join("16").join("bin")).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
