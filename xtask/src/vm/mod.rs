//! `cargo xtask vm-test [KERNEL…]`: the end-to-end checks on other kernels.
//!
//! Each Debian cloud kernel (5.10, 6.1, 6.12) boots in QEMU with an initramfs holding
//! busybox, the release profiler and static test programs; `/init` runs `checks.sh`
//! and powers off. `host` runs the same script on this machine's own kernel. Every
//! check prints one result line; the matrix kernel × check is printed at the end and
//! any failed check fails the command. KVM is used when it works, TCG (`-cpu max`)
//! otherwise: nested KVM fails on some CI machines, which is seen within seconds.
mod initramfs;
mod kernels;
mod matrix;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::{
    cmd,
    setup::{self, SetupOptions},
};
use kernels::{KernelSpec, KERNELS};
use matrix::Column;

/// The checks, in the order they run and are shown (functions `check_<name>` in
/// checks.sh).
pub const CHECKS: &[&str] = &[
    "memory_growth",
    "allocations",
    "futex_stall",
    "sleep_holder",
    "socket_wait",
    "oom_snapshot",
    "cgroup_target",
    "fork_follow",
    "daemon_interval",
];

const INIT: &str = include_str!("init.sh");
const CHECKS_SCRIPT: &str = include_str!("checks.sh");

/// Static test programs and their gcc flags (frame pointers where the checks read
/// mapping stacks; release-like flags where the unwinder must do without).
const PROGRAMS: &[(&str, &[&str])] = &[
    ("mmap_leak", FP_FLAGS),
    ("oom_grow", FP_FLAGS),
    ("socket_wait", FP_FLAGS),
    ("session_cache", &["-O2", "-g", "-fomit-frame-pointer"]),
    ("pool_deadlock", &["-O2", "-g", "-pthread"]),
    ("lock_sleep", LOCK_SLEEP_FLAGS),
];
/// Frame pointers for the holder's stack, threads for the lock.
const LOCK_SLEEP_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
];
const FP_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-optimize-sibling-calls",
];

/// A boot that has not reached the checks by then is stuck (KVM errors pause the guest).
const KVM_START_TIMEOUT: Duration = Duration::from_secs(60);
/// One kernel's whole run under TCG: boot plus the checks, about 2 minutes measured.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// Kernels to test: 5.10, 6.1, 6.12 (Debian cloud kernels in QEMU) and host (this
    /// machine's kernel, checks run directly). Default: all of them.
    #[arg(value_name = "KERNEL")]
    pub kernels: Vec<String>,
    /// Run only these checks (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub checks: Vec<String>,
    /// QEMU accelerator: auto tries KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Test the dev-profile profiler (what `cargo xtask test` has already built)
    /// instead of building the release one.
    #[arg(long)]
    pub dev: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// What to run, resolved from the arguments.
#[derive(Debug, PartialEq)]
enum Target {
    Vm(KernelSpec),
    Host,
}

fn targets(names: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() {
        let mut all: Vec<Target> = KERNELS.iter().copied().map(Target::Vm).collect();
        all.push(Target::Host);
        return Ok(all);
    }
    names
        .iter()
        .map(|name| match name.as_str() {
            "host" => Ok(Target::Host),
            _ => KERNELS
                .iter()
                .find(|k| k.name == name)
                .map(|k| Target::Vm(*k))
                .with_context(|| {
                    let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                    format!(
                        "unknown kernel {name}: known are {} and host",
                        known.join(", ")
                    )
                }),
        })
        .collect()
}

