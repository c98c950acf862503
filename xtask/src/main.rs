//! Project tasks, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `setup`: installs what building the eBPF object needs (nightly with `rust-src`, a
//!   bpf-linker built against the nightly's own LLVM) and mounts tracefs.
//! - `run`: builds the profiler in release mode and runs it with the given arguments.
//! - `test`: formatting, clippy, unit tests, then the root integration tests.
//! - `bench`: the profiler's overhead on storm workloads, against bare runs and peer tools.
//! - `fuzz`: every fuzz target for a few seconds, seeded from the committed corpus.
//! - `vm-test`: end-to-end checks on other kernels (Debian's 5.10, 6.1, 6.12 in QEMU) and
//!   on this machine's, as a matrix kernel × check.

mod bench;
mod bpf_linker;
mod cmd;
mod fuzz;
mod node_musl;
mod node_pool;
mod packages;
mod run;
mod setup;
mod test;
mod tracefs;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Project tasks for the profiler workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the toolchain pieces the eBPF build needs and mount tracefs (idempotent).
    Setup(setup::SetupArgs),
    /// Set up, build the profiler (release) and run it: `cargo xtask run -- <profiler args>`.
    Run(run::RunArgs),
    /// Set up, then run fmt, clippy, unit tests and the root integration tests.
    Test(test::TestArgs),
    /// Measure the profiler's overhead on storm workloads against bare runs and peers.
    Bench(bench::BenchArgs),
    /// Run every fuzz target for a few seconds from the committed corpus.
    Fuzz(fuzz::FuzzArgs),
    /// Boot other kernels in QEMU (and use this one) and run the end-to-end checks on
    /// each: `cargo xtask vm-test [5.10 6.1 6.12 host]`.
    VmTest(vm::VmTestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::setup(&args.into()).map(drop),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::test(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Fuzz(args) => fuzz::fuzz(&args),
        Command::VmTest(args) => vm::vm_test(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Check that the clap definition is consistent (no clashing names or flags).
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Check that everything after `run --` reaches the profiler untouched, flags included.
    #[test]
    fn run_forwards_arguments() {
        let cli = Cli::parse_from(["xtask", "run", "--", "record", "--pid", "1", "--help"]);
        let Command::Run(args) = cli.command else {
            panic!("expected the run command, got {cli:?}");
        };
        assert_eq!(args.args, ["record", "--pid", "1", "--help"]);
    }

    /// Check that `test` understands its two skip flags.
    #[test]
    fn test_flags_parse() {
        let cli = Cli::parse_from(["xtask", "test", "--no-lint", "--unit"]);
        let Command::Test(args) = cli.command else {
            panic!("expected the test command, got {cli:?}");
        };
        assert!(args.no_lint && args.unit);
    }
}
