//! The live side of the request ledger: socket records of the targets in, connection
//! metadata out. Names each connection's role from `/proc` (which listener accepted
//! it, which peer it goes to) and hands its bytes to the framers; what leaves is
//! [`ConnEvent`]s, never payload.
use std::collections::HashMap;

use crate::{
    analyze::requests::{
        framing::{CaptureChange, Direction, Framing},
        http1,
    },
    events::{CountedBytes, CountedExchanges, ExchangeTotals, SockOp, SockRecord},
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
    /// The kernel's exchange totals of each counted HTTP/1 connection as last handed
    /// on, and its bytes (read, written).
    exchanges_seen: HashMap<(u32, i32), (ExchangeTotals, (u64, u64))>,
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
        self.exchanges_seen.retain(|(p, _), _| *p != pid);
    }

    /// Connections whose kernel capture should change, since the last call.
    pub fn take_capture_changes(&mut self) -> Vec<(u32, i32, CaptureChange)> {
        self.framing.take_capture_changes()
    }

    /// The kernel's totals of count-only connection `fd` of `pid`: what is new since
    /// the last reading becomes a transfer of that many bytes (no prefix), at the time
    /// of its last transfer.
    pub fn counted(&mut self, pid: u32, fd: i32, totals: CountedBytes) -> Vec<Emitted> {
        let (read, written) = new_bytes(self.counted_seen.entry((pid, fd)).or_default(), &totals);
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

    /// The kernel's count of HTTP/1 connection `fd` of `pid`: what is new since the
    /// last reading becomes bytes, answers and the request now in flight.
    ///
    /// Exchanges alternate, so at most one request is in flight. The first new answer
    /// answers the request in flight at the last reading, if there was one (its route
    /// is known); the others answer requests whose lines were never read, and count as
    /// such. A request in flight now is a request, with its route from its first bytes,
    /// since it began.
    pub fn exchanges(&mut self, pid: u32, fd: i32, now: &CountedExchanges) -> Vec<Emitted> {
        let entry = self.exchanges_seen.entry((pid, fd)).or_default();
        if now.totals.requests < entry.0.requests || now.totals.answers < entry.0.answers {
            // The kernel's entry was evicted and counting began again from zero.
            *entry = Default::default();
        }
        let (seen, bytes_seen) = entry;
        let (read, written) = new_bytes(bytes_seen, &now.bytes);
        // Not below the last reading: a smaller count restarted from zero above.
        let previous = std::mem::replace(seen, now.totals);
        let new_requests = now.totals.requests - previous.requests;
        let mut out = Vec::new();
        if read > 0 || written > 0 {
            out.push((fd, now.bytes.last_ns, ConnEvent::Bytes { read, written }));
        }
        out.extend(answers(fd, &previous, &now.totals));
        if new_requests > 0 && now.pending_since_ns != 0 {
            let route = http1::route_of_prefix(&now.request_prefix)
                .unwrap_or_else(|| "(HTTP/1 request)".to_string());
            out.push((
                fd,
                now.pending_since_ns,
                ConnEvent::Request { stream: 0, route },
            ));
        }
        out
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
            SockOp::Close { counted, exchanges } => {
                let mut out = match counted {
                    Some(totals) => self.counted(r.pid, r.fd, *totals),
                    None => Vec::new(),
                };
                if let Some(totals) = exchanges {
                    let seen = self
                        .exchanges_seen
                        .get(&(r.pid, r.fd))
                        .map(|(t, _)| *t)
                        .unwrap_or_default();
                    out.extend(answers(r.fd, &seen, totals));
                }
                self.counted_seen.remove(&(r.pid, r.fd));
                self.exchanges_seen.remove(&(r.pid, r.fd));
                self.listener_ports.remove(&(r.pid, r.fd));
                self.framing.close(r.pid, r.fd, &mut events);
                out.extend(events.into_iter().map(|e| (r.fd, r.time_ns, e)));
                return out;
            }
        }
        events.into_iter().map(|e| (r.fd, r.time_ns, e)).collect()
    }
}

