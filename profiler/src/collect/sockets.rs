//! The connection ledger's side of the collector: which probes it attaches, and the
//! kernel's table of followed sockets (`SOCK_FDS`) that userspace seeds and adjusts.
use aya::maps::HashMap;
use profiler_common::{
    SockCounted, SockExchanges, SockKey, SOCK_CAPTURE_DEFAULT, SOCK_CAPTURE_EXCHANGES_IN,
    SOCK_CAPTURE_EXCHANGES_OUT, SOCK_CAPTURE_MAX, SOCK_CAPTURE_NONE,
};

use crate::events::{CountedBytes, CountedExchanges};

use super::{map, map_error, CollectError, Collector};

/// The connection ledger's probes: (program, `syscalls:` tracepoint it attaches to).
/// Calls are seen at their exits only (their arguments are read from the task's saved
/// registers there); `close` at its entry, while the descriptor still names the socket.
const SOCKET_TRACEPOINTS: &[(&str, &str)] = &[
    ("sock_exit_accept", "sys_exit_accept"),
    ("sock_exit_accept4", "sys_exit_accept4"),
    ("sock_exit_connect", "sys_exit_connect"),
    ("sock_exit_read", "sys_exit_read"),
    ("sock_exit_readv", "sys_exit_readv"),
    ("sock_exit_recvfrom", "sys_exit_recvfrom"),
    ("sock_exit_recvmsg", "sys_exit_recvmsg"),
    ("sock_exit_write", "sys_exit_write"),
    ("sock_exit_writev", "sys_exit_writev"),
    ("sock_exit_sendto", "sys_exit_sendto"),
    ("sock_exit_sendmsg", "sys_exit_sendmsg"),
    ("sock_enter_close", "sys_enter_close"),
];

/// Exits where a wait probe and a socket probe both run: (`syscalls:` tracepoint, the
/// program that does both). With the connection ledger on, the wait probes attach these
/// instead of their own exits ([`Collector::attach_wait_probes`]) and the socket probes
/// skip them: a call then runs one program at its exit, not two.
pub(super) const WAIT_SOCKET_EXITS: &[(&str, &str)] = &[
    ("sys_exit_accept", "wait_sock_exit_accept"),
    ("sys_exit_accept4", "wait_sock_exit_accept4"),
    ("sys_exit_connect", "wait_sock_exit_connect"),
    ("sys_exit_read", "wait_sock_exit_read"),
    ("sys_exit_readv", "wait_sock_exit_readv"),
    ("sys_exit_recvfrom", "wait_sock_exit_recvfrom"),
    ("sys_exit_recvmsg", "wait_sock_exit_recvmsg"),
];

impl Collector {
    /// Whether the program that is both the wait and the socket probe is attached to
    /// `syscalls:tracepoint`.
    fn both_attached(&self, tracepoint: &str) -> bool {
        WAIT_SOCKET_EXITS
            .iter()
            .filter(|(tp, _)| *tp == tracepoint)
            .any(|(_, both)| self.attachments().iter().any(|(p, _)| p == both))
    }

    /// Follow the sockets `pid` holds open now in the connection ledger's probes (those
    /// it opens later are added by the probes at accept and connect).
    pub(super) fn watch_sockets(&mut self, pid: u32) -> Result<(), CollectError> {
        let mut fds: HashMap<_, SockKey, u32> =
            HashMap::try_from(map(&mut self.ebpf, "SOCK_FDS")?).map_err(map_error("SOCK_FDS"))?;
        for (fd, _) in crate::sockets::socket_fds(pid) {
            let key = SockKey {
                tgid: pid,
                fd: fd as u32,
            };
            // A full table leaves the socket unfollowed; the kernel side counts its own.
            let _ = fds.insert(key, SOCK_CAPTURE_DEFAULT, 0);
        }
        Ok(())
    }

    /// Copy up to [`SOCK_CAPTURE_MAX`] bytes of each transfer of socket `fd` of `pid`
    /// from now on (HTTP/2: one transfer carries many frames). A socket closed
    /// meanwhile stays unfollowed.
    pub fn capture_more(&mut self, pid: u32, fd: i32) {
        self.set_capture(pid, fd, SOCK_CAPTURE_MAX);
    }

    /// Copy nothing of socket `fd` of `pid` from now on, and send no record per
    /// transfer: the kernel adds its bytes up ([`Collector::counted_sockets`]). For
    /// connections no framer can read (TLS, unknown bytes), whose records would only
    /// say how many bytes moved.
    pub fn count_only(&mut self, pid: u32, fd: i32) {
        self.set_capture(pid, fd, SOCK_CAPTURE_NONE);
    }

