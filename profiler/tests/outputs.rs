//! Root integration tests of what `record` tells its user where they look: the start
//! line, the verdict and file lines it ends with, and the verdict in the subtitle of
//! every flamegraph.
mod common;

use std::path::Path;

use common::*;

/// The subtitle of an inferno flamegraph (`<text id="subtitle" …>TEXT</text>`).
fn subtitle(svg: &Path) -> String {
    let text = std::fs::read_to_string(svg).unwrap_or_else(|e| panic!("{}: {e}", svg.display()));
    let at = text
        .find("id=\"subtitle\"")
        .unwrap_or_else(|| panic!("{} has no subtitle", svg.display()));
    let rest = &text[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find("</text>").unwrap();
    rest[start..end].to_string()
}

/// Check that `record -p PID -o DIR` on a malloc leak names the process once in its
/// start line, ends with the process's LEAK verdict line and each file with the
/// command that opens it, and that every SVG's subtitle carries the verdict.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn record_ends_with_verdicts_and_files() {
    require_root();
    let dir = scratch_dir("outputs_end_of_run");
    let program = build_c("line_leak.c", "line_leak_out", "gcc", &["-O2", "-g"]);
    let workload = Workload::start(&program, 3.0, &dir);
    let pid = workload.pid;
    let out = dir.join("out");
    let pid_arg = pid.to_string();
    let (rec, lines) = Recording::start_watching(
        &["-p", &pid_arg, "--allocations", "--duration", "10s"],
        &out,
    );
    let start = rec.start_line.clone();
    workload.release();
    let leaked = workload.finish("leaked_bytes");
    rec.wait();
    // The forwarding thread ends when the profiler's stderr closes.
    let lines: Vec<String> = lines.iter().map(|(_, l)| l).collect();
    eprintln!("leaked {leaked} bytes");

    assert!(
        start.contains(&format!("recording line_leak_out (pid {pid}) for 10.0 s")),
        "{start}"
    );
    assert!(!start.contains(&format!("pid {pid} (")), "{start}");
    let verdict = lines
        .iter()
        .find(|l| l.starts_with(&format!("line_leak_out (pid {pid}): ")))
        .unwrap_or_else(|| panic!("no verdict line in {lines:#?}"));
    assert!(
        verdict.contains("LEAK: live allocations grew") && verdict.contains("under leak_here"),
        "{verdict}"
    );
    assert!(
        verdict.contains(" · "),
        "stall verdict next to it: {verdict}"
    );
    let out_text = out.display().to_string();
    for command in [
        format!("open {out_text}/allocations.svg"),
        format!("open {out_text}/memory.svg"),
        format!("open {out_text}/waits.svg"),
        format!("less {out_text}/report.txt"),
        format!("go tool pprof -http=: {out_text}/allocations.pb.gz"),
    ] {
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with(&command)),
            "no `{command}` in {lines:#?}"
        );
    }

    for view in ["allocations", "memory", "memory-diff"] {
        let sub = subtitle(&out.join(format!("{view}.svg")));
        eprintln!("{view}.svg subtitle: {sub}");
        assert!(
            sub.contains(&format!("line_leak_out ({pid}) LEAK +")) && sub.contains("leak_here"),
            "{view}.svg: {sub}"
        );
    }
    let waits = subtitle(&out.join("waits.svg"));
    assert!(
        waits.contains(&format!("line_leak_out ({pid}) ")),
        "waits.svg: {waits}"
    );
    let diff = subtitle(&out.join("memory-diff.svg"));
    assert!(diff.contains("sampling noise"), "{diff}");
}

/// Check that `stalls -p PID` on a deadlocked pool ends with the process's verdict line,
/// after the blocked stacks, so the answer is the last thing on the screen.
#[test]
#[ignore = "needs root: run with `cargo xtask test`"]
fn stalls_ends_with_the_verdict_line() {
    require_root();
    let dir = scratch_dir("outputs_stalls");
    let program = build_c(
        "pool_deadlock.c",
        "pool_stalls_out",
        "gcc",
        &["-O1", "-g", "-fno-omit-frame-pointer", "-pthread"],
    );
    let workload = Workload::start(&program, 30.0, &dir);
    workload.release();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = workload.pid;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(["stalls", "-p", &pid.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let last = stdout.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "pool_stalls_out (pid {pid}): STALLED: 4 of 5 threads"
        )),
        "last line: {last}"
    );
}
