//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` for a few seconds each, seeded
//! from the committed corpus `fuzz/corpus/<target>/`. Inputs libFuzzer finds go to a
//! scratch corpus under the target directory, never into the tree; a crash fails the run
//! and leaves its input in `fuzz/artifacts/<target>/`.
//!
//! Targets are built without a sanitizer (`-s none`): they fuzz safe Rust parsers, where
//! a bug shows as a panic, and the build stays a few minutes on a 2-core machine. Longer
//! runs: `cargo xtask fuzz --seconds 600 perf_map`.

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    cmd,
    setup::{self, SetupOptions, NIGHTLY},
};

/// Every target in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["perf_map", "folded", "elf", "requests"];

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Stop each target after this many inputs, from a fixed seed (`-seed=1`): the same
    /// inputs on every machine, so a CI run repeats what was run before it landed.
    #[arg(long)]
    pub runs: Option<u64>,
    /// Which targets (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let ready = setup::setup(&SetupOptions::default())?;
    ensure_cargo_fuzz()?;
    let root = cmd::workspace_root();
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        let scratch = cmd::target_dir().join("fuzz-corpus").join(target);
        // Empty, as on a fresh clone: with --runs and a fixed seed every machine then
        // runs the same inputs.
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let mut cargo = ready.cargo();
        cargo
            .arg(format!("+{NIGHTLY}"))
            .args(["fuzz", "run", "--sanitizer", "none", "--fuzz-dir"])
            .arg(root.join("fuzz"))
            .arg(target)
            .arg(&scratch)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .args(
                args.runs
                    .map(|runs| vec![format!("-runs={runs}"), "-seed=1".to_string()])
                    .unwrap_or_default(),
            )
            .arg("-rss_limit_mb=2048");
        println!(
            "\n==> fuzz {target} for {} s: {}",
            args.seconds,
            cmd::display(&cargo)
        );
        cmd::run(&mut cargo).with_context(|| format!("fuzz target {target} failed"))?;
    }
    Ok(())
}

/// Installs cargo-fuzz with cargo when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = std::process::Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if present {
        return Ok(());
    }
    setup::note(
        "cargo-fuzz",
        "installing with cargo install (about a minute)",
    );
    cmd::run(std::process::Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
