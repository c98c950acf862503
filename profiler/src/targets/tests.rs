use super::*;
use cgroup::{parse_mountinfo, parse_proc_cgroup};

const DOCKER_A: &str = "4f1d2c3b5a6978877665544332211000ffeeddccbbaa99887766554433221100";
const DOCKER_B: &str = "4f1d99995a6978877665544332211000ffeeddccbbaa99887766554433221100";
const MOUNTS: &str = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

fn selector(spec: TargetSpec) -> Result<TargetSelector, TargetError> {
    let own = parse_proc_cgroup("4:memory:/\n0::/\n");
    TargetSelector::with_cgroup_fs(&spec, &parse_mountinfo(MOUNTS), &own, |p| {
        !p.ends_with("missing")
    })
}

fn candidate(pid: u32, comm: &str, cgroup_text: &str) -> Candidate {
    Candidate {
        pid,
        comm: comm.into(),
        cgroups: parse_proc_cgroup(cgroup_text),
    }
}

/// Check that some selector is required.
#[test]
fn needs_a_selector() {
    assert_eq!(
        selector(TargetSpec::default()).unwrap_err(),
        TargetError::NoSelector
    );
}

/// Check that a bad regex is one line naming the pattern and the problem.
#[test]
fn bad_regex_is_one_line() {
    let err = selector(TargetSpec {
        comm: Some("(nginx".into()),
        ..Default::default()
    })
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("bad --comm regular expression \"(nginx\": "),
        "{text}"
    );
    assert!(text.contains("unclosed group"), "{text}");
}

