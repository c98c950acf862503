//! The framing stage: from the socket records of the targets (a prefix of each
//! transfer's bytes) to connection metadata ([`ConnEvent`]), one framer per connection.
//!
//! This is where payload bytes stop: what leaves is a protocol name, a route (`GET
//! /orders`, a gRPC method), an answer, a PostgreSQL keyword or transaction status, and
//! byte counts. The ledger, the verdict and any saved record stream see only that.
use std::collections::HashMap;

use super::{
    classify::{classify, Protocol, Side},
    http1::{Http1Connection, Http1Event},
    http2::{H2Connection, H2Event},
    postgres::{PgConnection, PgEvent, TxStatus},
    FramingLoss, Transfer,
};
use crate::model::{ConnEvent, ConnRole};

/// Transfers looked at before a connection whose bytes fit no protocol is left at the
/// connection level.
const CLASSIFY_TRIES: u32 = 4;

/// Plain exchanges (each request answered before the next, nothing lost) an HTTP/1
/// connection shows in userspace before the kernel is asked to count its exchanges.
pub const EXCHANGES_BEFORE_COUNTING: u32 = 3;

/// Which way bytes moved, as the process sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

enum Framer {
    /// Not classified yet (`tries` transfers seen).
    Unknown {
        tries: u32,
    },
    Http1(Box<Http1Connection>),
    Http2(Box<H2Connection>),
    Postgres(Box<PgConnection>),
    /// TLS, or bytes no framer knows: bytes and activity only.
    Opaque,
}

struct Conn {
    role: ConnRole,
    framer: Framer,
    /// Unframed bytes already reported.
    reported_loss: u64,
    /// HTTP/1: exchanges that ended with the connection at rest.
    exchanges_at_rest: u32,
    /// HTTP/1: a request arrived before the previous one was answered.
    pipelined: bool,
    /// HTTP/1: the kernel was asked to count the exchanges.
    counting_asked: bool,
}

/// What the kernel should copy of a connection's transfers, once its protocol is
/// known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureChange {
    /// HTTP/2: one transfer carries many frames; copy the most.
    More,
    /// Nothing a framer reads (TLS, unknown bytes): no record per transfer, only
    /// byte totals.
    CountOnly,
    /// Plain HTTP/1: the kernel counts the exchanges from the turns of direction
    /// (`inbound`: the process reads the requests), keeping each request's first
    /// bytes for its route; no record per transfer.
    CountExchanges { inbound: bool },
}

/// The framers of every followed connection, by (pid, fd).
#[derive(Default)]
pub struct Framing {
    conns: HashMap<(u32, i32), Conn>,
    /// Connections whose capture should change, since the last
    /// [`Framing::take_capture_changes`].
    capture_changes: Vec<(u32, i32, CaptureChange)>,
}

impl Framing {
    /// A connection of `pid` exists as `role` (accepted, connected or found open).
    pub fn open(
        &mut self,
        pid: u32,
        fd: i32,
        role: ConnRole,
        seen_open: bool,
        out: &mut Vec<ConnEvent>,
    ) {
        self.conns.insert(
            (pid, fd),
            Conn {
                role: role.clone(),
                framer: Framer::Unknown { tries: 0 },
                reported_loss: 0,
                exchanges_at_rest: 0,
                pipelined: false,
                counting_asked: false,
            },
        );
        out.push(ConnEvent::Opened { role, seen_open });
    }

    /// Whether `fd` of `pid` is a followed connection.
    pub fn knows(&self, pid: u32, fd: i32) -> bool {
        self.conns.contains_key(&(pid, fd))
    }

    /// The connection is closed; its descriptor may be reused.
    pub fn close(&mut self, pid: u32, fd: i32, out: &mut Vec<ConnEvent>) {
        if self.conns.remove(&(pid, fd)).is_some() {
            out.push(ConnEvent::Closed);
        }
    }

