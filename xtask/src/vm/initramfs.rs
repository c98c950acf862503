//! The guest's root file system, as a gzipped newc cpio archive: busybox, the release
//! profiler with the shared libraries `ldd` names, the static test programs, `/init`
//! and the checks.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// What goes into the archive.
pub struct Contents<'a> {
    pub busybox: &'a Path,
    pub profiler: &'a Path,
    /// Static test programs, copied to /opt/progs under their file names.
    pub programs: &'a [PathBuf],
    pub init: &'a str,
    pub checks: &'a str,
}

/// Build the archive at `out`, staging the tree in `stage` (emptied first).
pub fn build(contents: &Contents, stage: &Path, out: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(stage);
    for dir in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "etc",
        "opt/profiler",
        "opt/progs",
    ] {
        std::fs::create_dir_all(stage.join(dir))?;
    }
    copy_with_libraries(contents.busybox, &stage.join("bin/busybox"), stage)?;
    copy_with_libraries(
        contents.profiler,
        &stage.join("opt/profiler/profiler"),
        stage,
    )?;
    for program in contents.programs {
        let name = program.file_name().context("test program without a name")?;
        copy(program, &stage.join("opt/progs").join(name))?;
    }
    write_executable(&stage.join("init"), contents.init)?;
    write_executable(&stage.join("checks.sh"), contents.checks)?;
    let script = format!(
        "cd '{}' && find . | '{}' cpio -o -H newc 2>/dev/null | gzip -1 > '{}'",
        stage.display(),
        contents.busybox.display(),
        out.display()
    );
    cmd::run(Command::new("sh").arg("-c").arg(script))?;
    Ok(())
}

/// Copy `binary` to `to` and every shared library `ldd` names to the same absolute
/// path under `root` (nothing for a static binary).
fn copy_with_libraries(binary: &Path, to: &Path, root: &Path) -> Result<()> {
    copy(binary, to)?;
    // ldd exits non-zero on a static binary ("not a dynamic executable").
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    for library in libraries(&String::from_utf8_lossy(&output.stdout)) {
        let relative = library.strip_prefix("/").unwrap_or(&library);
        copy(&library, &root.join(relative))?;
    }
    Ok(())
}

/// Absolute library paths in `ldd` output (`libc.so.6 => /lib/…/libc.so.6 (0x…)` and
/// the loader's own `/lib64/ld-linux-x86-64.so.2 (0x…)`).
fn libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copy following symbolic links (the guest gets the file, not a dangling link).
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if !from.exists() {
        bail!("{} does not exist", from.display());
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that library paths are read from both `ldd` line shapes, and that the vdso
    /// and a static binary's message give none.
    #[test]
    fn reads_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            libraries(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(libraries("\tnot a dynamic executable\n").is_empty());
    }
}
