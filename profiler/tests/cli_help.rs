//! The command line as users meet it: `--help` of every command against golden files
//! (re-bless with `BLESS=1 cargo test --test cli_help`), `--version` on every
//! subcommand, the `-p`/`-o` aliases and shell completions, run through the real binary.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

fn profiler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profiler"))
        .args(args)
        .env_remove("COLUMNS")
        .output()
        .expect("running profiler")
}

/// Every subcommand a user can see.
const SUBCOMMANDS: &[&str] = &[
    "record",
    "stalls",
    "daemon",
    "diff",
    "replay",
    "completions",
];

/// Check that `--help` of the tool and of each subcommand matches its golden file.
#[test]
fn help_matches_golden() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/help");
    let bless = std::env::var_os("BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for sub in std::iter::once("profiler").chain(SUBCOMMANDS.iter().copied()) {
        let args: Vec<&str> = if sub == "profiler" {
            vec!["--help"]
        } else {
            vec![sub, "--help"]
        };
        let out = profiler(&args);
        assert!(out.status.success(), "{sub} --help: {:?}", out.status);
        let actual = String::from_utf8(out.stdout).unwrap();
        let path = dir.join(format!("{sub}.txt"));
        if bless {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
        assert!(
            expected == actual,
            "`profiler {}` differs from {}; if the change is intended, re-bless with BLESS=1\n{actual}",
            args.join(" "),
            path.display()
        );
    }
}

/// Check that every subcommand answers `--version` with the version, exit 0.
#[test]
fn version_on_every_subcommand() {
    for sub in SUBCOMMANDS {
        let out = profiler(&[sub, "--version"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub} --version: {:?}", out.status);
        assert!(
            stdout.trim_end().ends_with(env!("CARGO_PKG_VERSION")),
            "{sub}: {stdout}"
        );
    }
}

/// Check that `-p` and `-o` are taken as `--pid` and `--out`: a missing PID is the
/// same one-line error as with the long names.
#[test]
fn short_pid_and_out_aliases() {
    let out = profiler(&[
        "record",
        "-p",
        "999999999",
        "-o",
        "/tmp/profiler-test-short",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("process 999999999 does not exist"),
        "{stderr}"
    );
}

/// Check that the bash completion script loads in bash and registers the command.
#[test]
fn bash_completion_loads() {
    let script = profiler(&["completions", "bash"]);
    assert!(script.status.success());
    let dir = std::env::temp_dir().join(format!("profiler-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("profiler.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}' && complete -p profiler", file.display()))
        .output()
        .expect("running bash");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("profiler"), "{stdout}");
    let bad = profiler(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(1));
}
