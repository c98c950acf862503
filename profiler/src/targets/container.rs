//! Container IDs from cgroup paths.
//!
//! Container runtimes put each container's processes in a cgroup named after the
//! container ID, so the ID can be read from `/proc/PID/cgroup` without talking to the
//! runtime (which may not even run on the same host as its socket, or may be down):
//!
//! | runtime | cgroup path (systemd driver / cgroupfs driver) |
//! | --- | --- |
//! | Docker | `…/docker-<id>.scope` / `/docker/<id>` |
//! | containerd (CRI) | `…/cri-containerd-<id>.scope` / `/kubepods/<qos>/pod<uid>/<id>` |
//! | CRI-O | `…/crio-<id>.scope` / `/kubepods/…/crio-<id>` |
//! | Podman | `…/libpod-<id>.scope[/container]` / `/libpod_parent/libpod-<id>` |
//!
//! IDs are 64 lowercase hex digits. The conmon monitors of CRI-O and Podman
//! (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) are not the container.
use serde::Serialize;

/// A container, as far as its cgroup path tells.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ContainerId {
    /// The full ID: 64 lowercase hex digits.
    pub id: String,
    /// The runtime the path's naming scheme belongs to, when it says.
    pub runtime: Option<&'static str>,
}

impl ContainerId {
    /// The 12-digit short form `docker ps` and `crictl ps` print.
    pub fn short(&self) -> &str {
        &self.id[..12]
    }
}

/// Length of a container ID in hex digits.
const ID_LEN: usize = 64;

/// Cgroup name prefixes (before `<id>`, with an optional `.scope` after) by runtime.
const PREFIXES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container of the deepest cgroup component that names one, if any.
///
/// Deepest first: a container started inside another (Docker in Docker, a pod in a
/// kind node) is the inner one.
pub fn from_cgroup_path(path: &str) -> Option<ContainerId> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        for &(prefix, runtime) in PREFIXES {
            if let Some(id) = name.strip_prefix(prefix) {
                if is_id(id) {
                    return Some(ContainerId {
                        id: id.to_string(),
                        runtime: Some(runtime),
                    });
                }
            }
        }
        if is_id(name) {
            // cgroupfs drivers name the cgroup by the bare ID; the parent says whose.
            let runtime = match i.checked_sub(1).map(|p| parts[p]) {
                Some("docker") => Some("docker"),
                Some(p) if p.starts_with("pod") => Some("kubernetes"),
                _ => None,
            };
            return Some(ContainerId {
                id: name.to_string(),
                runtime,
            });
        }
    }
    None
}

/// Whether `s` can be (a prefix of) a container ID: 1 to 64 hex digits.
pub fn is_id_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1d2c3b5a6978877665544332211000ffeeddccbbaa99887766554433221100";

    fn id(path: &str) -> Option<(String, Option<&'static str>)> {
        from_cgroup_path(path).map(|c| (c.id, c.runtime))
    }

    /// Check the paths Docker creates with the systemd and the cgroupfs drivers.
    #[test]
    fn docker_paths() {
        let want = Some((ID.to_string(), Some("docker")));
        assert_eq!(id(&format!("/system.slice/docker-{ID}.scope")), want);
        assert_eq!(id(&format!("/docker/{ID}")), want);
        // Docker-in-Docker or a systemd inside the container: the ID is above.
        assert_eq!(id(&format!("/docker/{ID}/init.scope")), want);
    }

    /// Check Kubernetes paths: containerd and CRI-O with the systemd driver, and the
    /// cgroupfs driver's bare ID under the pod's cgroup.
    #[test]
    fn kubernetes_paths() {
        let pod = "kubepods-burstable-pod3d1a2b4c_5e6f_7081_92a3_b4c5d6e7f809.slice";
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{ID}.scope"
            )),
            Some((ID.to_string(), Some("containerd")))
        );
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/{pod}/crio-{ID}.scope"
            )),
            Some((ID.to_string(), Some("cri-o")))
        );
        assert_eq!(
            id(&format!(
                "/kubepods/besteffort/pod8e7a6b5c-4d3e-2f10-a9b8-c7d6e5f4a3b2/{ID}"
            )),
            Some((ID.to_string(), Some("kubernetes")))
        );
        // The pod cgroup itself is no container.
        assert_eq!(
            id(&format!("/kubepods.slice/kubepods-burstable.slice/{pod}")),
            None
        );
    }

    /// Check Podman's paths, rootful and rootless, and that its conmon is no container.
    #[test]
    fn podman_paths() {
        let want = Some((ID.to_string(), Some("podman")));
        assert_eq!(
            id(&format!("/machine.slice/libpod-{ID}.scope/container")),
            want
        );
        assert_eq!(
            id(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            want
        );
        assert_eq!(id(&format!("/libpod_parent/libpod-{ID}")), want);
        assert_eq!(
            id(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(id(&format!("/system.slice/crio-conmon-{ID}.scope")), None);
    }

    /// Check that ordinary cgroups (sessions, services, hashes that are not 64 hex
    /// digits, upper-case hex) name no container.
    #[test]
    fn non_container_paths() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/ssh.service",
            "/process_api/114146f00e2da61cce93efdaf128a0a5",
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/docker/{}0", ID),
        ] {
            assert_eq!(id(path), None, "{path}");
        }
    }

    /// Check that a container nested in another container's cgroup is the inner one.
    #[test]
    fn deepest_container_wins() {
        let inner = "a".repeat(64);
        assert_eq!(
            id(&format!("/docker/{ID}/docker/{inner}")),
            Some((inner, Some("docker")))
        );
    }

    /// Check the short form and prefix syntax.
    #[test]
    fn short_form_and_prefixes() {
        let c = from_cgroup_path(&format!("/docker/{ID}")).unwrap();
        assert_eq!(c.short(), "4f1d2c3b5a69");
        assert!(is_id_prefix("4f1d") && is_id_prefix(ID));
        assert!(!is_id_prefix("") && !is_id_prefix("xyz") && !is_id_prefix(&format!("{ID}0")));
    }
}
