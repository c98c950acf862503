//! `cargo xtask test`: what CI runs (`.ci/run`). Stops at the first failing step.
//!
//! All cargo steps use the dev profile and the same package selection, so the eBPF object is
//! built cold at most twice (for the tests, and for clippy, whose build scripts run apart);
//! the last step, vm-test, boots that same dev build in QEMU.

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    cmd,
    setup::{self, Ready, SetupOptions},
};

/// Built only for `bpfel-unknown-none` by `profiler/build.rs`: never for the host.
const EBPF_CRATE: &str = "profiler-ebpf";

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the root integration tests and the bench smoke run (unit and golden tests
    /// only; no root needed).
    #[arg(long)]
    pub unit: bool,
}

/// One step: a title and the cargo arguments.
struct Step {
    title: &'static str,
    args: Vec<&'static str>,
    /// A build directory (relative to the workspace root) to delete once the step passed.
    then_remove: Option<&'static str>,
}

fn steps(args: &TestArgs) -> Vec<Step> {
    let mut steps = Vec::new();
    if !args.no_lint {
        steps.push(Step {
            title: "format",
            args: vec!["fmt", "--all", "--check"],
            then_remove: None,
        });
        steps.push(Step {
            title: "clippy",
            args: vec![
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_CRATE,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            then_remove: None,
        });
        // The eBPF crate only builds for the BPF target, with the nightly toolchain.
        steps.push(Step {
            title: "clippy (eBPF)",
            args: vec![
                "+nightly",
                "clippy",
                "--package",
                EBPF_CRATE,
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
            then_remove: None,
        });
    }
    steps.push(Step {
        title: "unit and golden tests",
        args: vec!["test", "--workspace", "--exclude", EBPF_CRATE],
        then_remove: None,
    });
    if !args.unit {
        // Same package selection as the step above (not `-p profiler`): `-p` unifies features
        // differently, which rebuilds the profiler and reruns its eBPF build script.
        steps.push(Step {
            title: "root integration tests",
            args: vec![
                "test",
                "--workspace",
                "--exclude",
                EBPF_CRATE,
                "--test",
                "*",
                "--",
                "--include-ignored",
                "--test-threads=1",
            ],
            then_remove: None,
        });
        // Parsers of untrusted input, fuzzed briefly from the committed corpus.
        steps.push(Step {
            title: "fuzz (short)",
            args: vec![
                "run",
                "--package",
                "xtask",
                "--",
                "fuzz",
                "--seconds",
                "60",
                "--runs",
                "100000",
            ],
            then_remove: Some("fuzz/target"),
        });
        // The harness must keep working; its numbers are not judged (CI machines are noisy).
        steps.push(Step {
            title: "bench smoke",
            args: vec!["run", "--package", "xtask", "--", "bench", "--smoke"],
            then_remove: None,
        });
        // The kernels users run, booted in QEMU (about 2 min each under TCG); this
        // machine's own kernel is the one the integration tests above ran on.
        steps.push(Step {
            title: "vm-test",
            args: vec![
                "run",
                "--package",
                "xtask",
                "--",
                "vm-test",
                "5.10",
                "6.1",
                "6.12",
            ],
            then_remove: None,
        });
    }
    steps
}

pub fn test(args: &TestArgs) -> Result<()> {
    if !args.unit && !cmd::is_root() {
        bail!("the root integration tests need root: run as root, or pass --unit to skip them");
    }
    let ready = setup::setup(&SetupOptions {
        test_deps: !args.unit,
        ..SetupOptions::default()
    })?;
    let steps = steps(args);
    for (i, step) in steps.iter().enumerate() {
        run_step(&ready, step, i + 1, steps.len())?;
    }
    println!("\n==> all {} steps passed", steps.len());
    Ok(())
}

fn run_step(ready: &Ready, step: &Step, number: usize, total: usize) -> Result<()> {
    let mut cargo = ready.cargo();
    // Incremental caches double the target directory and a one-shot CI build never
    // reuses them; CI disks can be small.
    cargo.env("CARGO_INCREMENTAL", "0").args(&step.args);
    println!(
        "\n==> [{number}/{total}] {}: {}",
        step.title,
        cmd::display(&cargo)
    );
    cmd::run(&mut cargo)
        .with_context(|| format!("step {number}/{total} ({}) failed", step.title))?;
    if let Some(dir) = step.then_remove {
        // Nothing later reads it; the disk it holds is what the next steps need.
        let dir = cmd::workspace_root().join(dir);
        std::fs::remove_dir_all(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(args: &TestArgs) -> Vec<&'static str> {
        steps(args).iter().map(|step| step.title).collect()
    }

    /// Check that the flags drop exactly the lint steps and the root step, in order.
    #[test]
    fn flags_select_steps() {
        let all = TestArgs {
            no_lint: false,
            unit: false,
        };
        assert_eq!(
            titles(&all),
            [
                "format",
                "clippy",
                "clippy (eBPF)",
                "unit and golden tests",
                "root integration tests",
                "fuzz (short)",
                "bench smoke",
                "vm-test"
            ]
        );
        let quick = TestArgs {
            no_lint: true,
            unit: true,
        };
        assert_eq!(titles(&quick), ["unit and golden tests"]);
    }

    /// Check that no workspace-wide step builds the eBPF crate for the host.
    #[test]
    fn workspace_steps_exclude_ebpf_crate() {
        for step in steps(&TestArgs {
            no_lint: false,
            unit: false,
        }) {
            if step.args.contains(&"--workspace") {
                assert!(
                    step.args.windows(2).any(|w| w == ["--exclude", EBPF_CRATE]),
                    "{}",
                    step.title
                );
            }
        }
    }
}
