//! The bench's arguments and the plan they make (defaults, `--smoke`), and the line-up
//! of tools each storm runs.

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{
    storms::{Storm, STORMS},
    summary::Role,
    tools::{self, Build, Kind, Tool},
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Short CI version: 1 round of 0.5 s per storm, bare, profiler and floor, dev build,
    /// and one bpf_stats round of the profiler on the first storm.
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
    /// Leave out the floor (the profiler's attach points with empty programs).
    #[arg(long)]
    pub no_floor: bool,
    /// Leave out the bpf_stats round (each profiler build's programs' run time).
    #[arg(long)]
    pub no_bpf_stats: bool,
    /// The profiler (and the floor) record every process (`record --all`) instead of
    /// the storm's pid.
    #[arg(long)]
    pub all: bool,
    /// Also build this git revision (release, into target/bench/against/) and run it
    /// as "profiler@REV" beside the working tree's "profiler@HEAD", round by round.
    #[arg(long, value_name = "REV")]
    pub against: Option<String>,
}

/// The plan after defaults and `--smoke` are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    pub storms: Vec<Storm>,
    pub rounds: usize,
    pub seconds: f64,
    pub peers: bool,
    pub install: bool,
    pub memory_check: f64,
    pub release: bool,
    pub floor: bool,
    /// Storms (by index) that get a bpf_stats round.
    pub bpf_stats_storms: usize,
    pub all: bool,
    pub against: Option<String>,
}

impl Plan {
    pub fn from_args(args: &BenchArgs) -> Result<Self> {
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
            if args.against.is_some() {
                bail!("--smoke measures the working tree only: drop --against");
            }
            return Ok(Self {
                storms,
                rounds: 1,
                seconds: 0.5,
                peers: false,
                install: false,
                memory_check: 0.0,
                release: false,
                floor: !args.no_floor,
                bpf_stats_storms: usize::from(!args.no_bpf_stats),
                all: args.all,
                against: None,
            });
        }
        if args.rounds == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
            bail!("--rounds and --seconds must be positive");
        }
        if let Some(rev) = &args.against {
            if rev.is_empty() || rev.starts_with('-') {
                bail!("--against needs a git revision, got {rev:?}");
            }
        }
        Ok(Self {
            bpf_stats_storms: if args.no_bpf_stats { 0 } else { storms.len() },
            storms,
            rounds: args.rounds,
            seconds: args.seconds,
            peers: !args.no_peers,
            install: !args.no_install,
            memory_check: args.memory_check.max(0.0),
            release: true,
            floor: !args.no_floor,
            all: args.all,
            against: args.against.clone(),
        })
    }

    /// The tools of one storm, bare first: the profiler (with `--against`, the other
    /// build first, then the working tree's), the floor, the peers.
    pub fn lineup(&self, storm: &Storm, against_label: Option<&'static str>) -> Vec<(Tool, Role)> {
        let mut tools = vec![(tools::BARE, Role::Bare)];
        match against_label {
            Some(label) => {
                let build = |label, build| Tool {
                    label,
                    kind: Kind::Profiler {
                        build,
                        empty: false,
                    },
                };
                tools.push((build(label, Build::Against), Role::Against));
                tools.push((build("profiler@HEAD", Build::Head), Role::Profiler));
            }
            None => tools.push((tools::PROFILER, Role::Profiler)),
        }
        if self.floor {
            tools.push((tools::FLOOR, Role::Floor));
        }
        if self.peers {
            tools.extend(
                tools::peers(storm.stress)
                    .into_iter()
                    .map(|t| (t, Role::Peer)),
            );
        }
        tools
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn args() -> BenchArgs {
        BenchArgs {
            smoke: false,
            rounds: 5,
            seconds: 3.0,
            storms: Vec::new(),
            no_peers: false,
            no_install: false,
            memory_check: 60.0,
            no_floor: false,
            no_bpf_stats: false,
            all: false,
            against: None,
        }
    }

    /// Check that --smoke shortens everything and drops peers, installs and the memory
    /// check but keeps the floor and one bpf_stats round, and that the full plan keeps
    /// the defaults.
    #[test]
    fn smoke_plan() {
        let full = Plan::from_args(&args()).unwrap();
        assert_eq!(
            (full.rounds, full.storms.len(), full.peers, full.release),
            (5, STORMS.len(), true, true)
        );
        assert!(full.floor && !full.all);
        assert_eq!(full.bpf_stats_storms, STORMS.len());
        let smoke = Plan::from_args(&BenchArgs {
            smoke: true,
            ..args()
        })
        .unwrap();
        assert_eq!(smoke.rounds, 1);
        assert!(!smoke.peers && !smoke.install && !smoke.release);
        assert_eq!(smoke.memory_check, 0.0);
        assert!(smoke.floor);
        assert_eq!(smoke.bpf_stats_storms, 1);
        assert!(Plan::from_args(&BenchArgs {
            smoke: true,
            against: Some("HEAD~1".into()),
            ..args()
        })
        .is_err());
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

    /// Check the line-up: bare, profiler, floor, peers by default; with --against the
    /// other build and profiler@HEAD; --no-floor and --no-peers leave those out; and a
    /// revision that looks like a flag is refused.
    #[test]
    fn lineups() {
        let plan = Plan::from_args(&args()).unwrap();
        let storm = STORMS[1];
        let roles: Vec<Role> = plan.lineup(&storm, None).iter().map(|t| t.1).collect();
        assert_eq!(roles[..3], [Role::Bare, Role::Profiler, Role::Floor]);
        assert!(roles[3..].iter().all(|r| *r == Role::Peer) && roles.len() >= 5);
        let lean = Plan::from_args(&BenchArgs {
            no_floor: true,
            no_peers: true,
            against: Some("v1".into()),
            ..args()
        })
        .unwrap();
        let tools = lean.lineup(&storm, Some("profiler@v1"));
        let labels: Vec<&str> = tools.iter().map(|t| t.0.label).collect();
        assert_eq!(labels, ["bare", "profiler@v1", "profiler@HEAD"]);
        assert_eq!(tools[1].1, Role::Against);
        assert!(Plan::from_args(&BenchArgs {
            against: Some("--all".into()),
            ..args()
        })
        .is_err());
    }
}
