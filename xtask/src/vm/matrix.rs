//! The result matrix of `vm-test`: each kernel's console log parsed into check results
//! (`VMTEST <check> PASS|FAIL|UNAVAILABLE <detail>` lines from `checks.sh`), and the
//! table printed at the end. Pure: tested on text.
use std::collections::BTreeMap;

/// What one check gave on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// The kernel truly lacks what the check needs; the detail says what.
    Unavailable,
}

/// One kernel's column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's title (`5.10`, `host`).
    pub kernel: String,
    /// `uname -r` and the cgroup mode, from the `VMTEST-INFO` line.
    pub info: Option<String>,
    pub results: BTreeMap<String, (Outcome, String)>,
    /// Whether `VMTEST-DONE` was seen (the script ran to its end).
    pub done: bool,
    /// The guest kernel's own death, when the log shows one: the first `Oops`, `BUG` or
    /// `Kernel panic` line with the faulting `RIP` and task, so that a stopped run says
    /// why in CI's output instead of only "stopped".
    pub crash: Option<String>,
}

impl Column {
    /// Parse a console log (serial output, `\r\n` line ends allowed).
    pub fn parse(kernel: &str, log: &str) -> Self {
        let mut column = Column {
            kernel: kernel.to_string(),
            info: None,
            results: BTreeMap::new(),
            done: false,
            crash: crash_summary(log),
        };
        for line in log.lines().map(|l| l.trim_end_matches('\r')) {
            // Kernel messages may share the console: take the marker wherever it starts.
            let Some(at) = line.find("VMTEST") else {
                continue;
            };
            let line = &line[at..];
            if line.starts_with("VMTEST-DONE") {
                column.done = true;
            } else if let Some(info) = line.strip_prefix("VMTEST-INFO ") {
                column.info = Some(info.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("VMTEST ") {
                let mut parts = rest.splitn(3, ' ');
                let (Some(check), Some(outcome)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let outcome = match outcome {
                    "PASS" => Outcome::Pass,
                    "UNAVAILABLE" => Outcome::Unavailable,
                    _ => Outcome::Fail,
                };
                let detail = parts.next().unwrap_or("").trim().to_string();
                column.results.insert(check.to_string(), (outcome, detail));
            }
        }
        column
    }

    /// The outcome of `check`; a check with no result line failed (the guest stopped
    /// early or the script broke).
    pub fn outcome(&self, check: &str) -> (Outcome, String) {
        self.results.get(check).cloned().unwrap_or_else(|| {
            let why = if self.info.is_none() {
                "no result: the kernel did not reach the checks"
            } else if !self.done {
                "no result: the run stopped before this check"
            } else {
                "no result"
            };
            match &self.crash {
                Some(crash) if !self.done => (Outcome::Fail, format!("{why} ({crash})")),
                _ => (Outcome::Fail, why.to_string()),
            }
        })
    }

    /// The checks of `checks` that failed here.
    pub fn failures<'a>(&self, checks: &[&'a str]) -> Vec<&'a str> {
        checks
            .iter()
            .copied()
            .filter(|check| self.outcome(check).0 == Outcome::Fail)
            .collect()
    }
}

/// The first kernel death in a console log, in one line: `Oops: int3 … at
/// syscall_exit_to_user_mode_prepare+0xd7/0x170 in profiler`. Timestamps are dropped.
fn crash_summary(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .map(|l| strip_timestamp(l.trim_end_matches('\r')))
        .collect();
    let start = lines.iter().position(|l| {
        l.starts_with("Oops:") || l.starts_with("BUG:") || l.starts_with("Kernel panic")
    })?;
    let mut summary = lines[start].to_string();
    let after = &lines[start + 1..lines.len().min(start + 12)];
    if let Some(rip) = after.iter().find_map(|l| l.strip_prefix("RIP: ")) {
        // `0010:function+0x…`: the segment selector says nothing to a reader.
        let at = rip.split_once(':').map_or(rip, |(_, f)| f);
        summary.push_str(&format!(" at {at}"));
    }
    if let Some(comm) = after
        .iter()
        .find_map(|l| l.split_once(" Comm: ").map(|(_, c)| c))
    {
        let task = comm.split_whitespace().next().unwrap_or(comm);
        summary.push_str(&format!(" in {task}"));
    }
    Some(summary)
}

/// `[   14.423282] text` → `text`.
fn strip_timestamp(line: &str) -> &str {
    match line.trim_start().strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(line, |(_, text)| text),
        None => line,
    }
}

