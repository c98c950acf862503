//! `cargo xtask man`: build the profiler and write its man pages (profiler.1 and one per
//! subcommand) into `target/man`, generated from its clap definitions by its hidden
//! `man` subcommand, so the pages always match the binary.

use std::{path::PathBuf, process::Command};

use anyhow::Result;
use clap::Args;

use crate::{
    cmd,
    setup::{self, SetupOptions},
};

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory for the pages (default: target/man).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Build `target/debug/profiler` and have it write the pages.
pub fn man(args: &ManArgs) -> Result<()> {
    let ready = setup::setup(&SetupOptions::default())?;
    let mut build = ready.cargo();
    build.args(["build", "--package", "profiler"]);
    println!("==> {}", cmd::display(&build));
    cmd::run(&mut build)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| cmd::target_dir().join("man"));
    let mut write = Command::new(cmd::target_dir().join("debug/profiler"));
    write.arg("man").arg("--out").arg(&out);
    println!("==> {}", cmd::display(&write));
    cmd::run(&mut write)?;
    println!(
        "man pages in {dir}: read one with `man -l {dir}/profiler-record.1`",
        dir = out.display()
    );
    Ok(())
}
