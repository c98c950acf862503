//! Naming what a wait is on: a futex, a socket peer, an event loop, a pipe.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::WaitOn;
use crate::{
    events::WaitSyscall,
    sockets::{self, SocketInfo},
};

/// Names the descriptors of one process. The socket tables are re-read at most every
/// 500 ms, when a socket inode is not known yet.
pub struct FdClassifier {
    pid: u32,
    sockets: HashMap<u64, SocketInfo>,
    read_at: Option<Instant>,
}

impl FdClassifier {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            sockets: HashMap::new(),
            read_at: None,
        }
    }

    /// What a wait in `syscall` on `fd` (or futex `futex_addr`) is waiting on.
    pub fn classify(&mut self, syscall: WaitSyscall, fd: i32, futex_addr: u64) -> WaitOn {
        let name = syscall.name().to_string();
        if syscall.is_futex() {
            return WaitOn::Futex { addr: futex_addr };
        }
        if syscall.is_sleep() {
            return WaitOn::Sleep { syscall: name };
        }
        match syscall {
            WaitSyscall::EpollWait => {
                let fds = sockets::epoll_fds(self.pid, fd);
                let socks: Vec<SocketInfo> = fds.iter().filter_map(|&f| self.socket(f)).collect();
                match (fds.len(), socks.as_slice()) {
                    // An epoll set of one socket waits on that socket's peer.
                    (1, [only]) => WaitOn::Socket {
                        syscall: name,
                        peer: only.label(),
                    },
                    _ => WaitOn::Poll {
                        syscall: name,
                        sockets: socks.len(),
                        fds: fds.len(),
                    },
                }
            }
            // poll/select on a socket (as libpq waits for a query result) waits on its peer.
            WaitSyscall::Poll | WaitSyscall::Select => {
                match (fd >= 0).then(|| self.socket(fd)).flatten() {
                    Some(s) => WaitOn::Socket {
                        syscall: name,
                        peer: s.label(),
                    },
                    None => WaitOn::Poll {
                        syscall: name,
                        sockets: 0,
                        fds: usize::from(fd >= 0),
                    },
                }
            }
            _ if fd < 0 => WaitOn::Other {
                syscall: name,
                what: "unknown fd".into(),
            },
            _ => match self.socket(fd) {
                Some(s) => WaitOn::Socket {
                    syscall: name,
                    peer: s.label(),
                },
                None => WaitOn::Other {
                    syscall: name,
                    what: self.describe_fd(fd),
                },
            },
        }
    }

    fn describe_fd(&self, fd: i32) -> String {
        match sockets::fd_target(self.pid, fd) {
            Some(t) if t.starts_with("pipe:") => "pipe".into(),
            Some(t) if t.starts_with("socket:") => "socket".into(),
            Some(t) if t.starts_with("anon_inode:") => t.trim_start_matches("anon_inode:").into(),
            Some(t) => t,
            None => format!("fd {fd}"),
        }
    }

    fn socket(&mut self, fd: i32) -> Option<SocketInfo> {
        let inode = sockets::socket_inode(&sockets::fd_target(self.pid, fd)?)?;
        if !self.sockets.contains_key(&inode)
            && self
                .read_at
                .is_none_or(|t| t.elapsed() > Duration::from_millis(500))
        {
            self.sockets = sockets::read_sockets(self.pid);
            self.read_at = Some(Instant::now());
        }
        Some(self.sockets.get(&inode).cloned().unwrap_or(SocketInfo {
            inode,
            proto: "socket",
            local: None,
            remote: None,
            state: 0,
            rx_queue: 0,
            path: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Check that a connected TCP socket of this process is named by its peer, and a
    /// futex wait by its address.
    #[test]
    fn names_socket_peer_and_futex() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let mut c = FdClassifier::new(std::process::id());
        assert_eq!(
            c.classify(WaitSyscall::Recvfrom, fd, 0),
            WaitOn::Socket {
                syscall: "recvfrom".into(),
                peer: addr.to_string()
            }
        );
        assert_eq!(
            c.classify(WaitSyscall::Futex, -1, 0x10),
            WaitOn::Futex { addr: 0x10 }
        );
        assert_eq!(
            c.classify(WaitSyscall::Poll, fd, 0).kind_label(),
            format!("socket {addr}")
        );
        let lfd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        assert_eq!(
            c.classify(WaitSyscall::Accept, lfd, 0).kind_label(),
            format!("socket tcp listening {addr}")
        );
    }
}