    /// Have the kernel count the request/answer exchanges of HTTP/1 socket `fd` of
    /// `pid` (`inbound`: the process reads the requests) and send no record per
    /// transfer once counting begins ([`Collector::counted_exchanges`]).
    pub fn count_exchanges(&mut self, pid: u32, fd: i32, inbound: bool) {
        let key = SockKey {
            tgid: pid,
            fd: fd as u32,
        };
        // An entry left by an earlier socket with this descriptor would count on.
        if let Some(Ok(mut x)) = self
            .ebpf
            .map_mut("SOCK_EXCHANGES")
            .map(HashMap::<_, SockKey, SockExchanges>::try_from)
        {
            let _ = x.remove(&key);
        }
        let capture = if inbound {
            SOCK_CAPTURE_EXCHANGES_IN
        } else {
            SOCK_CAPTURE_EXCHANGES_OUT
        };
        self.set_capture(pid, fd, capture);
    }

    fn set_capture(&mut self, pid: u32, fd: i32, capture: u32) {
        /// `BPF_EXIST`: only update a socket still followed.
        const EXIST: u64 = 2;
        if let Some(Ok(mut fds)) = self
            .ebpf
            .map_mut("SOCK_FDS")
            .map(HashMap::<_, SockKey, u32>::try_from)
        {
            let key = SockKey {
                tgid: pid,
                fd: fd as u32,
            };
            let _ = fds.insert(key, capture, EXIST);
        }
    }

    /// The totals of every count-only socket still open, by (pid, fd).
    pub fn counted_sockets(&self) -> Vec<(u32, i32, CountedBytes)> {
        let Some(map) = self.ebpf.map("SOCK_COUNTED") else {
            return Vec::new();
        };
        let Ok(counted) = HashMap::<_, SockKey, SockCounted>::try_from(map) else {
            return Vec::new();
        };
        counted
            .iter()
            .filter_map(Result::ok)
            .map(|(key, c)| (key.tgid, key.fd as i32, c.into()))
            .collect()
    }

    /// The kernel's count of every HTTP/1 socket whose exchanges it counts, by (pid,
    /// fd); sockets where counting has not begun yet are left out.
    pub fn counted_exchanges(&self) -> Vec<(u32, i32, CountedExchanges)> {
        let Some(map) = self.ebpf.map("SOCK_EXCHANGES") else {
            return Vec::new();
        };
        let Ok(x) = HashMap::<_, SockKey, SockExchanges>::try_from(map) else {
            return Vec::new();
        };
        x.iter()
            .filter_map(Result::ok)
            .filter(|(_, x)| x.counting != 0)
            .map(|(key, x)| (key.tgid, key.fd as i32, x.into()))
            .collect()
    }

    /// Load and attach the connection ledger's probes. A kernel that refuses them (or
    /// lacks a tracepoint) costs the request verdict only: the reason is noted in
    /// [`Collector::unavailable`] and the rest of the capture goes on.
    pub fn attach_socket_probes(&mut self) -> Result<bool, CollectError> {
        if !self.regs.found() {
            self.unavailable.push(format!(
                "requests and connections are not followed on this kernel: their probes read each call's arguments from the task's {}",
                self.regs.describe()
            ));
            self.forget_sockets();
            return Ok(false);
        }
        for &(program, tracepoint) in SOCKET_TRACEPOINTS {
            if self.both_attached(tracepoint) {
                continue;
            }
            match self.attach_program(program, ("syscalls", tracepoint)) {
                Ok(()) => {}
                Err(
                    e @ (CollectError::Verifier { .. } | CollectError::MissingTracepoint { .. }),
                ) => {
                    self.unavailable.push(format!(
                        "requests and connections are not followed on this kernel: {}",
                        first_line(&e.to_string())
                    ));
                    self.forget_sockets();
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        self.arm_sockets()?;
        Ok(true)
    }

    /// Tell the transfer probes that every socket program is attached (see
    /// [`Config::sockets_armed`]).
    fn arm_sockets(&mut self) -> Result<(), CollectError> {
        self.update_config(|c| c.sockets_armed = 1)
    }

    /// Empty `SOCK_FDS`: probes that did attach then send nothing.
    fn forget_sockets(&mut self) {
        if let Some(Ok(mut fds)) = self
            .ebpf
            .map_mut("SOCK_FDS")
            .map(HashMap::<_, SockKey, u32>::try_from)
        {
            let keys: Vec<SockKey> = fds.keys().filter_map(Result::ok).collect();
            for key in keys {
                let _ = fds.remove(&key);
            }
        }
    }
}

/// The first line of a (verifier) message.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
