//! Table tests of the PostgreSQL framer over byte fixtures.
use super::*;
use FrontendMessage::*;

/// A typed message: type byte, length (counting itself), body.
fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// An untyped startup-family message with `code` and `body`.
fn startup(code: u32, body: &[u8]) -> Vec<u8> {
    let mut m = (body.len() as u32 + 8).to_be_bytes().to_vec();
    m.extend_from_slice(&code.to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn fe(message: FrontendMessage, keyword: Option<&'static str>) -> PgEvent {
    PgEvent::Frontend { message, keyword }
}

fn rfq(status: TxStatus) -> PgEvent {
    PgEvent::ReadyForQuery { status }
}

fn done(keyword: &'static str) -> PgEvent {
    PgEvent::CommandComplete {
        keyword: Some(keyword),
    }
}

/// The frontend and backend bytes of a transaction begun by `BEGIN`, an extended-
/// protocol INSERT (Parse/Bind/Execute/Sync coalesced in one write), a failed query and
/// a ROLLBACK, with the events they give.
fn transaction() -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<PgEvent>) {
    let parse = msg(b'P', b"\0INSERT INTO orders (secret_col) VALUES ($1)\0\0\0");
    let bind = msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x0bhunter2-pwd\0\0");
    let execute = msg(b'E', b"\0\0\0\0\0");
    let sync = msg(b'S', b"");
    let frontend = vec![
        query("BEGIN"),
        [parse, bind, execute, sync].concat(),
        query("select * from accounts where owner = 'alice'"),
        query("ROLLBACK"),
    ];
    let backend = vec![
        [msg(b'C', b"BEGIN\0"), ready(b'T')].concat(),
        [
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'C', b"INSERT 0 1\0"),
            ready(b'T'),
        ]
        .concat(),
        [
            msg(b'E', b"SERROR\0Mpermission denied for accounts\0\0"),
            ready(b'E'),
        ]
        .concat(),
        [msg(b'C', b"ROLLBACK\0"), ready(b'I')].concat(),
    ];
    let events = vec![
        fe(Query, Some("BEGIN")),
        done("BEGIN"),
        rfq(TxStatus::InTransaction),
        fe(Parse, Some("INSERT")),
        fe(Bind, None),
        fe(Execute, None),
        fe(Sync, None),
        done("INSERT"),
        rfq(TxStatus::InTransaction),
        fe(Query, Some("SELECT")),
        PgEvent::Error,
        rfq(TxStatus::Failed),
        fe(Query, Some("ROLLBACK")),
        done("ROLLBACK"),
        rfq(TxStatus::Idle),
    ];
    (frontend, backend, events)
}

/// Run a conversation: frontend and backend transfers alternate.
fn converse(frontend: &[Vec<u8>], backend: &[Vec<u8>]) -> (Vec<PgEvent>, FramingLoss) {
    let mut c = PgConnection::default();
    let mut out = Vec::new();
    for (f, b) in frontend.iter().zip(backend) {
        c.feed_frontend(Transfer::whole(f), &mut out);
        c.feed_backend(Transfer::whole(b), &mut out);
    }
    (out, c.loss)
}

/// Check a transaction's messages: the type of each frontend message, the first SQL
/// keyword, CommandComplete tags and the ReadyForQuery status I/T/E.
#[test]
fn frames_a_transaction() {
    let (frontend, backend, want) = transaction();
    let (events, loss) = converse(&frontend, &backend);
    assert_eq!(events, want);
    assert_eq!(loss, FramingLoss::default());
}

/// Check that every split of each transfer in two gives the same events.
#[test]
fn any_split_gives_the_same_events() {
    let (frontend, backend, want) = transaction();
    let longest = frontend.iter().chain(&backend).map(Vec::len).max().unwrap();
    for at in 0..=longest {
        let mut c = PgConnection::default();
        let mut out = Vec::new();
        for (f, b) in frontend.iter().zip(&backend) {
            let (f1, f2) = f.split_at(at.min(f.len()));
            let (b1, b2) = b.split_at(at.min(b.len()));
            c.feed_frontend(Transfer::whole(f1), &mut out);
            c.feed_frontend(Transfer::whole(f2), &mut out);
            c.feed_backend(Transfer::whole(b1), &mut out);
            c.feed_backend(Transfer::whole(b2), &mut out);
        }
        assert_eq!(out, want, "split at {at}");
        assert_eq!(c.loss, FramingLoss::default());
    }
}

