//! `cargo xtask bench`: what the profiler costs the host, measured against bare runs and
//! against peer tools (bpftrace, libbpf-tools offcputime, perf) on storm workloads.
//!
//! For each storm, rounds alternate the tools (bare, profiler, peers; the order rotates
//! every round) so that load drifting on a shared machine hits every tool alike; ratios
//! pair each run with the bare run of its round. `--smoke` is the short version CI runs:
//! one round of the storms bare and under the profiler, to prove the harness works (it
//! never judges the numbers).

mod child;
mod peers;
mod run;
mod storms;
mod summary;
mod tools;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use self::{
    peers::Peers,
    run::{RunError, RunSpec},
    storms::{Storm, STORMS},
    summary::{Row, Sample},
    tools::Tool,
};
use crate::{
    cmd,
    setup::{self, SetupOptions},
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Short CI version: 1 round of 0.5 s per storm, bare and profiler only, dev build.
    #[arg(long)]
    pub smoke: bool,
    /// Rounds per storm and tool (A/B alternation).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds each storm runs per round.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Only these storms (repeatable): futex_storm, mmap_storm, malloc_storm,
    /// condvar_storm, socket_storm, http_storm.
    #[arg(long = "storm", value_name = "NAME")]
    pub storms: Vec<String>,
    /// Measure bare and the profiler only (no peer tools).
    #[arg(long)]
    pub no_peers: bool,
    /// Do not install missing peer tools with apt-get (skip them instead).
    #[arg(long)]
    pub no_install: bool,
    /// Length of the bounded-memory check (a long mmap storm under the profiler); 0 skips it.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub memory_check: f64,
}

/// The plan after defaults and `--smoke` are applied.
#[derive(Debug, Clone)]
struct Plan {
    storms: Vec<Storm>,
    rounds: usize,
    seconds: f64,
    peers: bool,
    install: bool,
    memory_check: f64,
    release: bool,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Result<Self> {
        let storms: Vec<Storm> = if args.storms.is_empty() {
            STORMS.to_vec()
        } else {
            args.storms
                .iter()
                .map(|name| {
                    STORMS
                        .iter()
                        .find(|s| s.name == name.as_str())
                        .copied()
                        .with_context(|| format!("unknown storm {name:?}"))
                })
                .collect::<Result<_>>()?
        };
        if args.smoke {
            return Ok(Self {
                storms,
                rounds: 1,
                seconds: 0.5,
                peers: false,
                install: false,
                memory_check: 0.0,
                release: false,
            });
        }
        if args.rounds == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
            bail!("--rounds and --seconds must be positive");
        }
        Ok(Self {
            storms,
            rounds: args.rounds,
            seconds: args.seconds,
            peers: !args.no_peers,
            install: !args.no_install,
            memory_check: args.memory_check.max(0.0),
            release: true,
        })
    }
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    if !cmd::is_root() {
        bail!("the bench loads eBPF programs and attaches to processes: run it as root");
    }
    let ready = setup::setup(&SetupOptions::default())?;
    let mut build = ready.cargo();
    // The smoke run reuses what `cargo xtask test` built (same package selection), so CI
    // builds nothing new; the real bench measures the release build.
    if plan.release {
        build.args(["build", "--release", "--package", "profiler"]);
    } else {
        build.args(["build", "--workspace", "--exclude", "profiler-ebpf"]);
    }
    println!("==> {}", cmd::display(&build));
    cmd::run(&mut build)?;
    let profile = if plan.release { "release" } else { "debug" };
    let profiler = cmd::target_dir().join(profile).join("profiler");
    let work = cmd::target_dir().join("bench");
    let exes = storms::build(&plan.storms, &work.join("bin"))?;
    println!(
        "==> built {} storms into {}",
        exes.len(),
        work.join("bin").display()
    );

    let mut peers = Peers::default();
    if plan.peers {
        let programs: Vec<_> = plan
            .storms
            .iter()
            .flat_map(|s| tools::for_stress(s.stress))
            .filter_map(|t| t.kind.program())
            .collect();
        peers = Peers::resolve(&programs, plan.install);
    }

    let mut rows = Vec::new();
    for (storm, exe) in plan.storms.iter().zip(&exes) {
        let tools: Vec<Tool> = tools::for_stress(storm.stress)
            .into_iter()
            .filter(|t| plan.peers || t.kind.program().is_none())
            .collect();
        rows.extend(bench_storm(
            &plan, storm, exe, &tools, &profiler, &work, &mut peers,
        )?);
    }

    println!(
        "\n==> results ({} rounds of {} s; profiler {profile} build)\n",
        plan.rounds, plan.seconds
    );
    print!("{}", summary::markdown(&rows));
    println!("\nstorms (one operation):");
    for storm in &plan.storms {
        println!("- {}: {}", storm.name, storm.op);
    }
    if plan.memory_check > 0.0 {
        let storm = STORMS[1];
        let exe = storms::build(&[storm], &work.join("bin"))?.remove(0);
        memory_check(&exe, storm.name, plan.memory_check, &profiler, &work)?;
    }
    Ok(())
}

