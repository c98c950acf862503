//! Root integration test of start-up feature probing: `record -v` says how the probes
//! find user registers on this kernel and how each probe was attached. Older kernels
//! are covered by `cargo xtask vm-test` (5.10 takes the task-stack fallback there).
mod common;

use std::process::{Command, Stdio};

use common::*;

/// Check that `record -v` names the register source and, for every memory and wait
/// probe, its attach type; and that without -v none of that is printed.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn verbose_record_names_attach_types() {
    require_root();
    let dir = scratch_dir("verbose_attach");
    let mut sleeper = sleeper();
    let pid = sleeper.id().to_string();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_profiler"))
            .args(["record", "--pid", &pid, "--duration", "1s", "--out"])
            .arg(dir.join("out"))
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("{stderr}");
        assert!(out.status.success(), "profiler failed: {stderr}");
        stderr
    };
    let verbose = run(&["-v"]);
    let quiet = run(&[]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let regs = verbose
        .lines()
        .find(|l| l.starts_with("profiler: user registers: "))
        .expect("no register source line");
    assert!(
        regs.contains("bpf_task_pt_regs") || regs.contains("top of the task's kernel stack"),
        "{regs}"
    );
    for (program, how) in [
        ("sched_process_fork", "tracepoint sched:sched_process_fork"),
        ("sys_exit_mmap", "tracepoint syscalls:sys_exit_mmap"),
        ("sys_enter_futex", "tracepoint syscalls:sys_enter_futex"),
        (
            "wait_sock_exit_recvfrom",
            "tracepoint syscalls:sys_exit_recvfrom",
        ),
        ("sock_exit_write", "tracepoint syscalls:sys_exit_write"),
    ] {
        let line = format!("profiler: probe {program}: {how}");
        assert!(
            verbose.lines().any(|l| l.starts_with(&line)),
            "missing {line:?}"
        );
    }
    // With the registers found, the mapping syscalls' exits read their arguments there:
    // no enter program is attached for them.
    assert!(
        !verbose.contains("profiler: probe sys_enter_mmap:"),
        "{verbose}"
    );
    // Where a wait probe and a socket probe share an exit, one program does both.
    for alone in ["sys_exit_read", "sock_exit_read", "sock_exit_accept4"] {
        assert!(
            !verbose.contains(&format!("profiler: probe {alone}:")),
            "{verbose}"
        );
    }
    // The fork follower says where it reads the child's pid (the layout moved).
    assert!(
        verbose.contains("sched:sched_process_fork (child_pid at +"),
        "{verbose}"
    );
    assert!(!quiet.contains("profiler: probe "), "{quiet}");
    assert!(!quiet.contains("user registers"), "{quiet}");
}

/// The verifier's instruction count (`verified_insns` of fdinfo, 5.16+) of every BPF
/// program process `pid` holds.
fn verified_instructions(pid: u32) -> Vec<Option<u64>> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog")
        })
        .map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            info.lines()
                .find_map(|l| l.strip_prefix("verified_insns:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Check that `record --empty-programs` (the bench's floor) loads as many programs as a
/// plain record and that the verifier cut every one of them to its entry check (a few
/// instructions), while a plain record's programs keep their bodies.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn empty_programs_are_empty() {
    require_root();
    let dir = scratch_dir("empty_programs");
    let mut sleeper = sleeper();
    let pid = sleeper.id().to_string();
    let programs = |extra: &[&str], out: &str| {
        let mut args = vec!["--pid", &pid, "--duration", "2s"];
        args.extend_from_slice(extra);
        let recording = Recording::start(&args, &dir.join(out));
        let counts = verified_instructions(recording.pid());
        recording.wait();
        counts
    };
    let empty = programs(&["--empty-programs"], "empty");
    let plain = programs(&[], "plain");
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    assert!(plain.len() >= 40, "{} programs loaded", plain.len());
    assert_eq!(
        empty.len(),
        plain.len(),
        "the floor must attach the same probes"
    );
    if empty.iter().any(Option::is_none) {
        eprintln!("skipped the size check: this kernel's fdinfo has no verified_insns (5.16+)");
        return;
    }
    let empty: Vec<u64> = empty.into_iter().flatten().collect();
    assert!(
        empty.iter().all(|&n| n <= 8),
        "floor programs not empty: {empty:?}"
    );
    let largest = plain.into_iter().flatten().max().unwrap_or(0);
    assert!(
        largest > 100,
        "plain programs look empty: largest {largest}"
    );
}

/// A quiet target: `sleep 30`, killed by the test when done.
fn sleeper() -> std::process::Child {
    Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}