/// The table: one row per check, one column per kernel, then each non-passing cell's
/// detail and every kernel's `uname -r`.
pub fn render(checks: &[&str], columns: &[Column]) -> String {
    let first = checks.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| c.kernel.len().max("UNAVAILABLE".len()))
        .collect();
    let mut out = format!("{:<first$}", "check");
    for (column, width) in columns.iter().zip(&widths) {
        out.push_str(&format!(" | {:<width$}", column.kernel));
    }
    out.push('\n');
    out.push_str(&"-".repeat(first));
    for width in &widths {
        out.push_str(&format!("-|-{}", "-".repeat(*width)));
    }
    out.push('\n');
    for check in checks {
        out.push_str(&format!("{check:<first$}"));
        for (column, width) in columns.iter().zip(&widths) {
            let label = match column.outcome(check).0 {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Unavailable => "UNAVAILABLE",
            };
            out.push_str(&format!(" | {label:<width$}"));
        }
        out.push('\n');
    }
    out.push('\n');
    for column in columns {
        out.push_str(&format!(
            "{}: {}\n",
            column.kernel,
            column.info.as_deref().unwrap_or("did not report")
        ));
        for check in checks {
            let (outcome, detail) = column.outcome(check);
            out.push_str(&format!("  {check}: {detail}"));
            if outcome != Outcome::Pass {
                out.push_str(&format!(" [{outcome:?}]"));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "[    1.2] random: crng init done\r\n\
        VMTEST-INFO kernel 5.10.0-32-cloud-amd64 cgroup v1\r\n\
        VMTEST-NOTE user registers: top of the task's kernel stack\r\n\
        VMTEST memory_growth PASS leak_sessions 100% of 39.0 MiB\r\n\
        noise VMTEST futex_stall FAIL no STALLED verdict\r\n\
          | profiler: error: something\r\n\
        VMTEST oom_snapshot UNAVAILABLE no memory cgroup controller\r\n\
        VMTEST-DONE\r\n";

    /// Check that result lines are read with their details, even after kernel noise on
    /// the same line, that notes are not results, and that the info and done markers
    /// are seen.
    #[test]
    fn parses_console_log() {
        let column = Column::parse("5.10", LOG);
        assert_eq!(
            column.info.as_deref(),
            Some("kernel 5.10.0-32-cloud-amd64 cgroup v1")
        );
        assert!(column.done);
        assert_eq!(
            column.outcome("memory_growth"),
            (Outcome::Pass, "leak_sessions 100% of 39.0 MiB".into())
        );
        assert_eq!(column.outcome("futex_stall").0, Outcome::Fail);
        assert_eq!(column.outcome("oom_snapshot").0, Outcome::Unavailable);
        assert_eq!(column.results.len(), 3);
        assert_eq!(
            column.failures(&[
                "memory_growth",
                "futex_stall",
                "oom_snapshot",
                "socket_wait"
            ]),
            ["futex_stall", "socket_wait"]
        );
    }

    /// Check that a kernel that never reached the checks fails every check, saying so.
    #[test]
    fn silent_kernel_fails_everything() {
        let column = Column::parse("6.1", "Kernel panic - not syncing\n");
        let (outcome, why) = column.outcome("memory_growth");
        assert_eq!(outcome, Outcome::Fail);
        assert!(why.contains("did not reach"), "{why}");
        let stopped = Column::parse("6.1", "VMTEST-INFO kernel 6.1 cgroup v2\n");
        assert!(stopped.outcome("x").1.contains("stopped before"));
    }

    /// Check that a guest kernel's Oops in the middle of the checks is named in the
    /// outcome of every check that did not run: where, in which task.
    #[test]
    fn stopped_run_names_the_oops() {
        let log = "VMTEST-INFO kernel 6.12 cgroup v2\r\n\
            VMTEST memory_growth PASS ok\r\n\
            [   14.423282] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
            [   14.423923] CPU: 1 UID: 0 PID: 219 Comm: profiler Not tainted 6.12.117 #1\r\n\
            [   14.424236] RIP: 0010:syscall_exit_to_user_mode_prepare+0xd7/0x170\r\n\
            [   14.431677] Kernel panic - not syncing: Fatal exception in interrupt\r\n";
        let column = Column::parse("6.12", log);
        assert_eq!(column.outcome("memory_growth").0, Outcome::Pass);
        let (outcome, why) = column.outcome("allocations");
        assert_eq!(outcome, Outcome::Fail);
        assert_eq!(
            why,
            "no result: the run stopped before this check (Oops: int3: 0000 [#1] PREEMPT SMP \
             NOPTI at syscall_exit_to_user_mode_prepare+0xd7/0x170 in profiler)"
        );
        assert_eq!(Column::parse("6.1", LOG).crash, None);
    }

    /// Check the table's shape: a header, a rule, one row per check with one cell per
    /// kernel, then the details.
    #[test]
    fn renders_matrix() {
        let columns = [
            Column::parse("5.10", LOG),
            Column::parse("host", "VMTEST memory_growth PASS ok\nVMTEST-DONE\n"),
        ];
        let table = render(&["memory_growth", "futex_stall"], &columns);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("check") && lines[0].contains("| 5.10"));
        assert!(lines[2].starts_with("memory_growth") && lines[2].matches("pass").count() == 2);
        assert!(lines[3].contains("FAIL"));
        assert!(table.contains("  futex_stall: no STALLED verdict [Fail]"));
        assert!(table.contains("host: did not report"));
    }
}
