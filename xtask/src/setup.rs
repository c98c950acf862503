//! `cargo xtask setup`: everything the build and the tests need, done once and then skipped.
//!
//! 1. the nightly toolchain with `rust-src` (aya-build runs `cargo +nightly … -Z build-std=core`);
//! 2. a bpf-linker linked against that nightly's own libLLVM ([`crate::bpf_linker`]);
//! 3. tracefs mounted ([`crate::tracefs`]);
//! 4. with `--test-deps`, the Debian packages the root tests need ([`crate::packages`]) and
//!    the musl builds of node ([`crate::node_musl`]) and the npm packages of the Node pool
//!    servers ([`crate::node_pool`]).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{bpf_linker, cmd, node_musl, node_pool, packages, tracefs};

/// The rustup toolchain that builds the eBPF crate (aya-build's default).
pub const NIGHTLY: &str = "nightly";

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Also install the root tests' prerequisites (gcc, musl-gcc) with apt-get.
    #[arg(long)]
    pub test_deps: bool,
    /// Use bpf-linker from DIR/bin only, installing it there if needed (default: PATH, then
    /// cargo's bin directory, installing with cargo's default root).
    #[arg(long, value_name = "DIR")]
    pub bpf_linker_root: Option<PathBuf>,
}

/// What to set up; built from the CLI or by `run`/`test`.
#[derive(Debug, Default)]
pub struct SetupOptions {
    pub test_deps: bool,
    pub bpf_linker_root: Option<PathBuf>,
}

impl From<SetupArgs> for SetupOptions {
    fn from(args: SetupArgs) -> Self {
        Self {
            test_deps: args.test_deps,
            bpf_linker_root: args.bpf_linker_root,
        }
    }
}

/// The environment the build commands run in once setup is done.
#[derive(Debug)]
pub struct Ready {
    /// Directory of the checked bpf-linker; put first on `PATH` so rustc finds that one.
    bpf_linker_dir: PathBuf,
}

impl Ready {
    /// `cargo` run from the workspace root with the checked bpf-linker first on `PATH`.
    pub fn cargo(&self) -> Command {
        let mut cargo = Command::new("cargo");
        cargo
            .current_dir(cmd::workspace_root())
            .env("PATH", cmd::path_with(&self.bpf_linker_dir));
        cargo
    }
}

/// Prints a progress line of the set-up.
pub fn note(what: &str, message: &str) {
    println!("setup: {what}: {message}");
}

/// Runs every set-up step, printing one line per step.
pub fn setup(options: &SetupOptions) -> Result<Ready> {
    let sysroot = ensure_nightly()?;
    let bpf_linker = bpf_linker::ensure(&sysroot, options.bpf_linker_root.as_deref())?;
    tracefs::ensure()?;
    if options.test_deps {
        packages::ensure(packages::TEST_PACKAGES)?;
        node_musl::ensure()?;
        node_pool::ensure()?;
    }
    let bpf_linker_dir = bpf_linker
        .parent()
        .context("bpf-linker path has no parent directory")?
        .to_path_buf();
    Ok(Ready { bpf_linker_dir })
}

/// Installs the nightly toolchain and its `rust-src` if missing; returns its sysroot.
fn ensure_nightly() -> Result<PathBuf> {
    let list = cmd::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed (https://rustup.rs)")?;
    if has_toolchain(&list, NIGHTLY) {
        note(NIGHTLY, "installed");
    } else {
        note(NIGHTLY, "not installed: installing it with rustup");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        note("rust-src", "installed");
    } else {
        note("rust-src", "missing: adding it with rustup");
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
    }
    Ok(sysroot)
}

/// `rustc +nightly --print sysroot`.
pub fn nightly_sysroot() -> Result<PathBuf> {
    let out = cmd::output(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"]),
    )?;
    let sysroot = PathBuf::from(out.trim());
    if !sysroot.is_dir() {
        bail!(
            "the {NIGHTLY} sysroot {} is not a directory",
            sysroot.display()
        );
    }
    Ok(sysroot)
}

/// The LLVM major version the nightly rustc was built with (from `rustc +nightly -vV`).
pub fn nightly_llvm_major() -> Result<u32> {
    let out = cmd::output(Command::new("rustc").arg(format!("+{NIGHTLY}")).arg("-vV"))?;
    llvm_major(&out).with_context(|| format!("no `LLVM version:` line in `rustc +{NIGHTLY} -vV`"))
}

/// Parses the `LLVM version: 22.1.4` line of `rustc -vV`.
fn llvm_major(rustc_vv: &str) -> Option<u32> {
    let version = rustc_vv
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))?;
    version.trim().split('.').next()?.parse().ok()
}

/// Whether `rustup toolchain list` output names the undated toolchain `name` for some host,
/// e.g. `nightly-x86_64-unknown-linux-gnu (default)`, but not `nightly-2026-05-19-…`.
fn has_toolchain(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|toolchain| {
            toolchain == name
                || toolchain
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// Whether `path` starts with the ELF magic number (as opposed to a linker script).
pub fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the LLVM major is read from `rustc -vV` output.
    #[test]
    fn llvm_major_from_rustc_vv() {
        let out = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                   host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(out), Some(22));
        assert_eq!(llvm_major("rustc 1.0.0\n"), None);
    }

    /// Check that an undated nightly is found in `rustup toolchain list`, with or without a
    /// status suffix, and that a dated nightly or another channel does not count.
    #[test]
    fn nightly_detection() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(list, "nightly"));
        assert!(has_toolchain(
            "nightly-aarch64-unknown-linux-gnu (default)\n",
            "nightly"
        ));
        assert!(!has_toolchain(
            "nightly-2026-05-19-x86_64-unknown-linux-gnu\n",
            "nightly"
        ));
        assert!(!has_toolchain(
            "stable-x86_64-unknown-linux-gnu\n",
            "nightly"
        ));
        assert!(!has_toolchain("no installed toolchains\n", "nightly"));
    }
}
