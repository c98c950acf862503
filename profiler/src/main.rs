//! The `profiler` binary: parse arguments, run the command, print one-line errors.
use std::io::Write as _;

use clap::Parser as _;
use profiler::cli::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&anyhow::anyhow!("starting the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Record(args) => {
                let summary = profiler::record::record(&args.into()).await?;
                eprintln!(
                    "profiler: {} after {:.1} s; {} events seen, {} lost",
                    summary.stop_reason,
                    summary.window_secs,
                    summary.events_seen,
                    summary.events_lost,
                );
                eprint!("{}", summary.end_of_run);
                anyhow::Ok(())
            }
            Command::Daemon(args) => {
                let summary = profiler::daemon::daemon(args.into()).await?;
                eprintln!(
                    "profiler: {}; {} intervals and {} snapshots written to {}",
                    summary.stop_reason,
                    summary.windows,
                    summary.snapshots,
                    summary.out.display()
                );
                Ok(())
            }
            Command::Diff(args) => {
                let opts: profiler::compare::DiffOptions = args.into();
                let summary = profiler::compare::diff(&opts)?;
                eprintln!(
                    "profiler: {} stacks of the {} view compared, {} changed{}; wrote {}",
                    summary.stacks,
                    summary.view,
                    summary.significant,
                    match summary.within_noise {
                        Some(n) => format!(" beyond sampling noise, {n} within it (drawn neutral)"),
                        None => " (sampling noise unknown for folded files)".into(),
                    },
                    opts.out.display()
                );
                Ok(())
            }
            Command::Replay(args) => {
                let opts: profiler::record::replay::ReplayOptions = args.into();
                let summary = profiler::record::replay::replay(&opts)?;
                eprintln!(
                    "profiler: replayed {} records ({:.1} s window); wrote {}",
                    summary.records,
                    summary.window_secs,
                    opts.out.display()
                );
                Ok(())
            }
            Command::Completions(args) => {
                let mut script = Vec::new();
                profiler::cli::generate::completions(args.shell, &mut script);
                print_stdout(&String::from_utf8_lossy(&script))
            }
            Command::Man(args) => {
                for page in profiler::cli::generate::man_pages(&args.out)? {
                    println!("{}", page.display());
                }
                Ok(())
            }
            Command::Stalls(args) => {
                let report = profiler::record::stalls(&args.into()).await?;
                let mut text = profiler::render::waits::text(&report);
                text.push('\n');
                for line in profiler::render::summary::verdict_lines(None, Some(&report)) {
                    text.push_str(&line);
                    text.push('\n');
                }
                print_stdout(&text)
            }
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

/// Write `text` to stdout. A reader that went away (`stalls … | head`) is not an error;
/// any other failure (`> /dev/full`) is one line like every other error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}")),
    }
}

/// Help and version go to stdout with exit 0; every other argument error is one line
/// on stderr and exit 1, as every other error is.
fn usage_error(e: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        std::process::exit(0);
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        std::process::exit(1);
    }
    eprintln!(
        "profiler: error: {} (see --help)",
        first_paragraph(&e.render().to_string())
    );
    std::process::exit(1);
}

/// clap's message up to its first blank line, on one line, without its `error:` prefix:
/// `the following required arguments were not provided: --out <DIR>`.
fn first_paragraph(rendered: &str) -> String {
    let words: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = words.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

fn fail(e: &anyhow::Error) -> ! {
    eprintln!("profiler: error: {e:#}");
    std::process::exit(1);
}