/// Runs the rounds of one storm; a failing peer is skipped from then on, a failing storm
/// or profiler is an error (the harness or the profiler is broken).
fn bench_storm(
    plan: &Plan,
    storm: &Storm,
    exe: &std::path::Path,
    tools: &[Tool],
    profiler: &std::path::Path,
    work: &std::path::Path,
    peers: &mut Peers,
) -> Result<Vec<Row>> {
    let mut by_round: Vec<Vec<Option<Sample>>> = vec![vec![None; tools.len()]; plan.rounds];
    let mut skipped: Vec<Option<String>> = tools
        .iter()
        .map(|t| {
            t.kind
                .program()
                .and_then(|p| peers.get(p).err().map(str::to_owned))
        })
        .collect();
    for (round, slots) in by_round.iter_mut().enumerate() {
        for step in 0..tools.len() {
            let index = (step + round) % tools.len();
            let tool = tools[index];
            if skipped[index].is_some() {
                continue;
            }
            let program = tool
                .kind
                .program()
                .and_then(|p| peers.get(p).ok())
                .map(PathBuf::from);
            let spec = RunSpec {
                exe,
                seconds: plan.seconds,
                tool,
                profiler,
                program: program.as_deref(),
                dir: work.join("runs").join(storm.name).join(slug(tool.label)),
            };
            print!(
                "bench: {} round {}/{} {:<34}",
                storm.name,
                round + 1,
                plan.rounds,
                tool.label
            );
            match run::run(&spec, |_| {}) {
                Ok(sample) => {
                    let ops = sample.result.map_or(0.0, |r| r.ops_per_sec());
                    println!(" {} ops/s", summary::si(ops));
                    slots[index] = Some(sample);
                }
                Err(RunError::Tool(err)) if tool.kind.program().is_some() => {
                    println!(" failed, skipping this peer: {err:#}");
                    let reason = first_line(&format!("{err:#}"));
                    if let Some(program) = tool.kind.program() {
                        peers.disable(program, format!("{} failed here: {reason}", program.name));
                    }
                    skipped[index] = Some(format!("failed here: {reason}"));
                }
                Err(RunError::Tool(err)) => {
                    println!(" failed");
                    return Err(err.context(format!("{} on {}", tool.label, storm.name)));
                }
                Err(RunError::Storm(err)) => {
                    println!(" failed");
                    return Err(err.context(format!("{} under {}", storm.name, tool.label)));
                }
            }
        }
    }
    let samples: Vec<Vec<Option<Sample>>> = (0..tools.len())
        .map(|i| by_round.iter().map(|slots| slots[i].clone()).collect())
        .collect();
    let bare = &samples[0];
    Ok(tools
        .iter()
        .zip(&samples)
        .zip(&skipped)
        .map(|((tool, samples), skipped)| match skipped {
            Some(reason) if samples.iter().all(Option::is_none) => {
                Row::skipped(storm.name, tool.label, reason.clone())
            }
            _ if std::ptr::eq(samples, bare) => Row::summarise(storm.name, tool.label, bare, bare),
            _ => Row::summarise(storm.name, tool.label, samples, bare),
        })
        .collect())
}

