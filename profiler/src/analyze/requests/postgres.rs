//! PostgreSQL wire protocol (v3) framing: frontend Query/Parse/Bind/Execute/Sync in,
//! backend ReadyForQuery out, with the transaction status it carries.
//!
//! Every message after the startup is a type byte and a big-endian length that counts
//! itself, so framing is a walk from header to header; the startup family (startup,
//! SSL and GSS requests, cancel) has no type byte and begins with a zero byte, which no
//! typed message does. After an SSL or GSS request the server answers with one bare byte;
//! `S`/`G` means the rest of the connection is encrypted, and only its volume is known.
use super::{text, FramingLoss, Transfer};

/// A frontend (client) message, by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendMessage {
    Startup,
    SslRequest,
    GssEncRequest,
    CancelRequest,
    Query,
    Parse,
    Bind,
    Execute,
    Sync,
    Describe,
    Close,
    Flush,
    Terminate,
    CopyData,
    CopyDone,
    CopyFail,
    /// Password, SASL and GSS responses.
    Authentication,
    FunctionCall,
}

/// The transaction status of a ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (until ROLLBACK).
    Failed,
}

/// What the framer saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgEvent {
    /// A frontend message; for Query and Parse, the first SQL keyword (`BEGIN`,
    /// `SELECT`, `OTHER`), `None` when the capture ended before it.
    Frontend {
        message: FrontendMessage,
        keyword: Option<&'static str>,
    },
    /// The server is ready for the next query, in this transaction state.
    ReadyForQuery { status: TxStatus },
    /// CommandComplete, with the first word of its tag (`INSERT`, `SELECT`).
    CommandComplete { keyword: Option<&'static str> },
    /// An ErrorResponse (its fields are not read).
    Error,
    /// The server agreed to TLS or GSS encryption: framing ends here.
    Encrypted,
}

const STARTUP_V3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Longer messages exist (a huge COPY row) but not as the first thing after a gap.
const MAX_MESSAGE: u32 = 1 << 30;
/// How much of a message body is read to name it (Parse has a statement name first).
const BODY_PREFIX: usize = 96;

fn frontend_type(t: u8) -> Option<FrontendMessage> {
    use FrontendMessage::*;
    Some(match t {
        b'Q' => Query,
        b'P' => Parse,
        b'B' => Bind,
        b'E' => Execute,
        b'S' => Sync,
        b'D' => Describe,
        b'C' => Close,
        b'H' => Flush,
        b'X' => Terminate,
        b'd' => CopyData,
        b'c' => CopyDone,
        b'f' => CopyFail,
        b'p' => Authentication,
        b'F' => FunctionCall,
        _ => return None,
    })
}

/// Backend message types (the bodies of most are skipped unread).
const BACKEND_TYPES: &[u8] = b"RSKZECTDn12stIANGHWdcvV";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a header (5 bytes, or 8 for the untyped startup family).
    Header,
    /// Reading the first `want` bytes of a body of `remaining`, then skipping the rest.
    Body {
        kind: u8,
        remaining: u64,
        want: usize,
    },
    /// The backend's one-byte answer to an SSL or GSS request.
    EncryptionAnswer,
    Encrypted,
    Lost,
}

#[derive(Debug)]
struct Half {
    state: State,
    partial: Vec<u8>,
}

/// Frames both directions of one PostgreSQL connection.
#[derive(Debug)]
pub struct PgConnection {
    frontend: Half,
    backend: Half,
    pub loss: FramingLoss,
}

impl Default for PgConnection {
    fn default() -> Self {
        let half = || Half {
            state: State::Header,
            partial: Vec::new(),
        };
        Self {
            frontend: half(),
            backend: half(),
            loss: FramingLoss::default(),
        }
    }
}

impl PgConnection {
    /// Bytes the client sent.
    pub fn feed_frontend(&mut self, t: Transfer<'_>, out: &mut Vec<PgEvent>) {
        self.feed(true, t, out);
    }

