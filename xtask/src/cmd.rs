//! Small helpers around `std::process::Command`, `PATH` and the workspace layout.

use std::{
    env,
    ffi::{OsStr, OsString},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// The cargo target directory of the workspace (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` as a shell-like string for messages.
pub fn display(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Runs `cmd` with inherited stdio; fails unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; fails with the first line of stderr unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("`{}` failed ({}): {first}", display(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first executable file called `name` in the directories of `path` (a `PATH` value).
pub fn find_in_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The first executable called `name` on this process's `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    find_in_path(name, &env::var_os("PATH").unwrap_or_default())
}

/// Whether `path` is a regular file with an execute bit set.
pub fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// This process's `PATH` with `dir` in front (unless it is already the first entry).
pub fn path_with(dir: &Path) -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if dirs.first().map(PathBuf::as_path) != Some(dir) {
        dirs.insert(0, dir.to_path_buf());
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// Cargo's home (`CARGO_HOME`, else `~/.cargo`).
pub fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the PATH lookup skips directories without the program and finds it later.
    #[test]
    fn find_in_path_takes_first_executable() {
        let found = find_in_path("sh", OsStr::new("/nonexistent-dir:/bin:/usr/bin"));
        assert_eq!(found.as_deref(), Some(Path::new("/bin/sh")));
        assert_eq!(find_in_path("sh", OsStr::new("/nonexistent-dir")), None);
    }

    /// Check that the display form of a command is the program followed by its arguments.
    #[test]
    fn display_joins_program_and_args() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--workspace"]);
        assert_eq!(display(&cmd), "cargo test --workspace");
    }
}
