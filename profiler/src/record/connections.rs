//! The live side of the request ledger: socket records of the targets in, connection
//! metadata out. Names each connection's role from `/proc` (which listener accepted
//! it, which peer it goes to) and hands its bytes to the framers; what leaves is
//! [`ConnEvent`]s, never payload.
use std::collections::HashMap;

use crate::{
    analyze::requests::framing::{CaptureChange, Direction, Framing},
    events::{CountedBytes, SockOp, SockRecord},
    model::{ConnEvent, ConnRole},
    sockets::{self, SocketInfo},
};

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;

/// The framers and what `/proc` told about the targets' listeners.
#[derive(Default)]
pub struct Connections {
    framing: Framing,
    /// The local port of each listener descriptor seen accepting (None: not TCP).
    listener_ports: HashMap<(u32, i32), Option<u16>>,
    /// The kernel's totals of each count-only connection as last handed to the framers
    /// (read, written), so that each reading adds only what is new.
    counted_seen: HashMap<(u32, i32), (u64, u64)>,
}

/// One event of connection `fd` at `time_ns`.
pub type Emitted = (i32, u64, ConnEvent);

impl Connections {
    /// The connections `pid` holds open now (its established TCP sockets), as
    /// `Opened` events: inbound when the local port is one of its listeners'.
    pub fn seed(&mut self, pid: u32, now_ns: u64) -> Vec<Emitted> {
        let fds = sockets::socket_fds(pid);
        if fds.is_empty() {
            return Vec::new();
        }
        let table = sockets::read_sockets(pid);
        let own: Vec<(i32, &SocketInfo)> = fds
            .iter()
            .filter_map(|(fd, inode)| Some((*fd, table.get(inode)?)))
            .collect();
        let mut out = Vec::new();
        for (fd, role) in roles(&own) {
            let mut events = Vec::new();
            self.framing.open(pid, fd, role, true, &mut events);
            out.extend(events.into_iter().map(|e| (fd, now_ns, e)));
        }
        out
    }

    /// Forget a process that is gone.
    pub fn forget_process(&mut self, pid: u32) {
        self.framing.forget_process(pid);
        self.listener_ports.retain(|(p, _), _| *p != pid);
        self.counted_seen.retain(|(p, _), _| *p != pid);
    }

    /// Connections whose kernel capture should change, since the last call.
    pub fn take_capture_changes(&mut self) -> Vec<(u32, i32, CaptureChange)> {
        self.framing.take_capture_changes()
    }

    /// The kernel's totals of count-only connection `fd` of `pid`: what is new since
    /// the last reading becomes a transfer of that many bytes (no prefix), at the time
    /// of its last transfer.
    pub fn counted(&mut self, pid: u32, fd: i32, totals: CountedBytes) -> Vec<Emitted> {
        let seen = self.counted_seen.entry((pid, fd)).or_default();
        let read = totals.read.saturating_sub(seen.0);
        let written = totals.written.saturating_sub(seen.1);
        *seen = (totals.read.max(seen.0), totals.written.max(seen.1));
        let mut events = Vec::new();
        for (direction, len) in [(Direction::Read, read), (Direction::Write, written)] {
            if len > 0 {
                self.framing
                    .transfer(pid, fd, direction, len, &[], &mut events);
            }
        }
        events
            .into_iter()
            .map(|e| (fd, totals.last_ns, e))
            .collect()
    }

    /// Turn one socket record into connection events.
    pub fn ingest(&mut self, r: &SockRecord) -> Vec<Emitted> {
        let mut events = Vec::new();
        match &r.op {
            SockOp::Accept { listener_fd } => {
                let port = *self
                    .listener_ports
                    .entry((r.pid, *listener_fd))
                    .or_insert_with(|| listener_port(r.pid, *listener_fd));
                if let Some(port) = port {
                    self.framing
                        .open(r.pid, r.fd, ConnRole::Inbound { port }, false, &mut events);
                }
            }
            SockOp::Connect { peer } => {
                let peer = peer.map_or_else(|| "unix socket".to_string(), |p| p.to_string());
                self.framing
                    .open(r.pid, r.fd, ConnRole::Outbound { peer }, false, &mut events);
            }
            SockOp::Read { len, prefix } => {
                self.framing
                    .transfer(r.pid, r.fd, Direction::Read, *len, prefix, &mut events);
            }
            SockOp::Write { len, prefix } => {
                self.framing
                    .transfer(r.pid, r.fd, Direction::Write, *len, prefix, &mut events);
            }
            SockOp::Close { counted } => {
                let mut out = match counted {
                    Some(totals) => self.counted(r.pid, r.fd, *totals),
                    None => Vec::new(),
                };
                self.counted_seen.remove(&(r.pid, r.fd));
                self.listener_ports.remove(&(r.pid, r.fd));
                self.framing.close(r.pid, r.fd, &mut events);
                out.extend(events.into_iter().map(|e| (r.fd, r.time_ns, e)));
                return out;
            }
        }
        events.into_iter().map(|e| (r.fd, r.time_ns, e)).collect()
    }
}

/// The local port of listener `fd` of `pid`, from /proc.
fn listener_port(pid: u32, fd: i32) -> Option<u16> {
    let inode = sockets::socket_inode(&sockets::fd_target(pid, fd)?)?;
    let info = sockets::read_sockets(pid).remove(&inode)?;
    (info.state == TCP_LISTEN).then_some(info.local?.port())
}

/// The role of each established TCP connection among `own` (fd, socket).
pub fn roles(own: &[(i32, &SocketInfo)]) -> Vec<(i32, ConnRole)> {
    let listeners: Vec<std::net::SocketAddr> = own
        .iter()
        .filter(|(_, s)| s.proto == "tcp" && s.state == TCP_LISTEN)
        .filter_map(|(_, s)| s.local)
        .collect();
    own.iter()
        .filter(|(_, s)| s.proto == "tcp" && s.state == TCP_ESTABLISHED)
        .filter_map(|(fd, s)| {
            let (local, remote) = (s.local?, s.remote?);
            let inbound = listeners.iter().any(|l| {
                l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip())
            });
            Some((
                *fd,
                if inbound {
                    ConnRole::Inbound { port: local.port() }
                } else {
                    ConnRole::Outbound {
                        peer: remote.to_string(),
                    }
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(local: &str, remote: &str, state: u8) -> SocketInfo {
        SocketInfo {
            inode: 1,
            proto: "tcp",
            local: local.parse().ok(),
            remote: remote.parse().ok(),
            state,
            rx_queue: 0,
            path: None,
        }
    }

    /// Check that connections on a listener's port are inbound, others outbound to
    /// their peer, and listeners themselves are no connection.
    #[test]
    fn roles_from_the_socket_table() {
        let listen = sock("0.0.0.0:3000", "0.0.0.0:0", TCP_LISTEN);
        let inbound = sock("127.0.0.1:3000", "127.0.0.1:41000", TCP_ESTABLISHED);
        let pg = sock("127.0.0.1:52000", "127.0.0.1:5432", TCP_ESTABLISHED);
        let own = [(3, &listen), (7, &inbound), (9, &pg)];
        assert_eq!(
            roles(&own),
            vec![
                (7, ConnRole::Inbound { port: 3000 }),
                (
                    9,
                    ConnRole::Outbound {
                        peer: "127.0.0.1:5432".into()
                    }
                ),
            ]
        );
    }
}
