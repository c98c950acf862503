//! `cargo xtask bench`: what the profiler costs the host, measured against bare runs and
//! against peer tools (bpftrace, libbpf-tools offcputime, perf) on storm workloads.
//!
//! For each storm, rounds alternate the tools (bare, profiler, floor, peers; the order
//! rotates every round) so that load drifting on a shared machine hits every tool alike;
//! ratios pair each run with the bare (or floor, or other build's) run of its round and
//! are printed as a median with the range of the rounds. Each profiler build then gets
//! one more round with bpf_stats on: what each of its programs cost. `--smoke` is the
//! short version CI runs: one round of the storms bare, under the profiler and the
//! floor, to prove the harness works (it never judges the numbers).

mod against;
mod child;
mod goals;
mod peers;
mod plan;
mod run;
mod stats;
mod storms;
mod summary;
mod tools;

use std::path::PathBuf;

use anyhow::{bail, Result};

pub use self::plan::BenchArgs;
use self::{
    peers::Peers,
    plan::Plan,
    run::{RunError, RunSpec},
    storms::{Storm, STORMS},
    summary::{References, Role, Row, Sample},
    tools::{Profilers, Tool},
};
use crate::{
    cmd,
    setup::{self, SetupOptions},
};

pub fn bench(args: &BenchArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    if !cmd::is_root() {
        bail!("the bench loads eBPF programs and attaches to processes: run it as root");
    }
    let ready = setup::setup(&SetupOptions::default())?;
    let against = plan
        .against
        .as_deref()
        .map(|rev| against::build(rev, ready.cargo()))
        .transpose()?;
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
    let profilers = Profilers {
        head: cmd::target_dir().join(profile).join("profiler"),
        against: against.as_ref().map(|a| a.profiler.clone()),
    };
    let against_label = against.as_ref().map(|a| a.label);
    let work = cmd::target_dir().join("bench");
    let exes = storms::build(&plan.storms, &work.join("bin"))?;
    println!(
        "==> built {} storms into {}",
        exes.len(),
        work.join("bin").display()
    );
    if stats::enabled_globally() {
        println!(
            "bench: warning: kernel.bpf_stats_enabled is 1 (set outside the bench): every BPF program run pays two clock reads, in every round"
        );
    }

    let mut peers = Peers::default();
    if plan.peers {
        let programs: Vec<_> = plan
            .storms
            .iter()
            .flat_map(|s| tools::peers(s.stress))
            .filter_map(|t| t.kind.program())
            .collect();
        peers = Peers::resolve(&programs, plan.install);
    }

    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for (index, (storm, exe)) in plan.storms.iter().zip(&exes).enumerate() {
        let tools = plan.lineup(storm, against_label);
        let ctx = StormRun {
            plan: &plan,
            storm,
            exe,
            profilers: &profilers,
            work: &work,
        };
        rows.extend(ctx.rounds(&tools, &mut peers)?);
        if index < plan.bpf_stats_storms {
            costs.extend(ctx.bpf_stats_rounds(&tools)?);
        }
    }

    let scope = if plan.all {
        "record --all"
    } else {
        "record --pid"
    };
    println!(
        "\n==> results ({} rounds of {} s; profiler {profile} build, {scope})\n",
        plan.rounds, plan.seconds
    );
    print!("{}", summary::markdown(&rows));
    println!("\nstorms (one operation):");
    for storm in &plan.storms {
        println!("- {}: {}", storm.name, storm.op);
    }
    println!(
        "\n==> goals (≥ {:.2}x of bare, or within {:.2} of a floor below that; ahead of every peer)\n",
        goals::GOAL,
        goals::FLOOR_MARGIN
    );
    print!("{}", goals::markdown(&rows));
    if let Some(label) = against_label {
        println!("\n==> A/B: {label} against the working tree (same rounds)\n");
        print!("{}", goals::against_markdown(&rows, label));
    }
    for cost in &costs {
        println!(
            "\n==> bpf_stats: {} under {} (one extra round with stats on; {} ops in {:.2} s)\n",
            cost.storm,
            cost.tool,
            summary::si(cost.ops as f64),
            cost.window_secs
        );
        print!(
            "{}",
            stats::markdown(&cost.programs, cost.window_secs, cost.ops)
        );
    }
    if plan.memory_check > 0.0 {
        let storm = STORMS[1];
        let exe = storms::build(&[storm], &work.join("bin"))?.remove(0);
        memory_check(&exe, storm.name, plan.memory_check, &profilers, &work)?;
    }
    Ok(())
}

