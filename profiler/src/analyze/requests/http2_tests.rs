//! Table tests of the HTTP/2 framer over byte fixtures.
use super::*;

const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A request header block: `:method POST`, `:scheme http`, `:path` (a literal with the
/// static name, raw or Huffman-coded), and a metadata field whose value is a secret.
fn request_block(path: &str, huffman: bool) -> Vec<u8> {
    let value = if huffman {
        crate::analyze::requests::huffman::encode(path.as_bytes())
    } else {
        path.as_bytes().to_vec()
    };
    let mut b = vec![
        0x83,
        0x86,
        0x44,
        (value.len() as u8) | if huffman { 0x80 } else { 0 },
    ];
    b.extend_from_slice(&value);
    b.extend_from_slice(&[0x40, 13]);
    b.extend_from_slice(b"authorization");
    b.extend_from_slice(&[13]);
    b.extend_from_slice(b"Bearer s3cr3t");
    b
}

fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags | END_HEADERS, stream, block)
}

fn grpc_message(text: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&(text.len() as u32).to_be_bytes());
    m.extend_from_slice(text);
    m
}

fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])
}

/// A unary gRPC call on stream `stream`: client HEADERS + DATA(END_STREAM); server
/// HEADERS(:status 200) + DATA + trailers (HEADERS with END_STREAM).
fn unary(stream: u32, path: &str, huffman: bool) -> (Vec<u8>, Vec<u8>) {
    let client = [
        headers(stream, 0, &request_block(path, huffman)),
        frame(DATA, END_STREAM, stream, &grpc_message(b"card=4111-secret")),
    ]
    .concat();
    let mut trailers = vec![0x40, 11];
    trailers.extend_from_slice(b"grpc-status");
    trailers.extend_from_slice(&[1, b'0']);
    let server = [
        headers(stream, 0, &[0x88]),
        frame(DATA, 0, stream, &grpc_message(b"order-id=secret-42")),
        headers(stream, END_STREAM, &trailers),
    ]
    .concat();
    (client, server)
}

fn request(stream: u32, path: &str) -> H2Event {
    H2Event::Request {
        stream,
        path: Some(path.into()),
    }
}

fn answered(stream: u32, status: u16) -> H2Event {
    H2Event::Answered {
        stream,
        status: Some(status),
    }
}

/// A named table row: transfers (client side?, bytes) and the events expected.
type Case = (&'static str, Vec<(bool, Vec<u8>)>, Vec<H2Event>);

fn run(steps: &[(bool, &[u8])]) -> (Vec<H2Event>, FramingLoss) {
    let mut c = H2Connection::default();
    let mut out = Vec::new();
    for (client, bytes) in steps {
        if *client {
            c.feed_client(Transfer::whole(bytes), &mut out);
        } else {
            c.feed_server(Transfer::whole(bytes), &mut out);
        }
    }
    (out, c.loss)
}

/// The client and server bytes of a connection from its start: preface, settings, a
/// unary call on stream 1 and three concurrent ones (3, 5, 7) coalesced in one write,
/// answered out of order, 7 reset by the server; the events they give.
fn conversation() -> (Vec<u8>, Vec<u8>, Vec<H2Event>) {
    let (c1, s1) = unary(1, "/orders.OrderService/PlaceOrder", false);
    let (c3, s3) = unary(3, "/orders.OrderService/GetOrder", true);
    let (c5, s5) = unary(5, "/health.Health/Check", true);
    let (c7, _) = unary(7, "/orders.OrderService/PlaceOrder", false);
    let client = [
        PREFACE.to_vec(),
        settings(),
        frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]),
        c1,
        frame(SETTINGS, 0x1, 0, &[]),
        c3,
        c5,
        c7,
        frame(PING, 0, 0, &[1; 8]),
    ]
    .concat();
    let server = [
        settings(),
        frame(SETTINGS, 0x1, 0, &[]),
        s1,
        s5,
        s3,
        frame(RST_STREAM, 0, 7, &[0, 0, 0, 8]),
        frame(GOAWAY, 0, 0, &[0, 0, 0, 7, 0, 0, 0, 0, b'b', b'y', b'e']),
    ]
    .concat();
    let events = vec![
        H2Event::Preface,
        request(1, "/orders.OrderService/PlaceOrder"),
        request(3, "/orders.OrderService/GetOrder"),
        request(5, "/health.Health/Check"),
        request(7, "/orders.OrderService/PlaceOrder"),
        answered(1, 200),
        answered(5, 200),
        answered(3, 200),
        H2Event::Reset {
            stream: 7,
            by_client: false,
            code: 8,
        },
        H2Event::GoAway {
            last_stream: 7,
            code: 0,
        },
    ];
    (client, server, events)
}

