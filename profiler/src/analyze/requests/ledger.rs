//! The request ledger of one process: its connections, the requests in flight on each
//! listener and what was answered, and the state of its outbound connections, built
//! from [`ConnEvent`] metadata. Pure, so it is tested on recorded event sequences and
//! rebuilt the same from a saved record stream.
use std::collections::{BTreeMap, VecDeque};

use crate::model::{ConnEvent, ConnRole, StackRef};

/// Requests remembered per connection; a client that pipelines more is not followed
/// further (its oldest requests are forgotten).
const MAX_PENDING: usize = 4096;

/// A request read and not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub route: String,
    pub start_ns: u64,
}

/// One followed connection.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    pub role: Option<ConnRole>,
    pub protocol: Option<String>,
    /// It was open before the window (found in /proc at attach).
    pub seen_open: bool,
    /// The last time it moved a byte, if the probes saw one.
    pub last_activity_ns: Option<u64>,
    /// HTTP/1 requests in order of arrival (answered in that order).
    pub http1: VecDeque<Pending>,
    /// HTTP/2 streams opened by the client and not ended by the server.
    pub streams: BTreeMap<u32, Pending>,
    /// PostgreSQL: the last ReadyForQuery's status and since when it holds.
    pub tx: Option<(char, u64)>,
    /// PostgreSQL: the stack that wrote the `BEGIN` of the transaction open now, when
    /// the kernel sent it; cleared when the connection is idle again.
    pub begun_under: Option<StackRef>,
}

impl Conn {
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.http1.iter().chain(self.streams.values())
    }
}

/// Answers to one route of one listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// Answered in the current window.
    pub count: u64,
    /// The last answer's time (any window).
    pub last_ns: Option<u64>,
}

/// The ledger of one process.
#[derive(Clone, Debug, Default)]
pub struct RequestLedger {
    pub conns: BTreeMap<i32, Conn>,
    /// Answers by (listener port, route); the route of a request read before the
    /// window is unknown (`None`).
    pub answers: BTreeMap<(u16, Option<String>), Answers>,
    /// Requests in flight per listener at the end of each second of the window.
    pub series: BTreeMap<u16, Vec<usize>>,
    /// Bytes the framers could not frame in the window.
    pub unframed_bytes: u64,
    /// When the current window started.
    pub window_start_ns: u64,
}

impl RequestLedger {
    /// A new window starts: answer counts and series restart; connections and their
    /// requests in flight stay.
    pub fn new_window(&mut self, start_ns: u64) {
        self.window_start_ns = start_ns;
        for a in self.answers.values_mut() {
            a.count = 0;
        }
        self.series.clear();
        self.unframed_bytes = 0;
    }

    /// Apply one event of connection `fd` at `time_ns`.
    pub fn apply(&mut self, fd: i32, time_ns: u64, event: &ConnEvent) {
        if let ConnEvent::Opened { role, seen_open } = event {
            self.conns.insert(
                fd,
                Conn {
                    role: Some(role.clone()),
                    seen_open: *seen_open,
                    ..Conn::default()
                },
            );
            return;
        }
        let conn = self.conns.entry(fd).or_default();
        let port = match conn.role {
            Some(ConnRole::Inbound { port }) => Some(port),
            _ => None,
        };
        match event {
            ConnEvent::Opened { .. } => unreachable!("handled above"),
            ConnEvent::Protocol { name } => conn.protocol = Some(name.clone()),
            ConnEvent::Request { stream, route } => {
                let p = Pending {
                    route: route.clone(),
                    start_ns: time_ns,
                };
                if *stream == 0 {
                    if conn.http1.len() >= MAX_PENDING {
                        conn.http1.pop_front();
                    }
                    conn.http1.push_back(p);
                } else if conn.streams.len() < MAX_PENDING {
                    conn.streams.insert(*stream, p);
                }
            }
            ConnEvent::Answered { stream } => {
                let done = if *stream == 0 {
                    conn.http1.pop_front()
                } else {
                    conn.streams.remove(stream)
                };
                if let Some(port) = port {
                    let a = self
                        .answers
                        .entry((port, done.map(|p| p.route)))
                        .or_default();
                    a.count += 1;
                    a.last_ns = Some(time_ns);
                }
            }
            ConnEvent::AnsweredUnseen { count } => {
                if let Some(port) = port {
                    let a = self.answers.entry((port, None)).or_default();
                    a.count += count;
                    a.last_ns = Some(time_ns);
                }
            }
            ConnEvent::Query { .. } => {}
            ConnEvent::TransactionBegun { stack } => {
                if conn.protocol.as_deref() == Some("postgres") {
                    conn.begun_under = Some(*stack);
                }
            }
            ConnEvent::Ready { status } => {
                if *status == 'I' {
                    conn.begun_under = None;
                }
                let since = match conn.tx {
                    Some((s, since)) if s == *status => since,
                    _ => time_ns,
                };
                conn.tx = Some((*status, since));
            }
            ConnEvent::Bytes { .. } => conn.last_activity_ns = Some(time_ns),
            ConnEvent::Unframed { bytes } => self.unframed_bytes += bytes,
            ConnEvent::Closed => {
                self.conns.remove(&fd);
            }
        }
        if let Some(port) = port {
            if matches!(
                event,
                ConnEvent::Request { .. }
                    | ConnEvent::Answered { .. }
                    | ConnEvent::AnsweredUnseen { .. }
                    | ConnEvent::Closed
            ) {
                self.sample(port, time_ns);
            }
        }
    }

    /// Requests in flight on listener `port`.
    pub fn in_flight(&self, port: u16) -> impl Iterator<Item = &Pending> {
        self.conns
            .values()
            .filter(move |c| c.role == Some(ConnRole::Inbound { port }))
            .flat_map(Conn::pending)
    }

