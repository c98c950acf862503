//! bpf-linker must use the same LLVM major as the rustc that emits the eBPF bitcode. Debian
//! has no LLVM 22, so bpf-linker is built against the shared libLLVM that the nightly
//! toolchain ships in its sysroot (`LLVM_PREFIX=$SYSROOT`, run path into the sysroot).
//!
//! Detection: take the bpf-linker rustc would run (first on `PATH`, else cargo's bin
//! directory), run `ldd` on it, and accept it only if no library is "not found" and its
//! libLLVM resolves into the current nightly sysroot's `lib/`. A `rustup update` that
//! replaces the nightly removes that libLLVM, so the check then fails and it is rebuilt.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, Context, Result};

use crate::{
    cmd,
    setup::{self, note, NIGHTLY},
};

/// The bpf-linker release that is built.
pub const VERSION: &str = "0.13.0";

const NAME: &str = "bpf-linker";

/// Returns the path of a bpf-linker that links the nightly's libLLVM, building one if needed.
///
/// With `root`, only `root/bin/bpf-linker` is considered and installs go there.
pub fn ensure(sysroot: &Path, root: Option<&Path>) -> Result<PathBuf> {
    let sysroot_lib = sysroot.join("lib");
    match locate(root) {
        Some(path) => match check(&path, &sysroot_lib) {
            Ok(llvm) => {
                note(
                    NAME,
                    &format!("{} links {}", path.display(), llvm.display()),
                );
                return Ok(path);
            }
            Err(problem) => note(
                NAME,
                &format!("{}: {problem}; rebuilding it", path.display()),
            ),
        },
        None => note(NAME, "not found; building it"),
    }
    install(sysroot, root)?;
    let path = locate_installed(root)
        .with_context(|| format!("{NAME} was installed but cannot be found"))?;
    let llvm = check(&path, &sysroot_lib).map_err(|problem| {
        anyhow!(
            "the freshly built {} is unusable: {problem}",
            path.display()
        )
    })?;
    note(
        NAME,
        &format!("built {}, links {}", path.display(), llvm.display()),
    );
    Ok(path)
}

/// The bpf-linker that rustc would use: first on `PATH`, else in cargo's bin directory.
fn locate(root: Option<&Path>) -> Option<PathBuf> {
    if root.is_some() {
        return locate_installed(root);
    }
    cmd::which(NAME).or_else(|| locate_installed(None))
}

/// The bpf-linker that `cargo install` put in `root`, `CARGO_INSTALL_ROOT` or cargo's home.
fn locate_installed(root: Option<&Path>) -> Option<PathBuf> {
    let root = root
        .map(Path::to_path_buf)
        .or_else(|| env::var_os("CARGO_INSTALL_ROOT").map(PathBuf::from))
        .or_else(cmd::cargo_home)?;
    let path = root.join("bin").join(NAME);
    cmd::is_executable(&path).then_some(path)
}

/// Runs `ldd` on `bpf_linker`; returns the libLLVM it loads if that lies in `sysroot_lib`,
/// or says what is wrong.
fn check(bpf_linker: &Path, sysroot_lib: &Path) -> Result<PathBuf, String> {
    let out = Command::new("ldd")
        .arg(bpf_linker)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "ldd: {}",
            first_line(&stderr)
                .or(first_line(&stdout))
                .unwrap_or("failed")
        ));
    }
    let llvm = llvm_dependency(&stdout)?;
    let resolved = llvm
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", llvm.display()))?;
    let sysroot_lib = sysroot_lib
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", sysroot_lib.display()))?;
    if resolved.starts_with(&sysroot_lib) {
        Ok(resolved)
    } else {
        Err(format!(
            "it links {}, not the {NIGHTLY} toolchain's libLLVM in {}",
            resolved.display(),
            sysroot_lib.display()
        ))
    }
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|line| !line.is_empty())
}

/// Parses `ldd` output: fails if a library is "not found" or no libLLVM is loaded, else
/// returns the path libLLVM resolves to.
fn llvm_dependency(ldd: &str) -> Result<PathBuf, String> {
    let mut missing = Vec::new();
    let mut llvm = None;
    for line in ldd.lines() {
        let Some((name, target)) = line.trim().split_once(" => ") else {
            continue;
        };
        if target.trim_start().starts_with("not found") {
            missing.push(name);
        } else if name.starts_with("libLLVM") {
            let path = target.split(" (").next().unwrap_or(target).trim();
            llvm = Some(PathBuf::from(path));
        }
    }
    if !missing.is_empty() {
        return Err(format!("libraries not found: {}", missing.join(", ")));
    }
    llvm.ok_or_else(|| "it does not link a shared libLLVM".to_owned())
}

