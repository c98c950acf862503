//! Which protocol a connection speaks, from the first bytes one transfer showed: the
//! short prefix the probes hand over before they know what to frame.
//!
//! A connection is usually seen mid-way (the profiler attaches during an incident), so
//! every rule also recognises a message that is not the connection's first: an HTTP/1
//! request or status line, an HTTP/2 frame header that obeys the frame rules, a
//! PostgreSQL message header with a known type and a sane length. Ambiguous bytes are
//! [`Protocol::Unknown`]; the ledger then counts the connection's bytes only.

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http1,
    Http2,
    Postgres,
    /// A TLS record: connection level only, and the report says so.
    Tls,
    Unknown,
}

/// Which side sent the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol `bytes` (the start of one transfer sent by `side`) belongs to.
pub fn classify(side: Side, bytes: &[u8]) -> Protocol {
    if is_tls_record(bytes) {
        Protocol::Tls
    } else if bytes.starts_with(H2_PREFACE) {
        Protocol::Http2
    } else if is_http1(side, bytes) {
        Protocol::Http1
    } else if is_postgres(side, bytes) {
        Protocol::Postgres
    } else if is_h2_frame(bytes) {
        Protocol::Http2
    } else {
        Protocol::Unknown
    }
}

/// A TLS record header: content type 20–23 (handshake, alert, change cipher spec,
/// application data), version 3.x, length at most 2^14 + 2048.
fn is_tls_record(b: &[u8]) -> bool {
    matches!(b, [20..=23, 3, 0..=4, hi, lo, ..] if u16::from_be_bytes([*hi, *lo]) <= 18_432)
}

fn is_http1(side: Side, b: &[u8]) -> bool {
    match side {
        Side::Server => b.starts_with(b"HTTP/1.") && b.get(8) == Some(&b' '),
        Side::Client => {
            let method = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
            (3..=10).contains(&method)
                && b.get(method) == Some(&b' ')
                && matches!(b.get(method + 1), Some(b'/' | b'*' | b'h'))
        }
    }
}

/// A PostgreSQL message header: the startup family (client, untyped), or a typed
/// message whose type fits the side and whose length is sane; a ReadyForQuery must be
/// exactly 5 bytes with an I/T/E status.
fn is_postgres(side: Side, b: &[u8]) -> bool {
    let be32 = |at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    match (side, b.first()) {
        (Side::Client, Some(0)) => {
            let (Some(len), Some(code)) = (be32(0), be32(4)) else {
                return false;
            };
            (8..=10_000).contains(&len)
                && (code == 196_608 || (80_877_102..=80_877_104).contains(&code))
        }
        (Side::Client, Some(t)) if b"QPBESDCHXdcfpF".contains(t) => {
            be32(1).is_some_and(|len| (4..=1 << 30).contains(&len))
                // A query's text starts with a letter, a blank or a comment.
                && (!matches!(t, b'Q') || b.get(5).is_none_or(|c| c.is_ascii_alphabetic() || c.is_ascii_whitespace() || *c == b'-' || *c == b'/' || *c == b'('))
        }
        (Side::Server, Some(b'Z')) => {
            be32(1) == Some(5) && matches!(b.get(5), Some(b'I' | b'T' | b'E'))
        }
        (Side::Server, Some(b'R')) => be32(1).is_some_and(|len| (8..=10_000).contains(&len)),
        (Side::Server, Some(t)) if b"SKECTDn12stIANGHWdcv".contains(t) => {
            be32(1).is_some_and(|len| (4..=1 << 30).contains(&len))
                // Most headers of a response are followed by another header: ask for one
                // more header to trust a single length.
                && be32(1).and_then(|len| b.get(1 + len as usize)).is_some_and(|next| {
                    b"RSKZECTDn12stIANGHWdcvV".contains(next)
                })
        }
        _ => false,
    }
}

/// An HTTP/2 frame header with a known type, the default frame size limit, and the
/// stream rules of its type.
fn is_h2_frame(b: &[u8]) -> bool {
    let Some(h) = b.get(..9) else {
        return false;
    };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    len <= 16_384
        && match h[3] {
            0x0 | 0x1 | 0x9 => stream != 0,
            0x3 => stream != 0 && len == 4,
            0x4 => stream == 0 && len.is_multiple_of(6) && h[4] & !0x1 == 0,
            0x6 => stream == 0 && len == 8,
            0x7 => stream == 0 && len >= 8,
            0x8 => len == 4,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check a table of first bytes from both sides, mid-connection included.
    #[test]
    fn classifies_first_bytes() {
        use Protocol::*;
        use Side::*;
        let cases: &[(Side, &[u8], Protocol)] = &[
            (Client, b"GET /orders HTTP/1.1\r\n", Http1),
            (Client, b"OPTIONS * HTTP/1.1\r\n", Http1),
            (Client, b"POST http://proxy/x HTTP/1.1\r\n", Http1),
            (Server, b"HTTP/1.1 200 OK\r\n", Http1),
            (Client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04", Http2),
            // Mid-connection: a HEADERS frame on stream 3, a server SETTINGS ack.
            (Client, b"\0\0\x2b\x01\x04\0\0\0\x03\x83\x86", Http2),
            (Server, b"\0\0\0\x04\x01\0\0\0\0", Http2),
            (Client, b"\0\0\0\x08\x04\xd2\x16\x2f", Postgres),
            (Client, b"\0\0\0\x29\0\x03\0\0user\0", Postgres),
            (Client, b"Q\0\0\0\x0aBEGIN\0", Postgres),
            (Client, b"P\0\0\0\x20\0SELECT 1\0\0\0", Postgres),
            (Server, b"Z\0\0\0\x05T", Postgres),
            (Server, b"C\0\0\0\x0aBEGIN\0Z\0\0\0\x05T", Postgres),
            (Client, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", Tls),
            (Server, b"\x17\x03\x03\x00\x45", Tls),
            (Client, b"hello", Unknown),
            (Client, b"", Unknown),
            (Server, b"Z\0\0\0\x06T", Unknown),
            (Server, b"+OK\r\n", Unknown),
            (Client, b"*1\r\n$4\r\nPING\r\n", Unknown),
            (Client, b"get /x HTTP/1.1", Unknown),
            (Client, b"Q\0\0\0\x0b\x01\x02", Unknown),
        ];
        for (side, bytes, want) in cases {
            assert_eq!(classify(*side, bytes), *want, "{side:?} {bytes:?}");
        }
    }

    /// Check that short or random prefixes never panic.
    #[test]
    fn random_prefixes_never_panic() {
        let mut seed = 7_u32;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 * 3) % 256) as u8)
                .collect();
            let _ = classify(Side::Client, &bytes);
            let _ = classify(Side::Server, &bytes);
        }
    }
}
