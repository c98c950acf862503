//! The npm packages of `testprogs/node_pool/` (typeorm, pg, @grpc/grpc-js), installed
//! for the root tests that run its servers.
//!
//! `npm ci` installs exactly what the committed `package-lock.json` pins (checked against
//! its integrity hashes) into a cache outside the repository, with npm's own download
//! cache beside it, so a second install needs no network. The tests run the servers from
//! the repository with `NODE_PATH` pointing at [`node_modules`] (no Node flags), and
//! find the cache with the same rule as [`cache_dir`].
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, setup::note};

/// The package directory inside the repository.
const PACKAGE_DIR: &str = "testprogs/node_pool";
/// The files `npm ci` reads.
const MANIFESTS: &[&str] = &["package.json", "package-lock.json"];
/// The lock file of the last successful install, kept to tell when to install again.
const INSTALLED_LOCK: &str = "installed-package-lock.json";

/// `$PROFILER_NODE_POOL_CACHE`, else `$XDG_CACHE_HOME/profiler/node-pool`, else
/// `~/.cache/profiler/node-pool` (the tests compute the same).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("PROFILER_NODE_POOL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"),
        PathBuf::from,
    );
    base.join("profiler/node-pool")
}

/// Where the installed packages are, for `NODE_PATH`.
pub fn node_modules(cache: &Path) -> PathBuf {
    cache.join("node_modules")
}

/// Run `npm ci` into the cache unless it already holds the committed lock file's packages.
pub fn ensure() -> Result<()> {
    let cache = cache_dir();
    let package = cmd::workspace_root().join(PACKAGE_DIR);
    let lock = std::fs::read(package.join("package-lock.json"))
        .with_context(|| format!("reading {PACKAGE_DIR}/package-lock.json"))?;
    let what = "node_pool npm packages";
    let installed = std::fs::read(cache.join(INSTALLED_LOCK)).ok();
    if installed.as_deref() == Some(lock.as_slice()) && node_modules(&cache).is_dir() {
        note(what, "cached");
        return Ok(());
    }
    if cmd::which("npm").is_none() {
        bail!("npm is not on PATH: install node's npm (Debian: the nodejs or npm package)");
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    for name in MANIFESTS {
        std::fs::copy(package.join(name), cache.join(name))
            .with_context(|| format!("copying {PACKAGE_DIR}/{name}"))?;
    }
    note(what, &format!("npm ci into {}", cache.display()));
    // No install scripts: none of these packages needs one to work (protobufjs's only
    // checks its version).
    cmd::run(
        Command::new("npm")
            .current_dir(&cache)
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .args(["--prefer-offline", "--cache"])
            .arg(cache.join("npm-cache")),
    )?;
    std::fs::write(cache.join(INSTALLED_LOCK), &lock)?;
    Ok(())
}
