//! The framers on real traffic: loopback conversations captured by
//! `tests/data/requests/capture/proxy.py` (one record per `recv`, as the probes will see
//! transfers): psql and pgbench against PostgreSQL 15, Node's HTTP/1.1 keep-alive agent,
//! and Node's HTTP/2 (nghttp2) making gRPC-style calls.
use super::{
    http1::{Http1Connection, Http1Event},
    http2::{H2Connection, H2Event},
    postgres::{FrontendMessage as Fe, PgConnection, PgEvent, TxStatus},
    FramingLoss, Transfer,
};

/// Records of a capture: (from the client?, bytes).
fn records(capture: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= capture.len() {
        let len = u32::from_be_bytes(capture[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push((capture[at] == b'C', &capture[at + 5..at + 5 + len]));
        at += 5 + len;
    }
    assert_eq!(at, capture.len(), "a capture ends with a whole record");
    out
}

/// Both directions of one connection's framer, for the tests.
trait Conn: Default {
    type Event: PartialEq + std::fmt::Debug;
    fn feed(&mut self, client: bool, t: Transfer<'_>, out: &mut Vec<Self::Event>);
    fn lost(&self) -> FramingLoss;
}

impl Conn for PgConnection {
    type Event = PgEvent;
    fn feed(&mut self, client: bool, t: Transfer<'_>, out: &mut Vec<PgEvent>) {
        if client {
            self.feed_frontend(t, out);
        } else {
            self.feed_backend(t, out);
        }
    }
    fn lost(&self) -> FramingLoss {
        self.loss
    }
}

impl Conn for Http1Connection {
    type Event = Http1Event;
    fn feed(&mut self, client: bool, t: Transfer<'_>, out: &mut Vec<Http1Event>) {
        if client {
            self.feed_request(t, out);
        } else {
            self.feed_response(t, out);
        }
    }
    fn lost(&self) -> FramingLoss {
        self.loss
    }
}

impl Conn for H2Connection {
    type Event = H2Event;
    fn feed(&mut self, client: bool, t: Transfer<'_>, out: &mut Vec<H2Event>) {
        if client {
            self.feed_client(t, out);
        } else {
            self.feed_server(t, out);
        }
    }
    fn lost(&self) -> FramingLoss {
        self.loss
    }
}

/// Frame a capture record by record, optionally with every record split at `split`
/// (when shorter), checking nothing was lost.
fn run<C: Conn>(capture: &[u8], split: Option<usize>) -> Vec<C::Event> {
    let mut c = C::default();
    let mut out = Vec::new();
    for (client, bytes) in records(capture) {
        match split.filter(|&s| s < bytes.len()) {
            Some(s) => {
                c.feed(client, Transfer::whole(&bytes[..s]), &mut out);
                c.feed(client, Transfer::whole(&bytes[s..]), &mut out);
            }
            None => c.feed(client, Transfer::whole(bytes), &mut out),
        }
    }
    assert_eq!(c.lost(), FramingLoss::default(), "split {split:?}");
    out
}

/// The events of a capture, checked to be the same under splits and free of the
/// fixtures' secrets.
fn frame<C: Conn>(capture: &[u8]) -> Vec<C::Event> {
    let whole = run::<C>(capture, None);
    for split in [1, 3, 5, 9, 17, 40] {
        assert_eq!(run::<C>(capture, Some(split)), whole, "split at {split}");
    }
    let shown = format!("{whole:?}");
    for secret in [
        "s3cr3t",
        "secret",
        "hunter2",
        "4111",
        "Bearer",
        "orders (",
        "no_such_table",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    whole
}

fn pg(capture: &[u8]) -> Vec<PgEvent> {
    frame::<PgConnection>(capture)
}

fn fe(message: Fe, keyword: Option<&'static str>) -> PgEvent {
    PgEvent::Frontend { message, keyword }
}

fn rfq(status: TxStatus) -> PgEvent {
    PgEvent::ReadyForQuery { status }
}

/// Check psql's simple-query session: BEGIN, CREATE, INSERT, a failing SELECT (the
/// transaction turns E) and ROLLBACK, each with its keyword and ReadyForQuery status.
#[test]
fn psql_simple_queries() {
    let events = pg(include_bytes!(
        "../../../tests/data/requests/pg_simple_query.bin"
    ));
    let queries: Vec<&PgEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PgEvent::Frontend {
                    message: Fe::Query,
                    ..
                } | PgEvent::ReadyForQuery { .. }
            )
        })
        .collect();
    assert_eq!(
        queries,
        [
            &rfq(TxStatus::Idle),
            &fe(Fe::Query, Some("BEGIN")),
            &rfq(TxStatus::InTransaction),
            &fe(Fe::Query, Some("CREATE")),
            &rfq(TxStatus::InTransaction),
            &fe(Fe::Query, Some("INSERT")),
            &rfq(TxStatus::InTransaction),
            &fe(Fe::Query, Some("SELECT")),
            &rfq(TxStatus::Failed),
            &fe(Fe::Query, Some("ROLLBACK")),
            &rfq(TxStatus::Idle),
        ]
    );
    assert_eq!(events.first(), Some(&fe(Fe::Startup, None)));
    assert!(events.contains(&PgEvent::Error));
    assert_eq!(events.last(), Some(&fe(Fe::Terminate, None)));
}

/// Check pgbench's extended protocol: Parse (with the statement's keyword), Bind,
/// Describe, Execute, Sync, answered by ReadyForQuery T inside the transaction.
#[test]
fn pgbench_extended_protocol() {
    let events = pg(include_bytes!(
        "../../../tests/data/requests/pg_extended_query.bin"
    ));
    let parses: Vec<Option<&str>> = events
        .iter()
        .filter_map(|e| match e {
            PgEvent::Frontend {
                message: Fe::Parse,
                keyword,
            } => Some(*keyword),
            _ => None,
        })
        .collect();
    assert_eq!(
        parses,
        [Some("BEGIN"), Some("SELECT"), Some("COMMIT")].repeat(2)
    );
    for m in [Fe::Bind, Fe::Execute, Fe::Sync] {
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, PgEvent::Frontend { message, .. } if *message == m))
                .count(),
            6,
            "{m:?}"
        );
    }
    let statuses: Vec<TxStatus> = events
        .iter()
        .filter_map(|e| match e {
            PgEvent::ReadyForQuery { status } => Some(*status),
            _ => None,
        })
        .collect();
    assert!(
        statuses.ends_with(&[
            TxStatus::InTransaction,
            TxStatus::InTransaction,
            TxStatus::Idle
        ]),
        "{statuses:?}"
    );
}