/// Builds bpf-linker against the nightly sysroot's libLLVM, streaming cargo's output.
fn install(sysroot: &Path, root: Option<&Path>) -> Result<()> {
    let lib = sysroot.join("lib");
    link_libllvm(&lib)?;
    let major = setup::nightly_llvm_major()?;
    note(
        NAME,
        &format!(
            "building {NAME} {VERSION} against LLVM {major} in {} (1-3 minutes)",
            lib.display()
        ),
    );
    let mut cargo = Command::new("cargo");
    cargo
        .arg(format!("+{NIGHTLY}"))
        .arg("install")
        .arg(format!("{NAME}@{VERSION}"))
        .args(["--locked", "--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .arg("--force")
        .env("LLVM_PREFIX", sysroot);
    if let Some(root) = root {
        cargo.arg("--root").arg(root);
    }
    cmd::run(&mut cargo)
}

/// Makes `lib/libLLVM.so` (what `-lLLVM` looks for) point at the toolchain's real libLLVM.
fn link_libllvm(lib: &Path) -> Result<()> {
    let names = fs::read_dir(lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| setup::is_elf(&lib.join(name)));
    let target = choose_libllvm(names)
        .with_context(|| format!("no libLLVM shared library in {}", lib.display()))?;
    let link = lib.join("libLLVM.so");
    match fs::read_link(&link) {
        Ok(current) if current == Path::new(&target) || current == lib.join(&target) => {
            note("libLLVM.so", &format!("already links {target}"));
            return Ok(());
        }
        Ok(_) => {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        Err(_) if link.exists() => {
            note("libLLVM.so", "is a regular file; leaving it");
            return Ok(());
        }
        Err(_) => {}
    }
    symlink(&target, &link).with_context(|| format!("cannot create {}", link.display()))?;
    note(
        "libLLVM.so",
        &format!("created {} -> {target}", link.display()),
    );
    Ok(())
}

/// Picks the real shared libLLVM among the ELF files of a toolchain's `lib/`: the versioned
/// `libLLVM.so.<ver>-rust-<release>` of current toolchains, else the
/// `libLLVM-<major>-rust-<release>.so` that older toolchains ship as the library itself
/// (in current toolchains that name is a linker script, which is not ELF).
fn choose_libllvm(elf_names: impl Iterator<Item = String>) -> Option<String> {
    let mut names: Vec<String> = elf_names
        .filter(|name| name.contains("-rust-"))
        .filter(|name| {
            name.starts_with("libLLVM.so.")
                || (name.starts_with("libLLVM-")
                    && Path::new(name).extension().is_some_and(|ext| ext == "so"))
        })
        .collect();
    names.sort_by_key(|name| (!name.starts_with("libLLVM.so."), name.clone()));
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD_OK: &str = "\tlinux-vdso.so.1 (0x00007f7fa27b4000)
\tlibLLVM.so.22.1-rust-1.97.0-nightly => /root/.rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/libLLVM.so.22.1-rust-1.97.0-nightly (0x00007f7f97c00000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f7fa2783000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7f97a1e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f7fa27b6000)
";

    /// Check that the libLLVM path is taken from a healthy `ldd` listing.
    #[test]
    fn ldd_llvm_path() {
        assert_eq!(
            llvm_dependency(LDD_OK),
            Ok(PathBuf::from(
                "/root/.rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/libLLVM.so.22.1-rust-1.97.0-nightly"
            ))
        );
    }

    /// Check that a libLLVM removed by a toolchain update ("not found") is reported.
    #[test]
    fn ldd_missing_library() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibLLVM.so.22.1-rust-1.97.0-nightly => not found\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        let err = llvm_dependency(ldd).unwrap_err();
        assert!(err.contains("libLLVM.so.22.1-rust-1.97.0-nightly"), "{err}");
    }

    /// Check that a bpf-linker without a shared libLLVM (e.g. statically linked) is rejected.
    #[test]
    fn ldd_without_llvm() {
        let ldd = "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert!(llvm_dependency(ldd).is_err());
    }

    /// Check that the versioned library is preferred and old-style names still work.
    #[test]
    fn libllvm_choice() {
        let current = [
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "libLLVM-22-rust-1.97.0-nightly.so",
        ];
        assert_eq!(
            choose_libllvm(current.iter().map(ToString::to_string)).as_deref(),
            Some("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        let old = ["libLLVM-17-rust-1.75.0-stable.so", "libLLVM.so"];
        assert_eq!(
            choose_libllvm(old.iter().map(ToString::to_string)).as_deref(),
            Some("libLLVM-17-rust-1.75.0-stable.so")
        );
        assert_eq!(choose_libllvm(std::iter::empty()), None);
    }

    /// Check that the installed bpf-linker passes the check against the real nightly (the
    /// profiler's build script needs it, so a workspace that builds has one).
    #[test]
    fn detects_installed_bpf_linker() {
        let (Some(path), Ok(sysroot)) = (locate(None), setup::nightly_sysroot()) else {
            eprintln!("skipped: no bpf-linker or no {NIGHTLY} toolchain here");
            return;
        };
        let llvm = check(&path, &sysroot.join("lib"))
            .unwrap_or_else(|problem| panic!("{}: {problem}", path.display()));
        assert!(
            llvm.starts_with(sysroot.canonicalize().unwrap()),
            "{}",
            llvm.display()
        );
    }

    /// Check that `libLLVM.so` is created towards the ELF library (not the linker script),
    /// that a second call leaves it, and that a stale link is replaced.
    #[test]
    fn libllvm_symlink() {
        let lib = env::temp_dir().join(format!("xtask-libllvm-{}", std::process::id()));
        fs::create_dir_all(&lib).unwrap();
        let real = "libLLVM.so.22.1-rust-1.97.0-nightly";
        fs::write(lib.join(real), b"\x7fELF fake").unwrap();
        fs::write(
            lib.join("libLLVM-22-rust-1.97.0-nightly.so"),
            b"INPUT(libLLVM.so.22.1)",
        )
        .unwrap();
        let link = lib.join("libLLVM.so");

        link_libllvm(&lib).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(real));
        link_libllvm(&lib).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(real));

        fs::remove_file(&link).unwrap();
        symlink("libLLVM.so.21.1-rust-1.90.0-nightly", &link).unwrap();
        link_libllvm(&lib).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(real));
        fs::remove_dir_all(&lib).unwrap();
    }
}
