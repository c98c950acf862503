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
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
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
        ("sys_exit_recvfrom", "tracepoint syscalls:sys_exit_recvfrom"),
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
    // The fork follower says where it reads the child's pid (the layout moved).
    assert!(
        verbose.contains("sched:sched_process_fork (child_pid at +"),
        "{verbose}"
    );
    assert!(!quiet.contains("profiler: probe "), "{quiet}");
    assert!(!quiet.contains("user registers"), "{quiet}");
}