/// The bytes a kernel total adds since the last reading `seen` (read, written), which
/// it then becomes.
fn new_bytes(seen: &mut (u64, u64), totals: &CountedBytes) -> (u64, u64) {
    let new = (
        totals.read.saturating_sub(seen.0),
        totals.written.saturating_sub(seen.1),
    );
    *seen = (totals.read.max(seen.0), totals.written.max(seen.1));
    new
}

/// The answers counted in the kernel between two readings: the first one answers the
/// request in flight at the first reading (if any), the rest requests never read.
fn answers(fd: i32, before: &ExchangeTotals, now: &ExchangeTotals) -> Vec<Emitted> {
    let new = now.answers.saturating_sub(before.answers);
    let at = now.last_answer_ns;
    let mut out = Vec::new();
    if new > 0 {
        out.push((fd, at, ConnEvent::Answered { stream: 0 }));
    }
    if new > 1 {
        out.push((fd, at, ConnEvent::AnsweredUnseen { count: new - 1 }));
    }
    out
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

    fn counted(
        read: u64,
        requests: u64,
        answers: u64,
        pending_since_ns: u64,
        last_answer_ns: u64,
        prefix: &[u8],
    ) -> CountedExchanges {
        CountedExchanges {
            bytes: CountedBytes {
                read,
                written: 0,
                last_ns: 1,
            },
            totals: ExchangeTotals {
                requests,
                answers,
                last_answer_ns,
            },
            pending_since_ns,
            request_prefix: prefix.to_vec(),
        }
    }

    /// Check how the kernel's exchange counts become events, reading after reading:
    /// new bytes, the answer of the request in flight last time, the answers of
    /// requests never read (counted, without a route), and the request in flight now,
    /// with its route from the kept bytes and since when it waits. A reading with
    /// nothing new adds nothing, and the close hands over the rest.
    #[test]
    fn kernel_exchange_counts_become_events() {
        let mut c = Connections::default();
        let post = b"POST /orders?customer=4711 HTTP/1.1\r\nHost: s";
        // Counting began with a request, still in flight.
        let first = c.exchanges(1, 7, &counted(100, 1, 0, 50, 0, post));
        assert_eq!(
            first,
            vec![
                (
                    7,
                    1,
                    ConnEvent::Bytes {
                        read: 100,
                        written: 0
                    }
                ),
                (
                    7,
                    50,
                    ConnEvent::Request {
                        stream: 0,
                        route: "POST /orders".into()
                    }
                ),
            ]
        );
        assert!(c
            .exchanges(1, 7, &counted(100, 1, 0, 50, 0, post))
            .is_empty());
        // It was answered, then 4 more exchanges, and a fifth request waits.
        let events = c.exchanges(
            1,
            7,
            &counted(600, 6, 5, 90, 80, b"GET /health HTTP/1.1\r\n"),
        );
        assert_eq!(
            events[1..],
            [
                (7, 80, ConnEvent::Answered { stream: 0 }),
                (7, 80, ConnEvent::AnsweredUnseen { count: 4 }),
                (
                    7,
                    90,
                    ConnEvent::Request {
                        stream: 0,
                        route: "GET /health".into()
                    }
                ),
            ]
        );
        // Answered, and closed before the next reading: the close carries the count.
        let close = SockRecord {
            pid: 1,
            tid: 1,
            time_ns: 120,
            fd: 7,
            op: SockOp::Close {
                counted: None,
                exchanges: Some(ExchangeTotals {
                    requests: 6,
                    answers: 6,
                    last_answer_ns: 110,
                }),
            },
        };
        assert_eq!(
            c.ingest(&close),
            vec![(7, 110, ConnEvent::Answered { stream: 0 })]
        );
        // Garbage kept as a request's first bytes names no route.
        let events = c.exchanges(1, 8, &counted(9, 1, 0, 5, 0, b"\x16\x03\x01garbage"));
        assert!(events.contains(&(
            8,
            5,
            ConnEvent::Request {
                stream: 0,
                route: "(HTTP/1 request)".into()
            }
        )));
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
