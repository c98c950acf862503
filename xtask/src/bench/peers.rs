//! Finding the peer tools, installing the missing ones from Debian packages, and
//! remembering why one was skipped.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use super::tools::Program;
use crate::cmd;

/// Where each peer program is, or why it is not used.
#[derive(Debug, Default)]
pub struct Peers {
    state: BTreeMap<&'static str, Result<PathBuf, String>>,
}

/// Directories searched besides `PATH` (libbpf-tools installs into /usr/sbin, which a
/// non-login root shell may not have on `PATH`).
const SBIN: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

fn find(name: &str) -> Option<PathBuf> {
    cmd::which(name).or_else(|| {
        SBIN.iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| cmd::is_executable(path))
    })
}

impl Peers {
    /// Looks every program up; with `install`, installs the missing ones with apt-get
    /// (one `apt-get install` for all); without, or when that fails, they are skipped.
    pub fn resolve(programs: &[Program], install: bool) -> Self {
        let mut peers = Self::default();
        let mut missing: Vec<Program> = Vec::new();
        for program in programs {
            if peers.state.contains_key(program.name) {
                continue;
            }
            match find(program.name) {
                Some(path) => {
                    peers.state.insert(program.name, Ok(path));
                }
                None => {
                    if !missing.contains(program) {
                        missing.push(*program);
                    }
                    let reason = format!(
                        "{} not installed (Debian package {})",
                        program.name, program.package
                    );
                    peers.state.insert(program.name, Err(reason));
                }
            }
        }
        if missing.is_empty() {
            return peers;
        }
        let packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
        if !install {
            println!(
                "bench: skipping peers not installed (--no-install): {}",
                packages.join(", ")
            );
            return peers;
        }
        if let Err(why) = apt_install(&packages) {
            println!(
                "bench: cannot install {}: {why}; skipping those peers",
                packages.join(", ")
            );
            for program in &missing {
                peers.state.insert(
                    program.name,
                    Err(format!("{} not installed: {why}", program.package)),
                );
            }
            return peers;
        }
        for program in &missing {
            let found = find(program.name).ok_or_else(|| {
                format!(
                    "installed {} but {} is still not found",
                    program.package, program.name
                )
            });
            peers.state.insert(program.name, found);
        }
        peers
    }

    /// The program's path, or why it is skipped.
    pub fn get(&self, program: Program) -> Result<&Path, &str> {
        match self.state.get(program.name) {
            Some(Ok(path)) => Ok(path),
            Some(Err(reason)) => Err(reason),
            None => Err("not looked up"),
        }
    }

    /// Marks a program as unusable after it failed on this machine.
    pub fn disable(&mut self, program: Program, reason: String) {
        self.state.insert(program.name, Err(reason));
    }
}

/// `apt-get update` + `apt-get install -y PACKAGES`, quietly; the error is one line.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    if !cmd::is_root() {
        return Err("not root".into());
    }
    if cmd::which("apt-get").is_none() {
        return Err("no apt-get on this machine".into());
    }
    println!(
        "bench: installing peers with apt-get: {}",
        packages.join(" ")
    );
    let quiet = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive");
        cmd::output(c).map(drop).map_err(|e| format!("{e:#}"))
    };
    quiet(Command::new("apt-get").args(["update", "-qq"]))?;
    quiet(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(packages),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that a program that exists is found, and that one that does not is skipped
    /// with a reason naming its package when installing is off.
    #[test]
    fn resolve_without_install() {
        let sh = Program {
            name: "sh",
            package: "dash",
        };
        let nope = Program {
            name: "no-such-peer-tool",
            package: "no-such-package",
        };
        let mut peers = Peers::resolve(&[sh, nope, sh], false);
        assert!(peers.get(sh).is_ok());
        assert!(peers.get(nope).unwrap_err().contains("no-such-package"));
        peers.disable(sh, "broken here".into());
        assert_eq!(peers.get(sh).unwrap_err(), "broken here");
    }
}