    /// Bytes the server sent.
    pub fn feed_backend(&mut self, t: Transfer<'_>, out: &mut Vec<PgEvent>) {
        self.feed(false, t, out);
    }

    fn half(&mut self, frontend: bool) -> &mut Half {
        if frontend {
            &mut self.frontend
        } else {
            &mut self.backend
        }
    }

    fn feed(&mut self, frontend: bool, t: Transfer<'_>, out: &mut Vec<PgEvent>) {
        let half = self.half(frontend);
        if half.state == State::Lost && header(frontend, t.bytes).is_some() {
            half.state = State::Header;
            half.partial.clear();
        }
        let mut i = 0;
        while i < t.bytes.len() {
            let half = self.half(frontend);
            match half.state {
                State::Encrypted => return,
                State::Lost => {
                    self.loss.unframed_bytes += (t.bytes.len() - i) as u64;
                    return;
                }
                State::EncryptionAnswer => {
                    let answer = t.bytes[i];
                    i += 1;
                    if answer == b'S' || answer == b'G' {
                        out.push(PgEvent::Encrypted);
                        self.frontend.state = State::Encrypted;
                        self.backend.state = State::Encrypted;
                        return;
                    }
                    half.state = if answer == b'N' {
                        State::Header
                    } else {
                        State::Lost
                    };
                    if half.state == State::Lost {
                        self.loss.desync((t.bytes.len() - i) as u64);
                    }
                }
                State::Header => {
                    let need = if frontend && half.partial.first().or(t.bytes.get(i)) == Some(&0) {
                        8
                    } else {
                        5
                    };
                    let take = (need - half.partial.len()).min(t.bytes.len() - i);
                    half.partial.extend_from_slice(&t.bytes[i..i + take]);
                    i += take;
                    if half.partial.len() < need {
                        break;
                    }
                    let Some((kind, body)) = header(frontend, &half.partial) else {
                        let rest = (t.bytes.len() - i) as u64;
                        self.lose(frontend, rest);
                        break;
                    };
                    self.begin(frontend, kind, body, out);
                }
                State::Body {
                    kind,
                    remaining,
                    want,
                } => {
                    let avail = t.bytes.len() - i;
                    if half.partial.len() < want {
                        let take = (want - half.partial.len()).min(avail);
                        half.partial.extend_from_slice(&t.bytes[i..i + take]);
                        i += take;
                        let remaining = remaining - take as u64;
                        half.state = State::Body {
                            kind,
                            remaining,
                            want,
                        };
                        if half.partial.len() == want {
                            self.emit(frontend, kind, out);
                        }
                    } else {
                        let take = remaining.min(avail as u64);
                        i += take as usize;
                        half.state = State::Body {
                            kind,
                            remaining: remaining - take,
                            want,
                        };
                    }
                    self.end_body(frontend);
                }
            }
        }
        self.gap(frontend, t.missing(), out);
    }

    /// A header was read (still in `partial`): `kind` is the type byte, or 0 for the
    /// startup family, whose code is in the header's last 4 bytes.
    fn begin(&mut self, frontend: bool, kind: u8, body: u64, out: &mut Vec<PgEvent>) {
        let want = match kind {
            b'Q' | b'P' if frontend => BODY_PREFIX,
            b'Z' | b'C' if !frontend => 32,
            _ => 0,
        }
        .min(usize::try_from(body).unwrap_or(usize::MAX));
        self.half(frontend).state = State::Body {
            kind,
            remaining: body,
            want,
        };
        if want == 0 {
            self.emit(frontend, kind, out);
        }
        self.half(frontend).partial.clear();
        self.end_body(frontend);
    }

    /// The end of a body: back to headers (or to the encryption answer).
    fn end_body(&mut self, frontend: bool) {
        let half = self.half(frontend);
        if let State::Body { remaining: 0, .. } = half.state {
            half.state = State::Header;
            half.partial.clear();
        }
    }

