//! Debian packages the root integration tests need, installed with apt-get when missing.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{cmd, setup::note};

/// A Debian package and a command on `PATH` that shows it is installed.
#[derive(Debug, Clone, Copy)]
pub struct DebPackage {
    pub name: &'static str,
    pub command: &'static str,
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
];

/// Installs the packages of `wanted` whose command is not on `PATH`.
pub fn ensure(wanted: &[DebPackage]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|package| cmd::which(package.command).is_none())
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
        .filter(|package| cmd::which(package.command).is_none())
        .map(|package| package.command)
        .collect();
    if !still.is_empty() {
        bail!(
            "installed {list}, but {} is still not on PATH",
            still.join(", ")
        );
    }
    Ok(())
}
