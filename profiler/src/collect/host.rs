//! Host prerequisites: privileges, BTF and tracefs. Checked before loading anything, so
//! the user gets one clear line instead of a verifier or attach error.
use std::path::Path;

/// A host that cannot run the probes, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("must run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE): loading eBPF programs needs privileges")]
    NotRoot,
    #[error("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): a kernel built with CONFIG_DEBUG_INFO_BTF=y is required")]
    NoBtf,
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}")]
    NoTracefs(String),
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Check privileges and kernel features; mount tracefs when it is not mounted.
pub fn check_host() -> Result<(), HostError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(HostError::NotRoot);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(HostError::NoBtf);
    }
    ensure_tracefs()
}

fn ensure_tracefs() -> Result<(), HostError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .map_err(|e| HostError::NoTracefs(format!("running mount: {e}")))?;
    if status.success() && Path::new(TRACEFS).join("events").is_dir() {
        Ok(())
    } else {
        Err(HostError::NoTracefs(format!("mount exited with {status}")))
    }
}

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK. Newer kernels use memcg
/// accounting and some sandboxes forbid raising the limit, so failure is ignored.
pub fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}

/// The whole cause chain of a load error in one line, with what to do when the kernel
/// said EPERM: root without CAP_BPF/CAP_SYS_ADMIN (a container without `--privileged`,
/// a systemd unit with a capability bounding set) otherwise only sees "failed to create
/// map `SCRATCH`".
pub fn explain_load_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut permission = false;
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        permission |= c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM));
        cause = c.source();
    }
    if permission {
        text.push_str(
            " (the kernel refused: root needs CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE, or \
             CAP_SYS_ADMIN; in a container run it --privileged, or grant those capabilities)",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to create map `SCRATCH`")]
    struct CreateMap(#[source] std::io::Error);

    /// Check that the cause of a load error is kept and EPERM comes with what to do.
    #[test]
    fn load_errors_keep_their_cause_and_explain_eperm() {
        let e = CreateMap(std::io::Error::from_raw_os_error(libc::EPERM));
        let text = explain_load_error(&e);
        assert!(
            text.starts_with("failed to create map `SCRATCH`: "),
            "{text}"
        );
        assert!(text.contains("CAP_BPF"), "{text}");
        let e = CreateMap(std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(!explain_load_error(&e).contains("CAP_BPF"));
    }
}