pub fn vm_test(args: &VmTestArgs) -> Result<()> {
    let targets = targets(&args.kernels)?;
    let checks: Vec<&str> = if args.checks.is_empty() {
        CHECKS.to_vec()
    } else {
        for check in &args.checks {
            if !CHECKS.contains(&check.as_str()) {
                bail!("unknown check {check}: known are {}", CHECKS.join(", "));
            }
        }
        args.checks.iter().map(String::as_str).collect()
    };
    if !cmd::is_root() {
        bail!("vm-test needs root (the host column loads eBPF programs; apt fetches kernels)");
    }
    let ready = setup::setup(&SetupOptions {
        test_deps: true,
        ..SetupOptions::default()
    })?;
    let mut build = ready.cargo();
    // The dev build uses the test steps' package selection, so it rebuilds nothing.
    if args.dev {
        build.args(["build", "--workspace", "--exclude", "profiler-ebpf"]);
    } else {
        build.args(["build", "--release", "--package", "profiler"]);
    }
    println!("==> {}", cmd::display(&build));
    cmd::run(&mut build)?;
    let profile = if args.dev { "debug" } else { "release" };
    let profiler = cmd::target_dir().join(profile).join("profiler");
    let work = cmd::target_dir().join("vm-test");
    std::fs::create_dir_all(&work)?;
    let programs = build_programs(&work.join("progs"))?;
    let busybox = cmd::which("busybox").context("busybox is not installed")?;

    let mut columns = Vec::new();
    // Once KVM failed to boot a kernel, the others go straight to TCG.
    let mut accel = args.accel;
    for target in &targets {
        let started = Instant::now();
        let column = match target {
            Target::Vm(spec) => {
                let vmlinuz = kernels::fetch(spec)?;
                let initrd = work.join("root.cpio.gz");
                initramfs::build(
                    &initramfs::Contents {
                        busybox: &busybox,
                        profiler: &profiler,
                        programs: &programs,
                        init: INIT,
                        checks: CHECKS_SCRIPT,
                    },
                    &work.join("root"),
                    &initrd,
                )?;
                boot(spec, &vmlinuz, &initrd, &checks, &mut accel, &work)?
            }
            Target::Host => run_on_host(&busybox, &profiler, &work, &checks)?,
        };
        println!(
            "==> vm-test: {} done in {:.0} s",
            column.kernel,
            started.elapsed().as_secs_f64()
        );
        if let Some(crash) = column.crash.as_deref().filter(|_| !column.done) {
            println!("==> vm-test: {} stopped: {crash}", column.kernel);
        }
        columns.push(column);
    }
    println!(
        "\n==> vm-test matrix\n{}",
        matrix::render(&checks, &columns)
    );
    let failed: Vec<String> = columns
        .iter()
        .flat_map(|c| {
            c.failures(&checks)
                .into_iter()
                .map(move |check| format!("{check} on {}", c.kernel))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "vm-test: {} failed (console logs in {})",
            failed.join(", "),
            work.display()
        );
    }
    Ok(())
}

/// Compile the static test programs into `dir`.
fn build_programs(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let sources = cmd::workspace_root().join("testprogs");
    let mut built = Vec::new();
    for (name, flags) in PROGRAMS {
        let out = dir.join(name);
        cmd::run(
            Command::new("gcc")
                .arg("-static")
                .args(*flags)
                .arg("-o")
                .arg(&out)
                .arg(sources.join(format!("{name}.c"))),
        )?;
        built.push(out);
    }
    Ok(built)
}

/// Boot `vmlinuz` with the initramfs and collect its results, trying KVM first when
/// `accel` allows it and /dev/kvm is there; `accel` becomes TCG when KVM fails.
fn boot(
    spec: &KernelSpec,
    vmlinuz: &Path,
    initrd: &Path,
    checks: &[&str],
    accel: &mut Accel,
    work: &Path,
) -> Result<Column> {
    let append = format!(
        "console=ttyS0 panic=-1 rdinit=/init quiet vmtest.cgroup={} vmtest.checks={}",
        spec.cgroup.param(),
        checks.join(",")
    );
    let log = work.join(format!("{}.log", spec.name));
    let kvm = *accel == Accel::Kvm || (*accel == Accel::Auto && Path::new("/dev/kvm").exists());
    if kvm {
        println!("==> vm-test: booting {} (KVM)", spec.name);
        let run = run_logged(
            qemu(vmlinuz, initrd, &append, true),
            &log,
            Some(KVM_START_TIMEOUT),
        )?;
        if run.contains("VMTEST-INFO") || *accel == Accel::Kvm {
            return Ok(Column::parse(spec.name, &run));
        }
        println!(
            "==> vm-test: KVM did not boot {}; using TCG from now on",
            spec.name
        );
        *accel = Accel::Tcg;
    }
    println!("==> vm-test: booting {} (TCG, -cpu max)", spec.name);
    let run = run_logged(qemu(vmlinuz, initrd, &append, false), &log, None)?;
    Ok(Column::parse(spec.name, &run))
}