/// Check that --comm searches the process name (unanchored, like pgrep).
#[test]
fn comm_regex_matches_names() {
    let s = selector(TargetSpec {
        comm: Some("^(nginx|envoy)$".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(s.matches(&candidate(10, "nginx", "0::/\n")));
    assert!(!s.matches(&candidate(11, "nginx-worker", "0::/\n")));
    assert!(s.matches(&candidate(12, "envoy", "0::/\n")));
    assert!(s.follows_new_processes());
}

/// Check that --cgroup selects the cgroup and its descendants, in its hierarchy only,
/// and that a missing cgroup is an error.
#[test]
fn cgroup_selects_subtree() {
    let s = selector(TargetSpec {
        cgroups: vec!["/sys/fs/cgroup/unified/kubepods.slice".into()],
        ..Default::default()
    })
    .unwrap();
    let pod = format!("0::/kubepods.slice/pod1.slice/cri-containerd-{DOCKER_A}.scope\n");
    assert!(s.matches(&candidate(1, "app", &pod)));
    assert!(!s.matches(&candidate(2, "app", "0::/kubepods.slicex\n")));
    // Same path in a v1 hierarchy is another cgroup.
    assert!(!s.matches(&candidate(3, "app", "4:memory:/kubepods.slice\n0::/\n")));
    let err = selector(TargetSpec {
        cgroups: vec!["missing".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, TargetError::Cgroup(_)), "{err}");
    // The cause is said once: `{:#}` is how the binary prints errors.
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(
        text.starts_with("--cgroup: cgroup missing does not exist"),
        "{text}"
    );
    assert_eq!(text.matches("does not exist").count(), 1, "{text}");
}

/// Check container prefixes: unique prefixes lock to the full ID, ambiguous or
/// unknown ones are errors, and non-hex is rejected up front.
#[test]
fn container_prefixes() {
    let candidates = [
        candidate(
            1,
            "a",
            &format!("0::/system.slice/docker-{DOCKER_A}.scope\n"),
        ),
        candidate(
            2,
            "a2",
            &format!("0::/system.slice/docker-{DOCKER_A}.scope\n"),
        ),
        candidate(3, "b", &format!("12:memory:/docker/{DOCKER_B}\n0::/\n")),
        candidate(4, "host", "0::/user.slice\n"),
    ];
    assert_eq!(
        lock_container_prefixes(&["4f1d2".into()], &candidates).unwrap(),
        vec![DOCKER_A.to_string()]
    );
    assert_eq!(
        lock_container_prefixes(&["4f1d".into()], &candidates).unwrap_err(),
        TargetError::AmbiguousContainer {
            prefix: "4f1d".into(),
            ids: "4f1d2c3b5a69, 4f1d99995a69".into()
        }
    );
    assert_eq!(
        lock_container_prefixes(&["abc".into()], &candidates).unwrap_err(),
        TargetError::NoSuchContainer("abc".into())
    );
    let mut s = selector(TargetSpec {
        containers: vec!["4F1D2".into()],
        ..Default::default()
    })
    .unwrap();
    s.containers = lock_container_prefixes(&s.containers, &candidates).unwrap();
    let hits: Vec<u32> = candidates
        .iter()
        .filter(|c| s.matches(c))
        .map(|c| c.pid)
        .collect();
    assert_eq!(hits, vec![1, 2]);
    assert_eq!(
        selector(TargetSpec {
            containers: vec!["web-1".into()],
            ..Default::default()
        })
        .unwrap_err(),
        TargetError::BadContainerId("web-1".into())
    );
}

/// Check that selectors combine as a union and --all takes everyone but ourselves.
#[test]
fn selectors_union() {
    let s = selector(TargetSpec {
        pids: vec![7],
        comm: Some("redis".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(s.matches(&candidate(7, "bash", "0::/\n")));
    assert!(s.matches(&candidate(8, "redis-server", "0::/\n")));
    assert!(!s.matches(&candidate(9, "bash", "0::/\n")));
    assert_eq!(s.describe(), "pid 7, comm /redis/");
    let all = selector(TargetSpec {
        all: true,
        ..Default::default()
    })
    .unwrap();
    assert!(all.matches(&candidate(9, "bash", "0::/\n")));
    assert!(!all.matches(&candidate(std::process::id(), "profiler", "0::/\n")));
    let pids = selector(TargetSpec {
        pids: vec![7],
        ..Default::default()
    })
    .unwrap();
    assert!(!pids.follows_new_processes());
}

/// Check the identity of a containerised process: container, its cgroup, ns pid.
#[test]
fn identity_of_container_process() {
    let lines = parse_proc_cgroup(&format!(
        "4:memory:/docker/{DOCKER_B}\n1:name=systemd:/docker/{DOCKER_B}\n0::/\n"
    ));
    let id = ProcessIdentity::from_cgroups(&lines, Some(1));
    assert_eq!(id.container.as_ref().unwrap().id, DOCKER_B);
    assert_eq!(id.cgroup.as_deref(), Some(&*format!("/docker/{DOCKER_B}")));
    assert_eq!(id.ns_pid, Some(1));
    let json = serde_json::to_value(&id).unwrap();
    assert_eq!(json["container"]["runtime"], "docker");
    let host = ProcessIdentity::from_cgroups(&parse_proc_cgroup("0::/\n"), None);
    assert_eq!(serde_json::to_string(&host).unwrap(), r#"{"cgroup":"/"}"#);
}

/// Check that a PID that does not exist is reported as such.
#[test]
fn resolve_reports_missing_pid() {
    let mut s = selector(TargetSpec {
        pids: vec![u32::MAX - 1],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        s.resolve().unwrap_err(),
        TargetError::NoSuchProcess(u32::MAX - 1)
    );
}

/// Check a real scan: a child of this test is found by its name, with its cgroup.
#[test]
fn scan_finds_a_child_by_name() {
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let pid = child.id();
    let s = selector(TargetSpec {
        comm: Some("^sleep$".into()),
        ..Default::default()
    })
    .unwrap();
    // The child may not have exec'd yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let found = loop {
        let found = s.scan().into_iter().find(|p| p.pid == pid);
        if found.is_some() || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    let found = found.expect("sleep child not found by --comm");
    assert_eq!(found.comm, "sleep");
    assert!(found.identity.cgroup.is_some());
    assert!(s.scan_unknown(|p| p == pid).iter().all(|p| p.pid != pid));
}