/// What one profiler build's programs cost over one storm (its bpf_stats round).
struct StormCosts {
    storm: &'static str,
    tool: &'static str,
    ops: u64,
    window_secs: f64,
    programs: Vec<stats::ProgramCost>,
}

/// One storm's runs: what they share.
struct StormRun<'a> {
    plan: &'a Plan,
    storm: &'a Storm,
    exe: &'a std::path::Path,
    profilers: &'a Profilers,
    work: &'a std::path::Path,
}

impl StormRun<'_> {
    fn spec<'b>(&'b self, tool: Tool, program: Option<&'b std::path::Path>) -> RunSpec<'b> {
        RunSpec {
            exe: self.exe,
            seconds: self.plan.seconds,
            tool,
            profilers: self.profilers,
            program,
            all: self.plan.all,
            bpf_stats: false,
            dir: self
                .work
                .join("runs")
                .join(self.storm.name)
                .join(slug(tool.label)),
        }
    }

    /// Runs the rounds of the storm; a failing peer is skipped from then on, a failing
    /// storm or profiler is an error (the harness or the profiler is broken).
    fn rounds(&self, tools: &[(Tool, Role)], peers: &mut Peers) -> Result<Vec<Row>> {
        let (plan, storm) = (self.plan, self.storm);
        let mut by_round: Vec<Vec<Option<Sample>>> = vec![vec![None; tools.len()]; plan.rounds];
        let mut skipped: Vec<Option<String>> = tools
            .iter()
            .map(|(t, _)| {
                t.kind
                    .program()
                    .and_then(|p| peers.get(p).err().map(str::to_owned))
            })
            .collect();
        for (round, slots) in by_round.iter_mut().enumerate() {
            for step in 0..tools.len() {
                let index = (step + round) % tools.len();
                let tool = tools[index].0;
                if skipped[index].is_some() {
                    continue;
                }
                let program = tool
                    .kind
                    .program()
                    .and_then(|p| peers.get(p).ok())
                    .map(PathBuf::from);
                let spec = self.spec(tool, program.as_deref());
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
                            peers.disable(
                                program,
                                format!("{} failed here: {reason}", program.name),
                            );
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
        let of_role = |role: Role| {
            tools
                .iter()
                .position(|(_, r)| *r == role)
                .map(|i| samples[i].as_slice())
        };
        let refs = References {
            bare: &samples[0],
            floor: of_role(Role::Floor),
            against: of_role(Role::Against),
        };
        Ok(tools
            .iter()
            .zip(&samples)
            .zip(&skipped)
            .map(|(((tool, role), samples), skipped)| match skipped {
                Some(reason) if samples.iter().all(Option::is_none) => {
                    Row::skipped(storm.name, tool.label, *role, reason.clone())
                }
                _ => Row::summarise(storm.name, tool.label, *role, samples, refs),
            })
            .collect())
    }

    /// One more round of each profiler build (the floor included) with bpf_stats on.
    fn bpf_stats_rounds(&self, tools: &[(Tool, Role)]) -> Result<Vec<StormCosts>> {
        let mut costs = Vec::new();
        for (tool, _) in tools.iter().filter(|(t, _)| t.is_profiler()) {
            let mut spec = self.spec(*tool, None);
            spec.bpf_stats = true;
            print!(
                "bench: {} bpf_stats round {:<34}",
                self.storm.name, tool.label
            );
            let sample = run::run(&spec, |_| {}).map_err(|e| match e {
                RunError::Storm(e) | RunError::Tool(e) => {
                    println!(" failed");
                    e.context(format!(
                        "bpf_stats round of {} on {}",
                        tool.label, self.storm.name
                    ))
                }
            })?;
            let ops = sample.result.map_or(0, |r| r.ops);
            println!(" {} ops", summary::si(ops as f64));
            costs.push(StormCosts {
                storm: self.storm.name,
                tool: tool.label,
                ops,
                window_secs: sample.window_secs,
                programs: sample.programs.unwrap_or_default(),
            });
        }
        Ok(costs)
    }
}

/// A long storm under the profiler: its RSS over time, peak RSS and lost events show
/// whether its memory stays bounded.
fn memory_check(
    exe: &std::path::Path,
    name: &str,
    seconds: f64,
    profilers: &Profilers,
    work: &std::path::Path,
) -> Result<()> {
    println!("\n==> bounded memory: {name} for {seconds} s under the profiler");
    let spec = RunSpec {
        exe,
        seconds,
        tool: tools::PROFILER,
        profilers,
        program: None,
        all: false,
        bpf_stats: false,
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
