//! One measured run: a storm bare or under one tool.
//!
//! Order: start the storm (it waits at its barrier), start the tool on its pid and wait
//! until the tool is attached, release the barrier, read the storm's result, stop the
//! tool (SIGINT, or the end of the profiler's window), let the storm exit.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use super::{
    child::Child,
    stats,
    storms::Workload,
    summary::{Counters, Sample},
    tools::{Launch, Profilers, Ready, Tool},
};

/// Time a tool gets to attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a tool gets to write its output after the storm (perf dwarf can write a lot).
const STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// The profiler's window is the storm's duration plus this, so it covers the whole loop.
pub const WINDOW_MARGIN_SECS: f64 = 1.0;
/// perf and offcputime print nothing once attached; after the sign that they are (perf's
/// header written, offcputime's BPF link), give them this long to attach everything.
const PERF_SETTLE: Duration = Duration::from_millis(300);

/// Where a run happens and what it uses.
pub struct RunSpec<'a> {
    pub exe: &'a Path,
    pub seconds: f64,
    pub tool: Tool,
    pub profilers: &'a Profilers,
    pub program: Option<&'a Path>,
    /// The profiler records every process (`--all`), not the storm's pid.
    pub all: bool,
    /// Measure the profiler's programs with bpf_stats (its extra round; stats cost).
    pub bpf_stats: bool,
    /// Scratch directory of this run (emptied first).
    pub dir: PathBuf,
}

/// Why a run failed: the storm itself (the harness is broken) or the tool.
#[derive(Debug)]
pub enum RunError {
    Storm(anyhow::Error),
    Tool(anyhow::Error),
}

/// Runs the storm once under the tool; `during` is called about once a second while the
/// storm runs, with the tool process (the memory check samples its RSS there).
pub fn run(spec: &RunSpec, mut during: impl FnMut(&Child)) -> Result<Sample, RunError> {
    let _ = std::fs::remove_dir_all(&spec.dir);
    std::fs::create_dir_all(&spec.dir)
        .with_context(|| format!("cannot create {}", spec.dir.display()))
        .map_err(RunError::Storm)?;
    let out_dir = spec.dir.join("out");
    std::fs::create_dir_all(&out_dir)
        .context("creating the tool's output directory")
        .map_err(RunError::Storm)?;
    let barrier = spec.dir.join("barrier");
    let mut workload =
        Workload::start(spec.exe, spec.seconds, &barrier).map_err(RunError::Storm)?;
    let window_secs = spec.seconds + WINDOW_MARGIN_SECS;
    let bpf_stats = spec.bpf_stats && spec.tool.is_profiler();
    let _stats_on = bpf_stats
        .then(stats::enable)
        .transpose()
        .map_err(RunError::Tool)?;
    let launch = Launch {
        profilers: spec.profilers,
        all: spec.all,
        verbose: bpf_stats,
        program: spec.program,
        pid: workload.pid,
        out_dir: &out_dir,
        window_secs,
    };
    let mut tool = match spec.tool.command(&launch) {
        None => None,
        Some(mut command) => {
            let mut child = Child::spawn(spec.tool.label, &mut command).map_err(RunError::Tool)?;
            let started = attach(&mut child, &spec.tool.ready(&out_dir)).map_err(RunError::Tool)?;
            Some((child, started))
        }
    };
    let cpu_before = tool.as_ref().and_then(|(t, _)| t.cpu_now());
    let programs_before = match (&tool, bpf_stats) {
        (Some((t, _)), true) => Some(stats::snapshot(t.pid()).map_err(RunError::Tool)?),
        _ => None,
    };
    let released = Instant::now();
    workload.release().map_err(RunError::Storm)?;
    let result = wait_result(&mut workload, tool.as_ref().map(|(t, _)| t), &mut during)
        .map_err(RunError::Storm)?;
    let window = released.elapsed().as_secs_f64();
    let programs = match (tool.as_mut(), programs_before) {
        (Some((t, _)), Some(before)) => Some(program_costs(t, &before).map_err(RunError::Tool)?),
        _ => None,
    };
    let mut sample = Sample {
        result: Some(result),
        window_secs: window,
        programs,
        ..Sample::default()
    };
    if let Some((mut child, started)) = tool.take() {
        let cpu_after = child.cpu_now();
        if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
            sample.tool_cpu_window_secs = Some(after.saturating_sub(before).as_secs_f64());
        }
        if spec.tool.stopped_by_sigint() {
            child.signal(libc::SIGINT);
        }
        let exit = child.wait(STOP_TIMEOUT).map_err(RunError::Tool)?;
        child.drain_output();
        let interrupted = spec.tool.stopped_by_sigint() && exit.describe() == "signal 2";
        if !exit.success() && !interrupted {
            return Err(RunError::Tool(anyhow::anyhow!(
                "{} failed ({}){}",
                spec.tool.label,
                exit.describe(),
                child.log_tail()
            )));
        }
        sample.tool_cpu_total_secs = Some(exit.cpu.as_secs_f64());
        sample.tool_peak_rss = Some(exit.max_rss_bytes);
        sample.output_bytes = Some(dir_size(&out_dir));
        if spec.tool.is_profiler() {
            let report = read_profiler_output(&out_dir, started, window_secs, &child)
                .map_err(RunError::Tool)?;
            sample.counters = Some(report.0);
            sample.flamegraph_secs = report.1;
        }
    }
    workload.finish().map_err(RunError::Storm)?;
    // perf.data of a dwarf run can be hundreds of MB: do not keep it.
    let _ = std::fs::remove_file(out_dir.join("perf.data"));
    Ok(sample)
}

