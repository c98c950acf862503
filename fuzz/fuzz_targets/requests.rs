//! Socket bytes are whatever any client or server sends: every framer of the request
//! ledger (HTTP/1.x, HTTP/2 with gRPC, PostgreSQL) and the connection classifier must
//! take any sequence of transfers, split anywhere and partly uncaptured, without panic;
//! so must the route read from the first bytes of a request the kernel kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::analyze::requests::{
    classify::{classify, Side},
    http1::{route_of_prefix, Http1Connection},
    http2::H2Connection,
    postgres::PgConnection,
    Transfer,
};

fuzz_target!(|data: &[u8]| {
    let mut http1 = Http1Connection::default();
    let mut http2 = H2Connection::default();
    let mut pg = PgConnection::default();
    let (mut e1, mut e2, mut e3) = (Vec::new(), Vec::new(), Vec::new());
    // Each transfer: a control byte (bit 0: direction, bit 1: part of it not captured),
    // a length byte, then that many bytes.
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        let uncaptured = if control & 2 != 0 { u64::from(*len) * 3 } else { 0 };
        let t = Transfer {
            bytes,
            len: bytes.len() as u64 + uncaptured,
        };
        let client = control & 1 == 0;
        let _ = classify(if client { Side::Client } else { Side::Server }, bytes);
        let _ = route_of_prefix(&bytes[..bytes.len().min(64)]);
        if client {
            http1.feed_request(t, &mut e1);
            http2.feed_client(t, &mut e2);
            pg.feed_frontend(t, &mut e3);
        } else {
            http1.feed_response(t, &mut e1);
            http2.feed_server(t, &mut e2);
            pg.feed_backend(t, &mut e3);
        }
    }
});
