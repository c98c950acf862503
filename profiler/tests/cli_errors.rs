//! Bad input gets one clear line on stderr and a non-zero exit, never a panic.
use std::process::{Command, Output};

fn profiler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(args)
        .output()
        .expect("running profiler")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line: {stderr}"
    );
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

/// Check that a PID that does not exist is reported in one line.
#[test]
fn missing_pid_is_one_line_error() {
    let out = profiler(&[
        "record",
        "--pid",
        "999999999",
        "--duration",
        "1s",
        "--out",
        "/tmp/profiler-test-missing",
    ]);
    assert_one_line_error(&out, "process 999999999 does not exist");
}

/// Check that an output directory that cannot be created is reported before attaching.
#[test]
fn unwritable_out_is_one_line_error() {
    let pid = std::process::id().to_string();
    let out = profiler(&[
        "record",
        "--pid",
        &pid,
        "--duration",
        "1s",
        "--out",
        "/proc/self/cannot-write-here",
    ]);
    assert_one_line_error(&out, "cannot create output directory");
}

/// Check that running without root says so in one line (run as `nobody` via setpriv).
#[test]
#[ignore = "needs root (to drop to another user): run with `cargo xtask test`"]
fn not_root_is_one_line_error() {
    let pid = std::process::id().to_string();
    let dir = std::env::temp_dir().join("profiler-test-notroot");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_profiler"),
        ])
        .args(["record", "--pid", &pid, "--duration", "1s", "--out"])
        .arg(dir.join("out"))
        .output()
        .expect("running setpriv");
    assert_one_line_error(&out, "must run as root");
    assert!(
        !dir.join("out").exists(),
        "a refused run left an output directory behind"
    );
}

/// Check that root without the eBPF capabilities (a container without --privileged)
/// gets one line that keeps the kernel's EPERM and says which capabilities are missing.
#[test]
#[ignore = "needs root (to drop capabilities): run with `cargo xtask test`"]
fn root_without_bpf_capabilities_is_told_what_is_missing() {
    let pid = std::process::id().to_string();
    let out = Command::new("capsh")
        .arg("--drop=cap_bpf,cap_sys_admin,cap_perfmon")
        .arg("--")
        .arg("-c")
        .arg(format!(
            "exec {} record --pid {pid} --duration 1s --out /tmp/profiler-test-nocap",
            env!("CARGO_BIN_EXE_profiler")
        ))
        .output()
        .expect("running capsh");
    assert_one_line_error(&out, "Operation not permitted");
    assert_one_line_error(&out, "CAP_BPF");
}

/// Check that nonsense arguments are one-line errors with exit 1, as every other error.
#[test]
fn bad_arguments_are_one_line_errors() {
    let out = profiler(&["record", "--pid", "abc", "--out", "x"]);
    assert_one_line_error(&out, "invalid value 'abc' for '--pid <PID>'");
    let out = profiler(&["record", "--pid", "1"]);
    assert_one_line_error(&out, "required arguments were not provided: --out <DIR>");
    let out = profiler(&["record", "--bogus"]);
    assert_one_line_error(&out, "unexpected argument '--bogus'");
}

/// Check that a huge value of every duration flag is a one-line error, not a panic.
#[test]
fn huge_durations_are_one_line_errors() {
    let huge = "99999999999999999999s";
    let cases: [&[&str]; 4] = [
        &["record", "--pid", "1", "--out", "x", "--duration", huge],
        &[
            "record",
            "--pid",
            "1",
            "--out",
            "x",
            "--wait-threshold",
            huge,
        ],
        &["stalls", "--pid", "1", "--watch", huge],
        &["daemon", "--pid", "1", "--out", "x", "--interval", huge],
    ];
    for args in cases {
        assert_one_line_error(&profiler(args), "is too long");
    }
}

/// Check that `--allocator` is refused without `--allocations` (it would be ignored),
/// and when it names a missing file, a device or a non-allocator, before anything runs.
#[test]
fn bad_allocator_paths_are_one_line_errors() {
    let record = |extra: &[&str]| {
        let mut args = vec!["record", "--pid", "1", "--out", "/tmp/profiler-test-alloc"];
        args.extend_from_slice(extra);
        profiler(&args)
    };
    assert_one_line_error(
        &record(&["--allocator", "/usr/lib/x86_64-linux-gnu/libc.so.6"]),
        "--allocations",
    );
    assert_one_line_error(
        &record(&["--allocations", "--allocator", "/nonexistent.so"]),
        "cannot open /nonexistent.so",
    );
    assert_one_line_error(
        &record(&["--allocations", "--allocator", "/dev/zero"]),
        "not a regular file",
    );
    assert_one_line_error(
        &record(&["--allocations", "--allocator", "/etc/hostname"]),
        "is not an ELF file",
    );
}

/// Check that `diff` of a device is refused at once instead of reading it forever.
#[test]
fn diff_of_a_device_is_a_one_line_error() {
    assert_one_line_error(
        &profiler(&["diff", "/dev/zero", "/dev/null", "--out", "/tmp/d.svg"]),
        "not a regular file",
    );
}

/// Check that target selectors that select nothing, or cannot be understood, are
/// reported in one line before anything is attached: a bad regex, a cgroup that does
/// not exist, a container ID that is not hex, a name no process has.
#[test]
fn bad_target_selectors_are_one_line_errors() {
    let record = |selector: &[&str]| {
        let mut args = vec![
            "record",
            "--duration",
            "1s",
            "--out",
            "/tmp/profiler-test-sel",
        ];
        args.extend_from_slice(selector);
        profiler(&args)
    };
    assert_one_line_error(
        &record(&["--comm", "(unclosed"]),
        "bad --comm regular expression \"(unclosed\": unclosed group",
    );
    assert_one_line_error(
        &record(&["--cgroup", "/no-such-cgroup-for-profiler-tests"]),
        "cgroup /no-such-cgroup-for-profiler-tests does not exist",
    );
    assert_one_line_error(
        &record(&["--container", "web-1"]),
        "--container \"web-1\" is not a container ID",
    );
    assert_one_line_error(
        &record(&["--comm", "^no-such-process-name$"]),
        "no process matches comm /^no-such-process-name$/",
    );
    assert_one_line_error(
        &record(&["--container", "0123456789ab"]),
        "no running process is in a container whose ID starts with 0123456789ab",
    );
}

/// Check that a kernel thread given by PID is refused in one line (it has no user
/// space). Skipped, saying so, where no kernel thread is visible (a PID namespace).
#[test]
fn kernel_thread_pid_is_one_line_error() {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let kthread = std::fs::read_dir("/proc").unwrap().find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid pgrp session tty tpgid flags …
        let flags: u64 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(6)?
            .parse()
            .ok()?;
        (flags & PF_KTHREAD != 0).then_some(pid)
    });
    let Some(pid) = kthread else {
        eprintln!("skipped: no kernel thread visible in /proc");
        return;
    };
    let pid = pid.to_string();
    let out = profiler(&[
        "record",
        "--pid",
        &pid,
        "--out",
        "/tmp/profiler-test-kthread",
    ]);
    assert_one_line_error(&out, &format!("process {pid} is a kernel thread"));
}