/// What each of the profiler's programs cost since `before` (its counters at the
/// barrier's release), named from its `-v` probe lines.
fn program_costs(
    profiler: &mut Child,
    before: &std::collections::BTreeMap<u32, stats::Counters>,
) -> Result<Vec<stats::ProgramCost>> {
    let after = stats::snapshot(profiler.pid())?;
    if after.is_empty() {
        bail!(
            "the profiler held no BPF program when the storm ended (did it exit early?){}",
            profiler.log_tail()
        );
    }
    profiler.drain_output();
    let full = stats::verbose_program_names(profiler.lines().iter().map(String::as_str));
    let names = stats::full_names(&stats::kernel_names(after.keys().copied()), &full);
    Ok(stats::costs(before, &after, &names))
}

/// Waits until the tool is attached; returns when its ready line came (wall clock).
fn attach(child: &mut Child, ready: &Ready) -> Result<SystemTime> {
    match ready {
        Ready::Now => Ok(SystemTime::now()),
        Ready::Line(_) => Ok(child.wait_line(ATTACH_TIMEOUT, |l| ready.matches(l))?.at),
        Ready::BpfLink => {
            let deadline = Instant::now() + ATTACH_TIMEOUT;
            while !child.holds_bpf_link() {
                child.drain_output();
                if Instant::now() > deadline {
                    bail!(
                        "it attached no BPF program within {ATTACH_TIMEOUT:?}{}",
                        child.log_tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(PERF_SETTLE);
            Ok(SystemTime::now())
        }
        Ready::File(path) => {
            let deadline = Instant::now() + ATTACH_TIMEOUT;
            while !path.metadata().is_ok_and(|m| m.len() > 0) {
                child.drain_output();
                if Instant::now() > deadline {
                    bail!(
                        "{} was not written within {ATTACH_TIMEOUT:?}{}",
                        path.display(),
                        child.log_tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(PERF_SETTLE);
            Ok(SystemTime::now())
        }
    }
}

/// Waits for the storm's result, calling `during` with the tool about once a second.
fn wait_result(
    workload: &mut Workload,
    tool: Option<&Child>,
    during: &mut impl FnMut(&Child),
) -> Result<super::storms::StormResult> {
    loop {
        match workload.result_within(Duration::from_secs(1))? {
            Some(result) => return Ok(result),
            None => {
                if let Some(tool) = tool {
                    during(tool);
                }
            }
        }
    }
}

/// The counters from report.json and the time from the end of the window to the last
/// flamegraph written. The window ends `window_secs` (the requested duration: the storm
/// outlives it) after the profiler's "recording" line.
fn read_profiler_output(
    out_dir: &Path,
    started: SystemTime,
    window_secs: f64,
    child: &Child,
) -> Result<(Counters, Option<f64>)> {
    let path = out_dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "the profiler wrote no {}{}",
            path.display(),
            child.log_tail()
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let counter = |name: &str| {
        json["counters"][name]
            .as_u64()
            .with_context(|| format!("{} has no counters.{name}", path.display()))
    };
    let counters = Counters {
        seen: counter("seen")?,
        sampled: counter("sampled")?,
        lost: counter("lost")?,
    };
    let stopped = child.last_line_matching(|l| l.starts_with("profiler: window elapsed"));
    let window = stopped.is_some().then_some(window_secs);
    let written = ["memory.svg", "waits.svg"]
        .iter()
        .filter_map(|name| out_dir.join(name).metadata().ok()?.modified().ok())
        .max();
    let latency = match (window, written) {
        (Some(window), Some(written)) => {
            let end = started + Duration::from_secs_f64(window);
            Some(written.duration_since(end).map_or(0.0, |d| d.as_secs_f64()))
        }
        _ => None,
    };
    Ok((counters, latency))
}

/// Total size of the files in `dir` (not recursive: the tools write flat directories).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
