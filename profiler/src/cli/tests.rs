//! Tests of argument parsing and of the conversion into option structs.
use super::*;
use clap::CommandFactory;

/// Check that clap's own consistency checks pass for every subcommand.
#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

/// Check that the push arguments give push options only with a URL.
#[test]
fn push_args_convert() {
    #[derive(clap::Parser)]
    struct P {
        #[command(flatten)]
        push: PushArgs,
    }
    let p = P::try_parse_from(["p", "--push-url", "http://py:4040", "--push-queue", "5"]).unwrap();
    let opts = p.push.options().unwrap();
    assert_eq!((opts.url.as_str(), opts.max_queue), ("http://py:4040", 5));
    assert_eq!(opts.app_name, "profiler");
    assert!(P::try_parse_from(["p"]).unwrap().push.options().is_none());
}

/// Check that record arguments convert into options with units applied.
#[test]
fn record_args_convert() {
    let cli = Cli::try_parse_from([
        "profiler",
        "record",
        "--pid",
        "1",
        "--pid",
        "2",
        "--duration",
        "5s",
        "--out",
        "x",
        "--sample-bytes",
        "1",
    ])
    .unwrap();
    let Command::Record(args) = cli.command else {
        panic!("expected record")
    };
    let opts = RecordOptions::from(args);
    assert!(opts.memory && opts.waits);
    assert_eq!(opts.targets.pids, vec![1, 2]);
    assert_eq!(opts.duration, Some(std::time::Duration::from_secs(5)));
    assert_eq!(opts.sample_bytes, 1);
    assert_eq!(opts.stack_pages, 8);
}

/// Check that --memory and --waits select what is recorded.
#[test]
fn memory_and_waits_select() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["profiler", "record", "--pid", "1", "--out", "x"];
        args.extend_from_slice(extra);
        let Command::Record(a) = Cli::try_parse_from(args).unwrap().command else {
            panic!()
        };
        let o = RecordOptions::from(a);
        (o.memory, o.waits)
    };
    assert_eq!(parse(&["--memory"]), (true, false));
    assert_eq!(parse(&["--waits"]), (false, true));
    assert_eq!(parse(&["--memory", "--waits"]), (true, true));
    assert_eq!(parse(&["--waits", "--allocations"]), (true, true));
    assert_eq!(parse(&["--allocations"]), (true, true));
}

/// Check that daemon arguments convert into options with units applied.
#[test]
fn daemon_args_convert() {
    let cli = Cli::try_parse_from([
        "profiler",
        "daemon",
        "--pid",
        "3",
        "--interval",
        "2s",
        "--out",
        "d",
        "--retain",
        "24h",
        "--max-disk",
        "1GiB",
        "--rss-threshold",
        "64MiB",
    ])
    .unwrap();
    let Command::Daemon(args) = cli.command else {
        panic!("expected daemon")
    };
    let opts = crate::daemon::DaemonOptions::from(args);
    assert_eq!(opts.record.targets.pids, vec![3]);
    assert_eq!(opts.interval, std::time::Duration::from_secs(2));
    assert_eq!(
        opts.retention.max_age,
        Some(std::time::Duration::from_secs(86400))
    );
    assert_eq!(opts.retention.max_bytes, Some(1 << 30));
    assert_eq!(opts.rss_threshold, Some(64 << 20));
    assert!(opts.record.memory && opts.record.waits);
}

/// Check that every selector parses, combines, and that one is required.
#[test]
fn target_selectors_parse() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["profiler", "record", "--out", "x"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Record(a) => RecordOptions::from(a).targets,
            _ => panic!("expected record"),
        })
    };
    assert!(parse(&[]).is_err());
    let spec = parse(&[
        "--comm",
        "^nginx$",
        "--cgroup",
        "/a",
        "--cgroup",
        "b",
        "--container",
        "4f1d",
        "--pid",
        "3",
    ])
    .unwrap();
    assert_eq!(spec.comm.as_deref(), Some("^nginx$"));
    assert_eq!(spec.cgroups, vec!["/a", "b"]);
    assert_eq!(spec.containers, vec!["4f1d"]);
    assert_eq!(spec.pids, vec![3]);
    assert!(!spec.all);
    assert!(parse(&["--all"]).unwrap().all);
    let Command::Stalls(s) = Cli::try_parse_from(["profiler", "stalls", "--comm", "x"])
        .unwrap()
        .command
    else {
        panic!("expected stalls")
    };
    assert_eq!(RecordOptions::from(s).targets.comm.as_deref(), Some("x"));
}

/// Check that a bad size is a parse error, not a panic later.
#[test]
fn rejects_bad_sample_size() {
    assert!(Cli::try_parse_from([
        "profiler",
        "record",
        "--pid",
        "1",
        "--out",
        "x",
        "--sample-bytes",
        "lots"
    ])
    .is_err());
}