/// A long storm under the profiler: its RSS over time, peak RSS and lost events show
/// whether its memory stays bounded.
fn memory_check(
    exe: &std::path::Path,
    name: &str,
    seconds: f64,
    profiler: &std::path::Path,
    work: &std::path::Path,
) -> Result<()> {
    println!("\n==> bounded memory: {name} for {seconds} s under the profiler");
    let spec = RunSpec {
        exe,
        seconds,
        tool: tools::PROFILER,
        profiler,
        program: None,
        dir: work.join("runs").join("memory-check"),
    };
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let started = std::time::Instant::now();
    let sample = run::run(&spec, |tool| {
        if let Some(bytes) = tool.rss_now() {
            rss.push((started.elapsed().as_secs_f64(), bytes));
        }
    })
    .map_err(|e| match e {
        RunError::Storm(e) | RunError::Tool(e) => e,
    })?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let marks: Vec<String> = every_ten_seconds(&rss)
        .map(|(t, b)| format!("{t:.0} s: {:.1} MiB", mib(b)))
        .collect();
    println!("profiler RSS during the storm: {}", marks.join(", "));
    let counters = sample.counters.unwrap_or_default();
    println!(
        "profiler peak RSS {:.1} MiB (ru_maxrss, whole run incl. rendering); events seen {}, sampled {}, lost {}; storm {} ops/s; profiler CPU {:.1}% of one core in the window",
        mib(sample.tool_peak_rss.unwrap_or(0)),
        counters.seen,
        counters.sampled,
        counters.lost,
        summary::si(sample.result.map_or(0.0, |r| r.ops_per_sec())),
        100.0 * sample.tool_cpu_window_secs.unwrap_or(0.0) / sample.window_secs.max(1e-9),
    );
    Ok(())
}

/// The first of the (time, value) samples at or after 1 s and each multiple of 10 s.
fn every_ten_seconds(samples: &[(f64, u64)]) -> impl Iterator<Item = (f64, u64)> + '_ {
    let mut next = 1.0;
    samples.iter().copied().filter(move |&(t, _)| {
        if t < next {
            return false;
        }
        next = if next < 10.0 {
            10.0
        } else {
            (t / 10.0).floor() * 10.0 + 10.0
        };
        true
    })
}

/// A directory-friendly form of a tool label.
fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchArgs {
        BenchArgs {
            smoke: false,
            rounds: 5,
            seconds: 3.0,
            storms: Vec::new(),
            no_peers: false,
            no_install: false,
            memory_check: 60.0,
        }
    }

    /// Check that --smoke shortens everything and drops peers, installs and the memory
    /// check, and that the full plan keeps the defaults.
    #[test]
    fn smoke_plan() {
        let full = Plan::from_args(&args()).unwrap();
        assert_eq!(
            (full.rounds, full.storms.len(), full.peers, full.release),
            (5, STORMS.len(), true, true)
        );
        let smoke = Plan::from_args(&BenchArgs {
            smoke: true,
            ..args()
        })
        .unwrap();
        assert_eq!(smoke.rounds, 1);
        assert!(!smoke.peers && !smoke.install && !smoke.release);
        assert_eq!(smoke.memory_check, 0.0);
    }

    /// Check that storms are selected by name and an unknown name is an error.
    #[test]
    fn storm_selection() {
        let plan = Plan::from_args(&BenchArgs {
            storms: vec!["socket_storm".into()],
            ..args()
        })
        .unwrap();
        assert_eq!(plan.storms.len(), 1);
        assert_eq!(plan.storms[0].name, "socket_storm");
        assert!(Plan::from_args(&BenchArgs {
            storms: vec!["nope".into()],
            ..args()
        })
        .is_err());
    }

    /// Check that the RSS marks are the first samples past 1 s and each 10 s.
    #[test]
    fn ten_second_marks() {
        let samples: Vec<(f64, u64)> = (0..25).map(|i| (f64::from(i) + 0.5, i as u64)).collect();
        let marks: Vec<u64> = every_ten_seconds(&samples).map(|(_, v)| v).collect();
        assert_eq!(marks, [1, 10, 20]);
    }

    /// Check that tool labels become plain directory names.
    #[test]
    fn slugs() {
        assert_eq!(
            slug("perf dwarf sys_enter_mmap"),
            "perf-dwarf-sys_enter_mmap".replace('_', "-")
        );
    }
}
