//! Shell completions (`profiler completions SHELL`) and man pages (`profiler man`, run
//! by `cargo xtask man`), both generated from the clap definitions so they cannot drift
//! from the real arguments.
use std::{io::Write, path::PathBuf};

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Write the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "profiler", out);
}

/// Write `profiler.1` and one page per subcommand (`profiler-record.1`, …) into `dir`;
/// returns the pages written.
pub fn man_pages(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the bash script completes every visible subcommand and the short
    /// aliases, and leaves the hidden man subcommand out.
    #[test]
    fn bash_completion_knows_the_commands() {
        let mut out = Vec::new();
        completions(Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        for word in [
            "record", "stalls", "daemon", "diff", "replay", "--pid", "-p", "--out",
        ] {
            assert!(script.contains(word), "{word} missing");
        }
        assert!(
            !script.contains("profiler__man"),
            "hidden command completed"
        );
    }

    /// Check that a page is written for the tool and for each subcommand, in roff.
    #[test]
    fn man_pages_for_every_command() {
        let dir = std::env::temp_dir().join(format!("profiler-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pages = man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in [
            "profiler.1",
            "profiler-record.1",
            "profiler-stalls.1",
            "profiler-daemon.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        let record = std::fs::read_to_string(dir.join("profiler-record.1")).unwrap();
        assert!(
            record.starts_with(".ie") || record.contains(".TH"),
            "{record}"
        );
        assert!(record.contains("\\-\\-pid"), "{record}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