    /// Forget every connection of a process that is gone.
    pub fn forget_process(&mut self, pid: u32) {
        self.conns.retain(|(p, _), _| *p != pid);
    }

    /// The capture changes decided since the last call, by (pid, fd).
    pub fn take_capture_changes(&mut self) -> Vec<(u32, i32, CaptureChange)> {
        std::mem::take(&mut self.capture_changes)
    }

    /// `len` bytes moved on a followed connection, `prefix` the first of them.
    pub fn transfer(
        &mut self,
        pid: u32,
        fd: i32,
        direction: Direction,
        len: u64,
        prefix: &[u8],
        out: &mut Vec<ConnEvent>,
    ) {
        let Some(conn) = self.conns.get_mut(&(pid, fd)) else {
            return;
        };
        out.push(match direction {
            Direction::Read => ConnEvent::Bytes {
                read: len,
                written: 0,
            },
            Direction::Write => ConnEvent::Bytes {
                read: 0,
                written: len,
            },
        });
        let side = match (&conn.role, direction) {
            (ConnRole::Inbound { .. }, Direction::Read)
            | (ConnRole::Outbound { .. }, Direction::Write) => Side::Client,
            _ => Side::Server,
        };
        let t = Transfer {
            bytes: &prefix[..prefix.len().min(usize::try_from(len).unwrap_or(usize::MAX))],
            len,
        };
        if let Framer::Unknown { tries } = &mut conn.framer {
            if t.bytes.is_empty() {
                return;
            }
            *tries += 1;
            let protocol = classify(side, t.bytes);
            conn.framer = match protocol {
                Protocol::Http1 => Framer::Http1(Box::default()),
                Protocol::Http2 => Framer::Http2(Box::default()),
                Protocol::Postgres => Framer::Postgres(Box::default()),
                Protocol::Tls => Framer::Opaque,
                Protocol::Unknown if *tries >= CLASSIFY_TRIES => Framer::Opaque,
                Protocol::Unknown => return,
            };
            let change = match conn.framer {
                Framer::Http2(_) => Some(CaptureChange::More),
                Framer::Opaque => Some(CaptureChange::CountOnly),
                _ => None,
            };
            if let Some(change) = change {
                self.capture_changes.push((pid, fd, change));
            }
            if protocol != Protocol::Unknown {
                out.push(ConnEvent::Protocol {
                    name: protocol_name(protocol).into(),
                });
            }
        }
        let loss = match &mut conn.framer {
            Framer::Http1(h) => {
                let mut events = Vec::new();
                match side {
                    Side::Client => h.feed_request(t, &mut events),
                    Side::Server => h.feed_response(t, &mut events),
                }
                let answered = events
                    .iter()
                    .any(|e| matches!(e, Http1Event::Response { .. }));
                out.extend(events.into_iter().map(|e| match e {
                    Http1Event::Request { method, path } => ConnEvent::Request {
                        stream: 0,
                        route: format!("{method} {path}"),
                    },
                    Http1Event::Response { .. } => ConnEvent::Answered { stream: 0 },
                }));
                conn.pipelined |= h.outstanding() > 1;
                if answered && h.at_rest() {
                    conn.exchanges_at_rest += 1;
                }
                if !conn.counting_asked
                    && !conn.pipelined
                    && conn.exchanges_at_rest >= EXCHANGES_BEFORE_COUNTING
                {
                    conn.counting_asked = true;
                    let inbound = matches!(conn.role, ConnRole::Inbound { .. });
                    self.capture_changes
                        .push((pid, fd, CaptureChange::CountExchanges { inbound }));
                }
                h.loss
            }
            Framer::Http2(h) => {
                let mut events = Vec::new();
                match side {
                    Side::Client => h.feed_client(t, &mut events),
                    Side::Server => h.feed_server(t, &mut events),
                }
                out.extend(events.into_iter().filter_map(|e| match e {
                    H2Event::Request { stream, path } => Some(ConnEvent::Request {
                        stream,
                        route: path.unwrap_or_else(|| "(stream)".into()),
                    }),
                    H2Event::Answered { stream, .. } | H2Event::Reset { stream, .. } => {
                        Some(ConnEvent::Answered { stream })
                    }
                    H2Event::Preface | H2Event::GoAway { .. } => None,
                }));
                h.loss
            }
            Framer::Postgres(p) => {
                let mut events = Vec::new();
                match side {
                    Side::Client => p.feed_frontend(t, &mut events),
                    Side::Server => p.feed_backend(t, &mut events),
                }
                out.extend(events.into_iter().filter_map(|e| match e {
                    PgEvent::Frontend {
                        keyword: Some(keyword),
                        ..
                    } => Some(ConnEvent::Query {
                        keyword: keyword.to_string(),
                    }),
                    PgEvent::ReadyForQuery { status } => Some(ConnEvent::Ready {
                        status: match status {
                            TxStatus::Idle => 'I',
                            TxStatus::InTransaction => 'T',
                            TxStatus::Failed => 'E',
                        },
                    }),
                    _ => None,
                }));
                p.loss
            }
            Framer::Unknown { .. } | Framer::Opaque => FramingLoss::default(),
        };
        if loss.unframed_bytes > conn.reported_loss {
            out.push(ConnEvent::Unframed {
                bytes: loss.unframed_bytes - conn.reported_loss,
            });
            conn.reported_loss = loss.unframed_bytes;
        }
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http1 => "http1",
        Protocol::Http2 => "http2",
        Protocol::Postgres => "postgres",
        Protocol::Tls => "tls",
        Protocol::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Framing, fd: i32, d: Direction, bytes: &[u8]) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        f.transfer(1, fd, d, bytes.len() as u64, bytes, &mut out);
        out
    }

    /// Check that an inbound HTTP/1 connection yields a route and an answer, and the
    /// route carries neither the query string nor any header value.
    #[test]
    fn http1_inbound_routes_and_answers() {
        let mut f = Framing::default();
        let mut out = Vec::new();
        f.open(1, 7, ConnRole::Inbound { port: 3000 }, false, &mut out);
        let req = b"POST /orders?user=secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k3n\r\nContent-Length: 2\r\n\r\n{}";
        out.extend(feed(&mut f, 7, Direction::Read, req));
        out.extend(feed(
            &mut f,
            7,
            Direction::Write,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ));
        assert!(out.contains(&ConnEvent::Request {
            stream: 0,
            route: "POST /orders".into()
        }));
        assert!(out.contains(&ConnEvent::Answered { stream: 0 }));
        assert!(out.contains(&ConnEvent::Protocol {
            name: "http1".into()
        }));
        assert!(f.take_capture_changes().is_empty());
        let text = format!("{out:?}");
        assert!(
            !text.contains("secret") && !text.contains("t0k3n"),
            "{text}"
        );
    }

    /// Check that an outbound PostgreSQL connection yields the first keyword of a query
    /// and the transaction status, and never the SQL text.
    #[test]
    fn postgres_outbound_keyword_and_status() {
        let mut f = Framing::default();
        let mut out = Vec::new();
        f.open(
            1,
            9,
            ConnRole::Outbound {
                peer: "127.0.0.1:5432".into(),
            },
            false,
            &mut out,
        );
        out.extend(feed(&mut f, 9, Direction::Write, b"Q\0\0\0\x0aBEGIN\0"));
        out.extend(feed(
            &mut f,
            9,
            Direction::Read,
            b"C\0\0\0\x0aBEGIN\0Z\0\0\0\x05T",
        ));
        let q = b"Q\0\0\0\x21SELECT * FROM users WHERE x=1\0";
        out.extend(feed(&mut f, 9, Direction::Write, q));
        assert!(out.contains(&ConnEvent::Query {
            keyword: "BEGIN".into()
        }));
        assert!(out.contains(&ConnEvent::Ready { status: 'T' }));
        let text = format!("{out:?}");
        assert!(!text.contains("users"), "{text}");
    }

    /// Check that bytes on unknown descriptors are ignored, an unclassifiable
    /// connection is left at bytes and asked to be count-only once, when it is given up
    /// on, and a closed descriptor is forgotten.
    #[test]
    fn unknown_fds_opaque_bytes_and_close() {
        let mut f = Framing::default();
        assert!(feed(&mut f, 3, Direction::Read, b"GET / HTTP/1.1\r\n").is_empty());
        let mut out = Vec::new();
        f.open(1, 3, ConnRole::Inbound { port: 1 }, true, &mut out);
        for i in 0..CLASSIFY_TRIES + 2 {
            let changes = f.take_capture_changes();
            if i == CLASSIFY_TRIES {
                assert_eq!(changes, [(1, 3, CaptureChange::CountOnly)]);
            } else {
                assert!(changes.is_empty(), "{i}: {changes:?}");
            }
            let events = feed(&mut f, 3, Direction::Read, b"\x01\x02garbage");
            assert_eq!(
                events,
                vec![ConnEvent::Bytes {
                    read: 9,
                    written: 0
                }]
            );
        }
        let mut out = Vec::new();
        f.close(1, 3, &mut out);
        assert_eq!(out, vec![ConnEvent::Closed]);
        assert!(!f.knows(1, 3));
    }

    /// Check that a plain HTTP/1 connection asks the kernel to count its exchanges
    /// after [`EXCHANGES_BEFORE_COUNTING`] of them, once, with the side that reads the
    /// requests; a pipelining client's connection never does.
    #[test]
    fn plain_http1_exchanges_go_to_the_kernel() {
        let mut f = Framing::default();
        let mut out = Vec::new();
        f.open(1, 7, ConnRole::Inbound { port: 3000 }, false, &mut out);
        f.open(
            1,
            8,
            ConnRole::Outbound {
                peer: "10.0.0.2:80".into(),
            },
            false,
            &mut out,
        );
        f.open(1, 9, ConnRole::Inbound { port: 3000 }, false, &mut out);
        let get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for i in 1..=EXCHANGES_BEFORE_COUNTING + 2 {
            feed(&mut f, 7, Direction::Read, get);
            feed(&mut f, 7, Direction::Write, ok);
            feed(&mut f, 8, Direction::Write, get);
            feed(&mut f, 8, Direction::Read, ok);
            // Two requests before the first answer: pipelined.
            feed(&mut f, 9, Direction::Read, get);
            feed(&mut f, 9, Direction::Read, get);
            feed(&mut f, 9, Direction::Write, ok);
            feed(&mut f, 9, Direction::Write, ok);
            let changes = f.take_capture_changes();
            if i == EXCHANGES_BEFORE_COUNTING {
                assert_eq!(
                    changes,
                    [
                        (1, 7, CaptureChange::CountExchanges { inbound: true }),
                        (1, 8, CaptureChange::CountExchanges { inbound: false }),
                    ]
                );
            } else {
                assert!(changes.is_empty(), "{i}: {changes:?}");
            }
        }
    }

    /// Check that an HTTP/2 connection asks for more bytes per transfer and a TLS one
    /// for none, each as soon as its first bytes are classified.
    #[test]
    fn capture_changes_follow_the_protocol() {
        let mut f = Framing::default();
        let mut out = Vec::new();
        f.open(1, 5, ConnRole::Inbound { port: 50051 }, false, &mut out);
        f.open(1, 6, ConnRole::Inbound { port: 443 }, false, &mut out);
        feed(
            &mut f,
            5,
            Direction::Read,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        );
        feed(
            &mut f,
            6,
            Direction::Read,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
        );
        assert_eq!(
            f.take_capture_changes(),
            [
                (1, 5, CaptureChange::More),
                (1, 6, CaptureChange::CountOnly)
            ]
        );
        assert!(f.take_capture_changes().is_empty());
    }
}