/// Check a gRPC conversation: a request per new client stream with its method (raw and
/// Huffman-coded), answers by END_STREAM in any order, a server reset and GOAWAY.
#[test]
fn frames_a_grpc_conversation() {
    let (client, server, want) = conversation();
    let (events, loss) = run(&[(true, &client), (false, &server)]);
    assert_eq!(events, want);
    assert_eq!(loss, FramingLoss::default());
}

/// Check that every split of both directions in two transfers gives the same events.
#[test]
fn any_split_gives_the_same_events() {
    let (client, server, want) = conversation();
    for at in 0..=client.len().max(server.len()) {
        let (c1, c2) = client.split_at(at.min(client.len()));
        let (s1, s2) = server.split_at(at.min(server.len()));
        let (events, loss) = run(&[(true, c1), (true, c2), (false, s1), (false, s2)]);
        assert_eq!(events, want, "split at {at}");
        assert_eq!(loss, FramingLoss::default(), "split at {at}");
    }
}

/// Check a table of single exchanges: attached after the preface, a client cancel,
/// a trailers-only answer, padded and prioritised HEADERS, a client's trailers (not a
/// new request), a server DATA with END_STREAM and an unknown frame type.
#[test]
fn frames_exchanges() {
    let block = request_block("/a.B/C", false);
    let mut padded = vec![2, 0, 0, 0, 0, 16];
    padded.extend_from_slice(&block);
    padded.extend_from_slice(&[0, 0]);
    let cases: Vec<Case> = vec![
        (
            "attached late, no preface",
            vec![
                (true, headers(41, END_STREAM, &block)),
                (false, headers(41, END_STREAM, &[0x8d])),
            ],
            vec![request(41, "/a.B/C"), answered(41, 404)],
        ),
        (
            "client cancel",
            vec![
                (true, headers(1, 0, &block)),
                (true, frame(RST_STREAM, 0, 1, &[0, 0, 0, 8])),
            ],
            vec![
                request(1, "/a.B/C"),
                H2Event::Reset {
                    stream: 1,
                    by_client: true,
                    code: 8,
                },
            ],
        ),
        (
            "padded and prioritised",
            vec![(
                true,
                frame(HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 3, &padded),
            )],
            vec![request(3, "/a.B/C")],
        ),
        (
            "client trailers are not a request",
            vec![(
                true,
                [
                    headers(5, 0, &block),
                    headers(5, END_STREAM, &[0x40, 1, b'x', 1, b'y']),
                ]
                .concat(),
            )],
            vec![request(5, "/a.B/C")],
        ),
        (
            "DATA ends the stream, status from its HEADERS",
            vec![
                (true, headers(9, END_STREAM, &block)),
                (
                    false,
                    [headers(9, 0, &[0x8e]), frame(DATA, END_STREAM, 9, b"oops")].concat(),
                ),
            ],
            vec![request(9, "/a.B/C"), answered(9, 500)],
        ),
        (
            "unknown frame type is skipped",
            vec![(
                true,
                [frame(0xfa, 0, 0, b"ext"), headers(11, 0, &block)].concat(),
            )],
            vec![request(11, "/a.B/C")],
        ),
        (
            "path from the dynamic table is unknown",
            vec![(true, headers(13, 0, &[0x83, 0xbe]))],
            vec![H2Event::Request {
                stream: 13,
                path: None,
            }],
        ),
    ];
    for (name, steps, want) in cases {
        let steps: Vec<(bool, &[u8])> = steps.iter().map(|(c, b)| (*c, b.as_slice())).collect();
        let (events, loss) = run(&steps);
        assert_eq!(events, want, "{name}");
        assert_eq!(loss, FramingLoss::default(), "{name}");
    }
}