/// Check psql's `sslmode=prefer` against a server without TLS: SSLRequest, `N`, then
/// the startup in clear.
#[test]
fn psql_ssl_refused() {
    let events = pg(include_bytes!(
        "../../../tests/data/requests/pg_ssl_refused.bin"
    ));
    assert_eq!(
        events[..2],
        [fe(Fe::SslRequest, None), fe(Fe::Startup, None)]
    );
    assert!(events.contains(&fe(Fe::Query, Some("SELECT"))));
    assert!(!events.contains(&PgEvent::Encrypted));
}

/// Check Node's keep-alive agent: four requests on one connection (one chunked answer,
/// one HEAD), each answered in order.
#[test]
fn node_http1_keepalive() {
    let events = frame::<Http1Connection>(include_bytes!(
        "../../../tests/data/requests/http1_keepalive.bin"
    ));
    let req = |method, path: &str| Http1Event::Request {
        method,
        path: path.into(),
    };
    let ok = Http1Event::Response { status: 200 };
    assert_eq!(
        events,
        [
            req("GET", "/orders/42"),
            ok.clone(),
            req("POST", "/orders"),
            ok.clone(),
            req("GET", "/stream/updates"),
            ok.clone(),
            req("HEAD", "/orders/42"),
            ok,
        ]
    );
}

/// Check Node's HTTP/2 client (nghttp2) making gRPC-style calls: four concurrent
/// streams (one cancelled by the client, one reset by the server) and a fifth after
/// them; nghttp2 sends each `:path` as a Huffman-coded literal that is never indexed.
#[test]
fn node_http2_grpc_calls() {
    let events = frame::<H2Connection>(include_bytes!(
        "../../../tests/data/requests/http2_grpc.bin"
    ));
    let request = |stream, method: &str| H2Event::Request {
        stream,
        path: Some(format!("/orders.OrderService/{method}")),
    };
    let answered = |stream| H2Event::Answered {
        stream,
        status: Some(200),
    };
    let goaway = |last_stream| H2Event::GoAway {
        last_stream,
        code: 0,
    };
    assert_eq!(
        events,
        [
            H2Event::Preface,
            request(1, "PlaceOrder"),
            request(3, "GetOrder"),
            request(5, "Slow"),
            request(7, "Fail"),
            H2Event::Reset {
                stream: 7,
                by_client: false,
                code: 2
            },
            answered(1),
            answered(3),
            H2Event::Reset {
                stream: 5,
                by_client: true,
                code: 8
            },
            request(9, "PlaceOrder"),
            answered(9),
            // Both sides close: a GOAWAY each, twice (graceful shutdown).
            goaway(0),
            goaway(0),
            goaway(9),
            goaway(9),
        ]
    );
}

/// Check that the first transfer of each side of every capture classifies as its
/// protocol (the server's bare `N` to an SSL request, psql's and pgbench's default
/// `sslmode=prefer`, is too short to say).
#[test]
fn captures_classify_by_their_first_bytes() {
    use super::classify::{classify, Protocol, Side};
    let captures: [(&[u8], Protocol, Protocol); 5] = [
        (
            include_bytes!("../../../tests/data/requests/pg_simple_query.bin"),
            Protocol::Postgres,
            Protocol::Postgres,
        ),
        (
            include_bytes!("../../../tests/data/requests/pg_extended_query.bin"),
            Protocol::Postgres,
            Protocol::Unknown,
        ),
        (
            include_bytes!("../../../tests/data/requests/pg_ssl_refused.bin"),
            Protocol::Postgres,
            Protocol::Unknown,
        ),
        (
            include_bytes!("../../../tests/data/requests/http1_keepalive.bin"),
            Protocol::Http1,
            Protocol::Http1,
        ),
        (
            include_bytes!("../../../tests/data/requests/http2_grpc.bin"),
            Protocol::Http2,
            Protocol::Http2,
        ),
    ];
    for (capture, client, server) in captures {
        let recs = records(capture);
        let first = |c: bool| {
            recs.iter()
                .find(|(is_client, _)| *is_client == c)
                .unwrap()
                .1
        };
        assert_eq!(classify(Side::Client, first(true)), client);
        assert_eq!(classify(Side::Server, first(false)), server);
    }
}