fn qemu(vmlinuz: &Path, initrd: &Path, append: &str, kvm: bool) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    if kvm {
        qemu.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        // The default CPU model once crashed 6.12 in __schedule under TCG. One host
        // thread for both vCPUs: with multi-threaded TCG, a vCPU can still run a
        // translated int3 after the other vCPU's text_poke_bp (a static key flipped
        // as the profiler attaches syscall tracepoints) has finished, and 6.12 dies of
        // `Oops: int3` in syscall_exit_to_user_mode_prepare (1 run in 5 here, and once
        // in CI). The guest still has two CPUs.
        qemu.args(["-accel", "tcg,thread=single", "-cpu", "max"]);
    }
    qemu.args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
    qemu
}

/// Run the checks on this machine's kernel with the same script.
fn run_on_host(busybox: &Path, profiler: &Path, work: &Path, checks: &[&str]) -> Result<Column> {
    let scratch = work.join("host");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let script = work.join("checks.sh");
    std::fs::write(&script, CHECKS_SCRIPT)?;
    println!("==> vm-test: running the checks on this machine's kernel");
    let mut command = Command::new(busybox);
    command
        .arg("sh")
        .arg(&script)
        .env("CHECKS", checks.join(" "))
        .env("PROFILER", profiler)
        .env("PROGS", work.join("progs"))
        .env("WORK", &scratch);
    let run = run_logged(command, &work.join("host.log"), None)?;
    Ok(Column::parse("host", &run))
}

/// Run `command`, writing its output (stdout and stderr) to `log` and echoing the
/// result lines. Killed after [`RUN_TIMEOUT`], or after `start_timeout` if no
/// `VMTEST-INFO` line came by then. Returns the whole output.
fn run_logged(mut command: Command, log: &Path, start_timeout: Option<Duration>) -> Result<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cmd::display(&command)))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        }));
    }
    drop(tx);
    let mut file = std::fs::File::create(log)?;
    let mut all = String::new();
    let started = Instant::now();
    let mut seen_start = false;
    loop {
        let elapsed = started.elapsed();
        let limit = match start_timeout {
            Some(t) if !seen_start => t,
            _ => RUN_TIMEOUT,
        };
        if elapsed >= limit {
            let _ = child.kill();
            all.push_str(&format!("\nvm-test: stopped after {} s\n", limit.as_secs()));
            break;
        }
        match rx.recv_timeout(limit - elapsed) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                let trimmed = line.trim_end_matches('\r');
                if let Some(at) = trimmed.find("VMTEST") {
                    println!("    {}", &trimmed[at..]);
                    seen_start |= trimmed[at..].starts_with("VMTEST-INFO");
                }
                if trimmed.contains("KVM internal error") {
                    let _ = child.kill();
                }
                all.push_str(trimmed);
                all.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    for reader in readers {
        let _ = reader.join();
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that no kernel names all four targets, names pick them, and an unknown
    /// name is an error that lists the known ones.
    #[test]
    fn kernel_names_resolve() {
        assert_eq!(targets(&[]).unwrap().len(), KERNELS.len() + 1);
        let picked = targets(&["6.1".into(), "host".into()]).unwrap();
        assert_eq!(picked, [Target::Vm(KERNELS[1]), Target::Host]);
        let err = targets(&["4.19".into()]).unwrap_err().to_string();
        assert!(err.contains("5.10, 6.1, 6.12 and host"), "{err}");
    }

    /// Check that every check in the list has its function in checks.sh and the script's
    /// default list is the same list in the same order.
    #[test]
    fn checks_match_the_script() {
        for check in CHECKS {
            assert!(
                CHECKS_SCRIPT.contains(&format!("\ncheck_{check}() {{")),
                "{check}"
            );
        }
        assert!(CHECKS_SCRIPT.contains(&format!("${{CHECKS:-{}}}", CHECKS.join(" "))));
    }

    /// Check that every test program the guest runs exists in testprogs/.
    #[test]
    fn programs_exist() {
        for (name, _) in PROGRAMS {
            let source = cmd::workspace_root().join(format!("testprogs/{name}.c"));
            assert!(source.exists(), "{}", source.display());
            assert!(CHECKS_SCRIPT.contains(name), "{name} unused");
        }
    }
}
