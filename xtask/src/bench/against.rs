//! `--against REV`: the profiler built from another git revision, to run beside the
//! working tree's build in the same rounds (an A/B test of an optimisation on a noisy
//! machine).
//!
//! The revision's tree is exported with `git archive` into
//! `target/bench/against/<commit>/src` (once per commit) and built in release mode into
//! its own target directory, `target/bench/against/target`, shared by every revision:
//! the first `--against` compiles the dependencies once, later ones only the workspace
//! crates. Not the working tree's target directory: cargo hashes workspace crates by
//! their path relative to the workspace root, so two checkouts built there share
//! artifact names and fingerprints, and one build can pass for the other (seen: the
//! working tree's binary came out with the revision's eBPF object). Its binary is copied
//! out to `target/bench/against/<commit>/profiler`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The other build: its binary and its label in the tables.
pub struct AgainstBuild {
    pub profiler: PathBuf,
    /// `profiler@<rev as given> (<short commit>)`, kept for the process's lifetime.
    pub label: &'static str,
}

/// The full commit id of `rev`, with a one-line error for an unknown revision.
fn resolve(rev: &str) -> Result<String> {
    let out = cmd::output(
        Command::new("git")
            .current_dir(cmd::workspace_root())
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{rev}^{{commit}}")),
    )
    .with_context(|| format!("--against {rev}: not a commit of this repository"))?;
    Ok(out.trim().to_owned())
}

/// The label of the other build: the revision as given and, when that is not already
/// the commit, its short form.
pub fn label(rev: &str, commit: &str) -> String {
    let short = &commit[..commit.len().min(10)];
    if commit.starts_with(rev) {
        format!("profiler@{short}")
    } else {
        format!("profiler@{rev} ({short})")
    }
}

/// Exports `commit`'s tree into `dir` (empty or missing).
fn export(commit: &str, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut archive = Command::new("git")
        .current_dir(cmd::workspace_root())
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start git archive")?;
    let tar_in = archive.stdout.take().context("no pipe from git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .stdin(tar_in)
        .status()
        .context("cannot start tar")?;
    let git = archive.wait()?;
    if !git.success() || !tar.success() {
        bail!("exporting {commit} failed (git archive {git}, tar {tar})");
    }
    Ok(())
}

/// Builds the profiler of `rev` (release) with `cargo`, a cargo command set up like the
/// working tree's build; returns its binary, copied out of the revisions' target directory.
pub fn build(rev: &str, cargo: Command) -> Result<AgainstBuild> {
    let commit = resolve(rev)?;
    let against = cmd::target_dir().join("bench/against");
    let home = against.join(&commit);
    let target = against.join("target");
    let src = home.join("src");
    let stamp = home.join("exported");
    if !stamp.exists() {
        println!("==> exporting {rev} ({commit}) into {}", src.display());
        export(&commit, &src)?;
        std::fs::write(&stamp, b"")?;
    }
    // Every revision builds in one target directory (its dependencies are built once),
    // and `git archive` stamps files with their commit's time: a revision older than
    // the last one built would look up to date to cargo, the other revision's eBPF
    // object kept. Stamped now, its own sources are always rebuilt.
    touch_all(&src).with_context(|| format!("cannot touch the sources in {}", src.display()))?;
    let mut cargo = cargo;
    cargo
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--package", "profiler"]);
    println!("==> {} (in {})", cmd::display(&cargo), src.display());
    cmd::run(&mut cargo).with_context(|| format!("building the profiler of {rev}"))?;
    let built = target.join("release/profiler");
    let profiler = home.join("profiler");
    std::fs::copy(&built, &profiler)
        .with_context(|| format!("cannot copy {} to {}", built.display(), profiler.display()))?;
    let label: &'static str = Box::leak(label(rev, &commit).into_boxed_str());
    Ok(AgainstBuild { profiler, label })
}

/// Set the modification time of every file under `dir` to now.
fn touch_all(dir: &std::path::Path) -> std::io::Result<()> {
    let now = std::time::SystemTime::now();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            touch_all(&entry.path())?;
        } else if kind.is_file() {
            std::fs::File::options()
                .write(true)
                .open(entry.path())?
                .set_modified(now)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that a revision given as a commit prefix is labelled by the commit, and a
    /// name by the name and the commit.
    #[test]
    fn labels() {
        let commit = "8ca31ba0123456789abcdef0123456789abcdef0";
        assert_eq!(label("8ca31ba", commit), "profiler@8ca31ba012");
        assert_eq!(label("main", commit), "profiler@main (8ca31ba012)");
    }

    /// Check that an unknown revision is a one-line error naming it.
    #[test]
    fn unknown_revision() {
        let err = resolve("no-such-revision-anywhere").unwrap_err();
        assert!(
            format!("{err}").contains("no-such-revision-anywhere"),
            "{err:#}"
        );
    }
}
