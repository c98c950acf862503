//! `cargo xtask run -- <profiler args>`: set up, build the profiler (release), exec it.

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command};

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    cmd,
    setup::{self, SetupOptions},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Arguments for the profiler (put them after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROFILER_ARGS"
    )]
    pub args: Vec<OsString>,
}

/// Builds `target/release/profiler` and replaces this process with it, so its exit status
/// (and any signal that ends it) is the command's own.
pub fn run(args: &RunArgs) -> Result<()> {
    let ready = setup::setup(&SetupOptions::default())?;
    let mut build = ready.cargo();
    build.args(["build", "--release", "--package", "profiler"]);
    println!("==> {}", cmd::display(&build));
    cmd::run(&mut build)?;
    let profiler = cmd::target_dir().join("release/profiler");
    let err = Command::new(&profiler).args(&args.args).exec();
    Err(err).with_context(|| format!("cannot execute {}", profiler.display()))
}
