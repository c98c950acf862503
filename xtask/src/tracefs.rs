//! Mounts tracefs, which tracepoint attachment needs and which is not mounted at boot here.

use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::{cmd, setup::note};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS: &str = "/sys/kernel/debug";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Whether a tracefs is mounted at `dir` (its `events/` directory exists).
fn mounted(dir: &str) -> bool {
    Path::new(dir).join("events").is_dir()
}

/// Mounts tracefs at `/sys/kernel/tracing`, or debugfs (and tracefs under it) as a fallback.
/// Does nothing but print a note when not root.
pub fn ensure() -> Result<()> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if mounted(dir) {
            note("tracefs", &format!("mounted at {dir}"));
            return Ok(());
        }
    }
    if !cmd::is_root() {
        note("tracefs", &format!("not mounted; not root, so not mounting it (run as root, or `mount -t tracefs nodev {TRACEFS}`)"));
        return Ok(());
    }
    let tracefs_err = match mount("tracefs", TRACEFS) {
        Ok(()) if mounted(TRACEFS) => {
            note("tracefs", &format!("mounted tracefs at {TRACEFS}"));
            return Ok(());
        }
        Ok(()) => format!("mounted at {TRACEFS} but it has no events/"),
        Err(e) => e,
    };
    note("tracefs", &format!("{tracefs_err}; trying debugfs"));
    if !Path::new(DEBUGFS_TRACING).is_dir() {
        if let Err(e) = mount("debugfs", DEBUGFS) {
            bail!("cannot mount tracefs ({tracefs_err}) nor debugfs ({e})");
        }
    }
    if !mounted(DEBUGFS_TRACING) {
        if let Err(e) = mount("tracefs", DEBUGFS_TRACING) {
            bail!(
                "cannot mount tracefs at {TRACEFS} ({tracefs_err}) nor at {DEBUGFS_TRACING} ({e})"
            );
        }
    }
    if !mounted(DEBUGFS_TRACING) {
        bail!("cannot mount tracefs ({tracefs_err}), and {DEBUGFS_TRACING} has no events/");
    }
    note("tracefs", &format!("mounted at {DEBUGFS_TRACING}"));
    Ok(())
}

/// `mount -t <fstype> nodev <dir>`; the error is mount's own message.
fn mount(fstype: &str, dir: &str) -> Result<(), String> {
    cmd::output(Command::new("mount").args(["-t", fstype, "nodev", dir]))
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}