/// Check the start of a connection: startup, an SSL request refused (`N`) and then a
/// startup, and an SSL request accepted (`S`), after which nothing is framed.
#[test]
fn frames_connection_start() {
    let params = b"user\0app\0database\0orders\0\0";
    let auth_ok = msg(b'R', &[0, 0, 0, 0]);
    let (events, loss) = converse(
        &[startup(STARTUP_V3, params), query("SELECT 1")],
        &[
            [
                auth_ok.clone(),
                msg(b'S', b"TimeZone\0UTC\0"),
                msg(b'K', &[0; 8]),
                ready(b'I'),
            ]
            .concat(),
            ready(b'I'),
        ],
    );
    assert_eq!(
        events,
        vec![
            fe(Startup, None),
            rfq(TxStatus::Idle),
            fe(Query, Some("SELECT")),
            rfq(TxStatus::Idle)
        ]
    );
    assert_eq!(loss, FramingLoss::default());

    let (events, _) = converse(
        &[startup(SSL_REQUEST, b""), startup(STARTUP_V3, params)],
        &[b"N".to_vec(), [auth_ok, ready(b'I')].concat()],
    );
    assert_eq!(
        events,
        vec![fe(SslRequest, None), fe(Startup, None), rfq(TxStatus::Idle)]
    );

    let (events, loss) = converse(
        &[
            startup(SSL_REQUEST, b""),
            b"\x16\x03\x01\x00\xa0 client hello".to_vec(),
        ],
        &[b"S".to_vec(), b"\x16\x03\x03 server hello".to_vec()],
    );
    assert_eq!(events, vec![fe(SslRequest, None), PgEvent::Encrypted]);
    assert_eq!(loss, FramingLoss::default());
}

/// Check that a long query captured only in part still gives its keyword and the next
/// message is framed, and that a capture ending before the keyword gives none.
#[test]
fn uncaptured_bytes() {
    let long = query(&format!("SELECT {}", "x, ".repeat(5000)));
    let mut c = PgConnection::default();
    let mut out = Vec::new();
    c.feed_frontend(
        Transfer {
            bytes: &long[..64],
            len: long.len() as u64,
        },
        &mut out,
    );
    c.feed_frontend(Transfer::whole(&query("COMMIT")), &mut out);
    let short = query("UPDATE t SET a = 1");
    c.feed_frontend(
        Transfer {
            bytes: &short[..7],
            len: short.len() as u64,
        },
        &mut out,
    );
    c.feed_frontend(Transfer::whole(&msg(b'S', b"")), &mut out);
    assert_eq!(
        out,
        vec![
            fe(Query, Some("SELECT")),
            fe(Query, Some("COMMIT")),
            fe(Query, None),
            fe(Sync, None)
        ]
    );
    assert_eq!(c.loss, FramingLoss::default());
}

/// Check that garbage never panics, loses the place (counted), and that the framer
/// finds it again at a transfer that starts with a message.
#[test]
fn garbage_is_counted_then_resynced() {
    let mut c = PgConnection::default();
    let mut out = Vec::new();
    c.feed_frontend(Transfer::whole(b"GET / HTTP/1.1\r\n\r\n"), &mut out);
    c.feed_backend(Transfer::whole(&msg(b'Z', b"TT")), &mut out);
    assert_eq!(c.loss.desyncs, 2);
    assert!(out.is_empty(), "{out:?}");
    c.feed_frontend(Transfer::whole(&query("BEGIN")), &mut out);
    c.feed_backend(Transfer::whole(&ready(b'T')), &mut out);
    assert_eq!(
        out,
        vec![fe(Query, Some("BEGIN")), rfq(TxStatus::InTransaction)]
    );

    let mut seed = 0x9e37_79b9_u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed
    };
    for _ in 0..300 {
        let len = (next() % 200) as usize;
        let mut noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if next() % 2 == 0 {
            // Plausible headers with random lengths.
            noise.splice(0..0, msg(b'Q', b"").into_iter().take(1));
        }
        let mut c = PgConnection::default();
        let mut out = Vec::new();
        let cut = (next() as usize) % (noise.len() + 1);
        c.feed_frontend(Transfer::whole(&noise[..cut]), &mut out);
        c.feed_backend(
            Transfer {
                bytes: &noise[cut..],
                len: u64::from(next()),
            },
            &mut out,
        );
        c.feed_frontend(Transfer::whole(&noise[cut..]), &mut out);
    }
}

/// Check that no SQL text, parameter, error text or startup parameter reaches the
/// events.
#[test]
fn events_carry_no_sql_text() {
    let (frontend, backend, _) = transaction();
    let (events, _) = converse(&frontend, &backend);
    let shown = format!("{events:?}");
    for secret in [
        "orders",
        "secret_col",
        "hunter2",
        "accounts",
        "alice",
        "permission",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// Check that a startup-shaped or typed header with a length below its own size is
/// refused, not subtracted from (the fuzz target's first find: `0 0 0 4 …` underflowed).
#[test]
fn short_lengths_do_not_underflow() {
    assert_eq!(header(true, &[0, 0, 0, 4, 0, 3, 0, 0]), None);
    assert_eq!(header(true, &[b'Q', 0, 0, 0, 2]), None);
    assert_eq!(header(false, &[b'Z', 0, 0, 0, 0]), None);
    let mut c = PgConnection::default();
    let mut out = Vec::new();
    c.feed_frontend(Transfer::whole(&[0, 0, 0, 4, 0, 3, 0, 0, 1, 2]), &mut out);
    c.feed_backend(Transfer::whole(&[b'Z', 0, 0, 0, 1]), &mut out);
    assert!(out.is_empty(), "{out:?}");
}