/// Check that a DATA payload the probe did not capture passes by count (a frame larger
/// than the default limit, as the client's SETTINGS allowed), that a HEADERS
/// block cut by the capture still opens the request, and that a gap inside a frame
/// header loses the place until a transfer starts with a frame.
#[test]
fn uncaptured_bytes() {
    let mut c = H2Connection::default();
    let mut out = Vec::new();
    // The client lets the server send frames of up to 1 MiB (SETTINGS_MAX_FRAME_SIZE).
    c.feed_client(
        Transfer::whole(&frame(SETTINGS, 0, 0, &[0, 5, 0, 0x10, 0, 0])),
        &mut out,
    );
    let big = frame(DATA, 0, 1, &vec![7; 100_000]);
    c.feed_server(
        Transfer {
            bytes: &big[..64],
            len: big.len() as u64,
        },
        &mut out,
    );
    c.feed_server(Transfer::whole(&headers(1, END_STREAM, &[0x88])), &mut out);
    let long = headers(
        3,
        0,
        &request_block(&format!("/{}", "x".repeat(300)), false),
    );
    c.feed_client(
        Transfer {
            bytes: &long[..20],
            len: long.len() as u64,
        },
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            answered(1, 200),
            H2Event::Request {
                stream: 3,
                path: None
            }
        ]
    );
    assert_eq!(c.loss, FramingLoss::default());
    let next = headers(5, 0, &request_block("/a.B/C", false));
    c.feed_client(
        Transfer {
            bytes: &next[..4],
            len: next.len() as u64,
        },
        &mut out,
    );
    assert_eq!(c.loss.desyncs, 1);
    c.feed_client(Transfer::whole(b"noise that is no frame"), &mut out);
    c.feed_client(
        Transfer::whole(&headers(7, 0, &request_block("/a.B/D", false))),
        &mut out,
    );
    assert_eq!(out.last(), Some(&request(7, "/a.B/D")));
}

/// Check that garbage never panics and loses the place (counted), HTTP/1 included.
#[test]
fn garbage_is_counted_not_framed() {
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &frame(PING, 0, 1, &[0; 8]),
        &frame(SETTINGS, 0, 0, &[0; 5]),
        // Larger than any SETTINGS allowed.
        &frame(DATA, 0, 1, &[0; 20_000]),
        b"PRI * HTTP/2.0\r\n\r\nXX",
    ] {
        let (events, loss) = run(&[(true, bytes), (false, bytes)]);
        assert!(
            !events.iter().any(|e| matches!(e, H2Event::Request { .. })),
            "{events:?}"
        );
        assert!(loss.desyncs >= 1, "{bytes:?}");
    }
    let mut seed = 0xdead_beef_u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed
    };
    for _ in 0..300 {
        let len = (next() % 400) as usize;
        let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let cut = (next() as usize) % (len + 1);
        let mut c = H2Connection::default();
        let mut out = Vec::new();
        c.feed_client(Transfer::whole(&noise[..cut]), &mut out);
        c.feed_server(
            Transfer {
                bytes: &noise[cut..],
                len: u64::from(next()),
            },
            &mut out,
        );
        c.feed_client(Transfer::whole(&noise[cut..]), &mut out);
    }
}

/// Check that no header value or message byte reaches the events.
#[test]
fn events_carry_no_payload() {
    let (client, server, _) = conversation();
    let (events, _) = run(&[(true, &client), (false, &server)]);
    let shown = format!("{events:?}");
    for secret in ["s3cr3t", "Bearer", "card", "secret", "grpc-status", "bye"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}
