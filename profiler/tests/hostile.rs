//! Root integration tests of files that a target controls and sets as traps: a FIFO where
//! a perf map should be (which would block a plain `open()` forever), and an absolute
//! symlink inside a container root (which a plain open resolves against the host's root).
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Run `profiler ARGS`, failing the test (and killing it) if it has not exited within
/// `limit`: a hang is the defect these tests look for. Returns its stderr.
fn run_bounded(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting profiler");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            eprintln!("{stderr}");
            assert!(status.success(), "profiler failed: {status}: {stderr}");
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("profiler {args:?} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Check that a FIFO planted at `/tmp/perf-PID.map` neither hangs `record` nor stops it
/// from writing its files, and that the refusal is reported.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn perf_map_fifo_does_not_hang_record() {
    require_root();
    let dir = scratch_dir("hostile_fifo");
    let program = build_c("jit_trap.c", "jit_trap", "gcc", FP_FLAGS);
    let workload = Workload::start_with_env(&program, 4.0, &dir, &[("PERF_MAP_TRAP", "fifo")]);
    let pid = workload.pid.to_string();
    workload.release();
    let out = dir.join("out");
    let stderr = run_bounded(
        &[
            "record",
            "--pid",
            &pid,
            "--memory",
            "--sample-bytes",
            "1",
            "--duration",
            "2s",
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    workload.finish("leaked_bytes");
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    let folded = read_folded(&out.join("memory.folded"));
    assert!(
        has_any(&folded, "jit_leak_chunk"),
        "the leak was not recorded: {folded:?}"
    );
    assert!(
        stderr.contains("FIFO") || report.contains("FIFO"),
        "the refused FIFO is not reported:\n{stderr}\n{report}"
    );
}

fn has_any(lines: &[(Vec<String>, u64)], frame: &str) -> bool {
    lines.iter().any(|(frames, _)| has_frame(frames, frame))
}

/// Check that an absolute symlink at a container's `/tmp/perf-1.map` is resolved inside
/// the container's root: the jitted frame is named from the container's file, never from
/// the host file at the same path.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn perf_map_symlink_stays_in_the_container() {
    require_root();
    let dir = scratch_dir("hostile_symlink");
    let program = build_c(
        "jit_trap.c",
        "jit_trap_static",
        "gcc",
        &[
            "-O1",
            "-g",
            "-static",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
        ],
    );
    // The same absolute path on the host holds a map that names everything HOST_SECRET.
    let secret = format!("/profiler-test-secret-{}.map", std::process::id());
    std::fs::write(&secret, "1000 7ffffffff000 HOST_SECRET\n").unwrap();
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let trap = format!("symlink:{secret}");
    let workload = NsWorkload::start_with_env(
        &program,
        4.0,
        &root,
        EnterRoot::PivotRoot,
        None,
        &[("PERF_MAP_TRAP", &trap)],
    );
    let pid = workload.host_pid.to_string();
    workload.release();
    let out = dir.join("out");
    run_bounded(
        &[
            "record",
            "--pid",
            &pid,
            "--memory",
            "--sample-bytes",
            "1",
            "--duration",
            "2s",
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    workload.finish("leaked_bytes");
    let _ = std::fs::remove_file(&secret);
    let text = std::fs::read_to_string(out.join("memory.folded")).unwrap();
    assert!(
        !text.contains("HOST_SECRET"),
        "read the host's file:\n{text}"
    );
    assert!(
        text.contains("IN_ROOT_NAME"),
        "the container's own perf map was not used:\n{text}"
    );
}

/// Check that `stalls` whose reader goes away (`| true`) or whose stdout is full
/// (`> /dev/full`) ends without a panic: quietly for the closed pipe, with one line for
/// the full device.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn stalls_output_errors_are_not_panics() {
    require_root();
    let pid = std::process::id().to_string();
    let profiler = env!("CARGO_BIN_EXE_profiler");
    let piped = Command::new("sh")
        .args([
            "-c",
            &format!("{profiler} stalls --pid {pid} --watch 1s | true"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let full = Command::new(profiler)
        .args(["stalls", "--pid", &pid, "--watch", "1s"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .contains("cannot write to standard output"),
        "{stderr}"
    );
}

/// A tmpfs of `size` mounted on `dir` for the life of the value: a disk that fills up.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "profiler-test-full",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Names of the files in `dir` with their sizes.
fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Check that a capture on a disk that fills up writes its report first and whole, says
/// so in one line, and leaves no half-written flamegraph and no temporary file.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn record_on_a_full_disk_keeps_the_report() {
    require_root();
    let dir = scratch_dir("hostile_full_disk");
    let program = build_c("mmap_leak.c", "mmap_leak_full", "gcc", FP_FLAGS);
    let out = dir.join("out");
    let disk = SmallDisk::mount(&out, "24k");
    let workload = Workload::start(&program, 3.0, &dir);
    let pid = workload.pid.to_string();
    workload.release();
    let output = Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args([
            "record",
            "--pid",
            &pid,
            "--memory",
            "--duration",
            "2s",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    workload.finish("leaked_bytes");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("No space left on device"), "{stderr}");
    let files = listing(&out);
    eprintln!("{files:?}");
    let size_of = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
    assert!(size_of("report.txt").is_some_and(|s| s > 0), "{files:?}");
    assert!(size_of("report.json").is_some_and(|s| s > 0), "{files:?}");
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(report.contains("leak_sessions"), "{report}");
    assert!(
        files
            .iter()
            .all(|(n, s)| !n.starts_with('.') && (*s > 0 || n.ends_with(".folded"))),
        "half-written or temporary files left: {files:?}"
    );
    drop(disk);
}

/// Check that recording again into the same `--out` leaves no file of the earlier
/// capture next to the new report.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn reused_out_keeps_nothing_of_the_previous_capture() {
    require_root();
    let dir = scratch_dir("hostile_reused_out");
    let program = build_c("mmap_leak.c", "mmap_leak_reuse", "gcc", FP_FLAGS);
    let out = dir.join("out");
    for args in [&["--memory", "--allocations"][..], &["--waits"][..]] {
        let workload = Workload::start(&program, 2.5, &dir);
        let pid = workload.pid.to_string();
        let mut all = vec!["--pid", pid.as_str(), "--duration", "1s"];
        all.extend_from_slice(args);
        let rec = Recording::start(&all, &out);
        workload.release();
        rec.wait();
        workload.finish("leaked_bytes");
        let _ = std::fs::remove_file(dir.join("go"));
    }
    let names: Vec<String> = listing(&out).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n == "waits.svg"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("memory") || n.starts_with("allocations")),
        "files of the earlier capture are still there: {names:?}"
    );
}
