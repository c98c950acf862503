//! Table tests of the HTTP/1 framer over byte fixtures.
use super::*;

const GET: &[u8] =
    b"GET /orders/42?token=secret HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer s3cr3t\r\n\r\n";
const OK_BODY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: id=s3cr3t\r\n\r\nhello";
const POST: &[u8] = b"POST /orders HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"qty\": 10}";
const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n";

fn get(path: &str) -> Http1Event {
    Http1Event::Request {
        method: "GET",
        path: path.into(),
    }
}

fn status(status: u16) -> Http1Event {
    Http1Event::Response { status }
}

/// A named table row: transfers (request direction?, bytes) and the events expected.
type Case<'a> = (&'a str, Vec<(bool, &'a [u8])>, Vec<Http1Event>);

/// Feed requests and responses as whole transfers, in the order given.
fn run(steps: &[(bool, &[u8])]) -> (Vec<Http1Event>, FramingLoss) {
    let mut c = Http1Connection::default();
    let mut out = Vec::new();
    for (request, bytes) in steps {
        if *request {
            c.feed_request(Transfer::whole(bytes), &mut out);
        } else {
            c.feed_response(Transfer::whole(bytes), &mut out);
        }
    }
    (out, c.loss)
}

/// Check the framer on a table of exchanges: keep-alive, pipelining, bodies by length
/// and in chunks, HEAD, interim responses, an upgrade.
#[test]
fn frames_exchanges() {
    let pipelined = [GET, POST, GET].concat();
    let answers = [OK_BODY, CREATED, CHUNKED].concat();
    let head_then_get = b"HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n";
    let head_answers: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let cases: Vec<Case> = vec![
        (
            "keep-alive",
            vec![(true, GET), (false, OK_BODY), (true, GET), (false, OK_BODY)],
            vec![get("/orders/42"), status(200), get("/orders/42"), status(200)],
        ),
        (
            "pipelined and coalesced",
            vec![(true, &pipelined), (false, &answers)],
            vec![
                get("/orders/42"),
                Http1Event::Request {
                    method: "POST",
                    path: "/orders".into(),
                },
                get("/orders/42"),
                status(200),
                status(201),
                status(200),
            ],
        ),
        (
            "HEAD has no body",
            vec![(true, head_then_get), (false, head_answers)],
            vec![
                Http1Event::Request {
                    method: "HEAD",
                    path: "/h".into(),
                },
                get("/g"),
                status(200),
                status(404),
            ],
        ),
        (
            "100 Continue is not the answer",
            vec![
                (true, POST),
                (false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            ],
            vec![
                Http1Event::Request {
                    method: "POST",
                    path: "/orders".into(),
                },
                status(201),
            ],
        ),
        (
            "chunked request",
            vec![(
                true,
                b"PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nDELETE /y HTTP/1.0\r\n\r\n",
            )],
            vec![
                Http1Event::Request {
                    method: "PUT",
                    path: "/x".into(),
                },
                Http1Event::Request {
                    method: "DELETE",
                    path: "/y".into(),
                },
            ],
        ),
        (
            "upgrade stops framing",
            vec![
                (true, GET),
                (false, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
                (true, b"\x81\x85garbage after the upgrade"),
            ],
            vec![get("/orders/42"), status(101)],
        ),
        (
            "unknown method",
            vec![(true, b"BREW /pot HTTP/1.1\r\n\r\n")],
            vec![Http1Event::Request {
                method: "OTHER",
                path: "/pot".into(),
            }],
        ),
    ];
    for (name, steps, want) in cases {
        let (events, loss) = run(&steps);
        assert_eq!(events, want, "{name}");
        assert_eq!(loss, FramingLoss::default(), "{name}");
    }
}

/// Check that every split of a pipelined stream into two transfers gives the same
/// events as the whole, on both directions.
#[test]
fn any_split_gives_the_same_events() {
    let requests = [GET, POST, GET].concat();
    let responses = [OK_BODY, CREATED, CHUNKED].concat();
    let (want, _) = run(&[(true, &requests), (false, &responses)]);
    for at in 0..=requests.len().max(responses.len()) {
        let r = at.min(requests.len());
        let s = at.min(responses.len());
        let (events, loss) = run(&[
            (true, &requests[..r]),
            (true, &requests[r..]),
            (false, &responses[..s]),
            (false, &responses[s..]),
        ]);
        assert_eq!(events, want, "split at {at}");
        assert_eq!(loss, FramingLoss::default());
    }
    // Byte by byte.
    let mut c = Http1Connection::default();
    let mut out = Vec::new();
    for b in &requests {
        c.feed_request(Transfer::whole(std::slice::from_ref(b)), &mut out);
    }
    assert_eq!(out.len(), 3);
}

/// Check that a body the probe did not capture passes by count, so the next response
/// is framed, and that a gap inside the headers loses the place until a transfer starts
/// a message again.
#[test]
fn uncaptured_bytes() {
    let mut c = Http1Connection::default();
    let mut out = Vec::new();
    c.feed_request(Transfer::whole(GET), &mut out);
    c.feed_request(Transfer::whole(GET), &mut out);
    // A 1 MiB body of which 64 bytes were captured.
    let big = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
    let mut first = big.to_vec();
    first.extend_from_slice(&[b'x'; 64]);
    c.feed_response(
        Transfer {
            bytes: &first,
            len: (big.len() + 1_048_576) as u64,
        },
        &mut out,
    );
    c.feed_response(Transfer::whole(OK_BODY), &mut out);
    assert_eq!(
        out,
        vec![
            get("/orders/42"),
            get("/orders/42"),
            status(200),
            status(200)
        ]
    );
    assert_eq!(c.loss, FramingLoss::default());

    // Headers cut by the capture: the rest of that request is lost.
    out.clear();
    c.feed_request(
        Transfer {
            bytes: &GET[..20],
            len: GET.len() as u64 + 100,
        },
        &mut out,
    );
    assert_eq!(c.loss.desyncs, 1);
    c.feed_request(Transfer::whole(b"garbage"), &mut out);
    c.feed_request(Transfer::whole(GET), &mut out);
    assert_eq!(out, vec![get("/orders/42")]);
    assert_eq!(c.loss.unframed_bytes, (GET.len() - 20 + 100 + 7) as u64);
}

/// Check that garbage, binary noise and endless lines never panic and are counted as
/// lost, with no events.
#[test]
fn garbage_is_counted_not_framed() {
    let long_line = vec![b'A'; MAX_PARTIAL + 10];
    for bytes in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET\r\n",
        b"GET / HTTP/2.0\r\n",
        b"HTTP/1.1 2x0 OK\r\n",
        &long_line,
        b"\0\0\0\0\n\n\n",
    ] {
        let (events, loss) = run(&[(true, bytes), (false, bytes)]);
        assert!(events.is_empty(), "{events:?}");
        assert!(loss.desyncs >= 1, "{:?}", String::from_utf8_lossy(bytes));
    }
    let bad_length = b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n";
    assert_eq!(run(&[(false, bad_length)]).1.desyncs, 1);
    // Pseudo-random bytes in random splits.
    let mut seed = 0x1234_5678_u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed
    };
    for _ in 0..200 {
        let len = (next() % 300) as usize;
        let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let cut = (next() as usize) % (len + 1);
        let mut c = Http1Connection::default();
        let mut out = Vec::new();
        c.feed_request(Transfer::whole(&noise[..cut]), &mut out);
        c.feed_response(
            Transfer {
                bytes: &noise[cut..],
                len: u64::from(next()),
            },
            &mut out,
        );
    }
}

/// Check that no header value, query string or body byte reaches the events.
#[test]
fn events_carry_no_payload() {
    let (events, _) = run(&[(true, GET), (false, OK_BODY), (true, POST)]);
    let shown = format!("{events:?}");
    for secret in ["s3cr3t", "token", "secret", "api", "hello", "qty"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// Check the route of a request from the first bytes the kernel kept: a whole line,
/// a line cut inside the path (marked), a cut query (not marked: the path is whole),
/// and bytes that start no request (a body, a response, garbage).
#[test]
fn route_from_a_kept_prefix() {
    assert_eq!(route_of_prefix(GET).as_deref(), Some("GET /orders/42"));
    assert_eq!(
        route_of_prefix(b"POST /orders?customer=4711 HTTP/1.1\r\nHost: shop\r\nContent-Le")
            .as_deref(),
        Some("POST /orders")
    );
    assert_eq!(
        route_of_prefix(b"GET /api/v1/customers/4711/orders/99/ite").as_deref(),
        Some("GET /api/v1/customers/4711/orders/99/ite…")
    );
    assert_eq!(
        route_of_prefix(b"GET /search?q=very+long+secret+terms+that+get+cu").as_deref(),
        Some("GET /search")
    );
    assert_eq!(
        route_of_prefix(b"BREW /pot HTTP/1.1\r\n").as_deref(),
        Some("OTHER /pot")
    );
    for not_a_request in [
        &b"{\"qty\": 10}"[..],
        b"HTTP/1.1 200 OK\r\n",
        b"GET",
        b"GET nopath-cut-before-the-version",
        b"",
        b"\xff\xfe GET / HTTP/1.1",
    ] {
        assert_eq!(route_of_prefix(not_a_request), None, "{not_a_request:?}");
    }
}

/// Check when a connection is at rest between exchanges, and how many requests are
/// outstanding: not in the middle of a body, not while pipelining, not after losing
/// its place.
#[test]
fn at_rest_between_exchanges_only() {
    let mut c = Http1Connection::default();
    let mut out = Vec::new();
    assert!(c.at_rest());
    c.feed_request(Transfer::whole(POST), &mut out);
    assert!(!c.at_rest() && c.outstanding() == 1);
    c.feed_response(Transfer::whole(CREATED), &mut out);
    assert!(c.at_rest());
    c.feed_request(Transfer::whole(GET), &mut out);
    c.feed_request(Transfer::whole(GET), &mut out);
    assert_eq!(c.outstanding(), 2);
    c.feed_response(Transfer::whole(&OK_BODY[..20]), &mut out);
    assert!(!c.at_rest());
    let mut lost = Http1Connection::default();
    lost.feed_request(Transfer::whole(b"\x01\x02 not http\r\n"), &mut out);
    assert!(!lost.at_rest());
}
