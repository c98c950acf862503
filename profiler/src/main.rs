//! The `profiler` binary: parse arguments, run the command, print one-line errors.
use clap::Parser as _;
use profiler::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
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
                    "profiler: {} after {:.1} s; {} events, {} lost; wrote {}",
                    summary.stop_reason,
                    summary.window_secs,
                    summary.events_seen,
                    summary.events_lost,
                    summary.out.display()
                );
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
                let stacks = profiler::compare::diff(&opts)?;
                eprintln!(
                    "profiler: {stacks} stacks compared; wrote {}",
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
            Command::Stalls(args) => {
                let report = profiler::record::stalls(&args.into()).await?;
                print!("{}", profiler::render::waits::text(&report));
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(e: &anyhow::Error) -> ! {
    eprintln!("profiler: error: {e:#}");
    std::process::exit(1);
}