    /// The event of the message whose body prefix is in `partial`.
    fn emit(&mut self, frontend: bool, kind: u8, out: &mut Vec<PgEvent>) {
        let body = &self.half(frontend).partial;
        let event = if frontend {
            let message = match kind {
                0 => match body
                    .get(4..8)
                    .map(|c| u32::from_be_bytes(c.try_into().unwrap_or_default()))
                {
                    Some(SSL_REQUEST) => FrontendMessage::SslRequest,
                    Some(GSS_REQUEST) => FrontendMessage::GssEncRequest,
                    Some(CANCEL_REQUEST) => FrontendMessage::CancelRequest,
                    _ => FrontendMessage::Startup,
                },
                k => frontend_type(k).unwrap_or(FrontendMessage::Authentication),
            };
            let keyword = match kind {
                b'Q' => text::sql_keyword(body),
                // A statement name (NUL-terminated), then the query.
                b'P' => body
                    .iter()
                    .position(|&b| b == 0)
                    .and_then(|n| text::sql_keyword(&body[n + 1..])),
                _ => None,
            };
            PgEvent::Frontend { message, keyword }
        } else {
            match kind {
                b'Z' => match body.first() {
                    Some(b'I') => PgEvent::ReadyForQuery {
                        status: TxStatus::Idle,
                    },
                    Some(b'T') => PgEvent::ReadyForQuery {
                        status: TxStatus::InTransaction,
                    },
                    Some(b'E') => PgEvent::ReadyForQuery {
                        status: TxStatus::Failed,
                    },
                    _ => return,
                },
                b'C' => PgEvent::CommandComplete {
                    keyword: text::sql_keyword(body),
                },
                b'E' => PgEvent::Error,
                _ => return,
            }
        };
        if let PgEvent::Frontend {
            message: FrontendMessage::SslRequest | FrontendMessage::GssEncRequest,
            ..
        } = event
        {
            self.backend.state = State::EncryptionAnswer;
            self.backend.partial.clear();
        }
        out.push(event);
    }

    /// Bytes of a transfer the probe did not capture.
    fn gap(&mut self, frontend: bool, missing: u64, out: &mut Vec<PgEvent>) {
        if missing == 0 {
            return;
        }
        match self.half(frontend).state {
            State::Body {
                kind,
                remaining,
                want,
            } if missing <= remaining => {
                let half = self.half(frontend);
                let prefix_done = half.partial.len() >= want;
                half.state = State::Body {
                    kind,
                    remaining: remaining - missing,
                    want: 0,
                };
                if !prefix_done {
                    // Name the message with what was captured.
                    self.emit(frontend, kind, out);
                }
                self.half(frontend).partial.clear();
                self.end_body(frontend);
            }
            State::Encrypted => {}
            State::Lost => self.loss.unframed_bytes += missing,
            _ => self.lose(frontend, missing),
        }
    }

    fn lose(&mut self, frontend: bool, bytes: u64) {
        let half = self.half(frontend);
        half.state = State::Lost;
        half.partial.clear();
        self.loss.desync(bytes);
    }
}

/// A message header: (type byte or 0, body length), if plausible for the direction.
fn header(frontend: bool, bytes: &[u8]) -> Option<(u8, u64)> {
    let kind = *bytes.first()?;
    if kind == 0 {
        // The startup family: Int32 length (with the 0 high byte just read), Int32 code.
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let code = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        let known = matches!(
            code,
            STARTUP_V3 | SSL_REQUEST | GSS_REQUEST | CANCEL_REQUEST
        ) || code >> 16 == 3;
        // `then`, not `then_some`: the length is only subtracted from once it is known
        // to be large enough (a garbage length under 8 underflowed here).
        return (frontend && known && (8..=10_000).contains(&len)).then(|| (0, u64::from(len) - 8));
    }
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?);
    let typed = if frontend {
        frontend_type(kind).is_some()
    } else {
        BACKEND_TYPES.contains(&kind)
    };
    let sane = (4..=MAX_MESSAGE).contains(&len) && (kind != b'Z' || len == 5);
    (typed && sane).then(|| (kind, u64::from(len) - 4))
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