    /// The listeners with connections or answers.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .conns
            .values()
            .filter_map(|c| match c.role {
                Some(ConnRole::Inbound { port }) => Some(port),
                _ => None,
            })
            .chain(self.answers.keys().map(|(p, _)| *p))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Record the in-flight count of `port` for each second of the window up to `time_ns`.
    fn sample(&mut self, port: u16, time_ns: u64) {
        let second = (time_ns.saturating_sub(self.window_start_ns) / 1_000_000_000) as usize;
        if second > 3600 {
            return;
        }
        let now = self.in_flight(port).count();
        let series = self.series.entry(port).or_default();
        let last = series.last().copied().unwrap_or(0);
        while series.len() < second {
            series.push(last);
        }
        if series.len() == second {
            series.push(now);
        } else if let Some(v) = series.last_mut() {
            *v = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Check that HTTP/1 answers match requests in order, answers of requests read
    /// before the window have no route, and a close drops the connection's requests.
    #[test]
    fn http1_in_order_and_close() {
        let mut l = RequestLedger::default();
        l.apply(
            5,
            0,
            &ConnEvent::Opened {
                role: ConnRole::Inbound { port: 80 },
                seen_open: true,
            },
        );
        l.apply(5, S, &ConnEvent::Answered { stream: 0 });
        for (t, route) in [(2, "GET /a"), (3, "GET /b")] {
            l.apply(
                5,
                t * S,
                &ConnEvent::Request {
                    stream: 0,
                    route: route.into(),
                },
            );
        }
        l.apply(5, 4 * S, &ConnEvent::Answered { stream: 0 });
        assert_eq!(l.answers[&(80, None)].count, 1);
        assert_eq!(l.answers[&(80, Some("GET /a".into()))].last_ns, Some(4 * S));
        let left: Vec<_> = l.in_flight(80).map(|p| p.route.clone()).collect();
        assert_eq!(left, vec!["GET /b".to_string()]);
        assert_eq!(l.series[&80], vec![0, 0, 1, 2, 1]);
        l.apply(5, 5 * S, &ConnEvent::Closed);
        assert_eq!(l.in_flight(80).count(), 0);
    }

    /// Check that answers the kernel counted without their request lines add to the
    /// listener's answers without a route, and leave the requests in flight alone.
    #[test]
    fn answers_counted_in_the_kernel() {
        let mut l = RequestLedger::default();
        l.apply(
            5,
            0,
            &ConnEvent::Opened {
                role: ConnRole::Inbound { port: 80 },
                seen_open: false,
            },
        );
        l.apply(
            5,
            S,
            &ConnEvent::Request {
                stream: 0,
                route: "POST /orders".into(),
            },
        );
        l.apply(5, 2 * S, &ConnEvent::AnsweredUnseen { count: 41 });
        assert_eq!(l.answers[&(80, None)].count, 41);
        assert_eq!(l.answers[&(80, None)].last_ns, Some(2 * S));
        assert_eq!(l.in_flight(80).count(), 1);
        // Outbound connections keep no answer counts.
        l.apply(
            6,
            0,
            &ConnEvent::Opened {
                role: ConnRole::Outbound {
                    peer: "10.0.0.2:80".into(),
                },
                seen_open: false,
            },
        );
        l.apply(6, 3 * S, &ConnEvent::AnsweredUnseen { count: 5 });
        assert_eq!(l.answers.len(), 1);
    }

    /// Check that HTTP/2 streams are answered by id, and a PostgreSQL connection keeps
    /// when its transaction status began.
    #[test]
    fn streams_and_transactions() {
        let mut l = RequestLedger::default();
        l.apply(
            4,
            0,
            &ConnEvent::Opened {
                role: ConnRole::Inbound { port: 50051 },
                seen_open: false,
            },
        );
        for id in [1, 3, 5] {
            l.apply(
                4,
                S,
                &ConnEvent::Request {
                    stream: id,
                    route: "/shop.Orders/Create".into(),
                },
            );
        }
        l.apply(4, 2 * S, &ConnEvent::Answered { stream: 3 });
        assert_eq!(l.in_flight(50051).count(), 2);
        l.apply(
            8,
            0,
            &ConnEvent::Opened {
                role: ConnRole::Outbound {
                    peer: "127.0.0.1:5432".into(),
                },
                seen_open: false,
            },
        );
        l.apply(8, S, &ConnEvent::Ready { status: 'T' });
        l.apply(8, 2 * S, &ConnEvent::Ready { status: 'T' });
        assert_eq!(l.conns[&8].tx, Some(('T', S)));
        l.apply(8, 3 * S, &ConnEvent::Ready { status: 'I' });
        assert_eq!(l.conns[&8].tx, Some(('I', 3 * S)));
        // The stack that wrote BEGIN stays with the transaction, only on a connection
        // framed as PostgreSQL, and goes when the connection is idle again.
        let begun = ConnEvent::TransactionBegun {
            stack: StackRef {
                id: 7,
                truncated: false,
            },
        };
        l.apply(8, 4 * S, &begun);
        assert_eq!(l.conns[&8].begun_under, None, "not framed as PostgreSQL");
        l.apply(
            8,
            4 * S,
            &ConnEvent::Protocol {
                name: "postgres".into(),
            },
        );
        l.apply(8, 4 * S, &begun);
        l.apply(8, 4 * S, &ConnEvent::Ready { status: 'T' });
        assert_eq!(l.conns[&8].begun_under.map(|s| s.id), Some(7));
        l.apply(8, 5 * S, &ConnEvent::Ready { status: 'I' });
        assert_eq!(l.conns[&8].begun_under, None);
    }
}
