//! HTTP/2 framing, gRPC included: a HEADERS frame on a new client stream is a request;
//! the server's END_STREAM (on HEADERS or DATA) or either side's RST_STREAM ends it.
//!
//! Frames are a 9-byte header (24-bit length, type, flags, 31-bit stream) and a payload
//! skipped by count, so one transfer may hold many frames and a frame may span many
//! transfers. The header block is not decoded in full (that needs HPACK's dynamic table
//! from the start of the connection); [`hpack`] only reads what a block shows literally:
//! the `:path` of a request (a gRPC method) and a response's `:status`.
use std::collections::BTreeMap;

use super::{FramingLoss, Transfer};

mod hpack;

/// What the framer saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// The client's connection preface.
    Preface,
    /// HEADERS opening a new client stream: a request. `path` is `:path` without its
    /// query (for gRPC, `/package.Service/Method`) when the block shows it.
    Request { stream: u32, path: Option<String> },
    /// The server ended the stream: the request is answered. `status` is the
    /// response's `:status` when its block showed it.
    Answered { stream: u32, status: Option<u16> },
    /// A stream reset, by the client (a cancel) or the server, with its error code.
    Reset {
        stream: u32,
        by_client: bool,
        code: u32,
    },
    /// GOAWAY: streams above `last_stream` will not be processed.
    GoAway { last_stream: u32, code: u32 },
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;
/// How much of a HEADERS payload is read for `:path` / `:status`.
const BLOCK_PREFIX: usize = 256;
/// SETTINGS_MAX_FRAME_SIZE until a peer's SETTINGS says otherwise, and its limit.
const DEFAULT_MAX_FRAME: u32 = 16_384;
const LARGEST_MAX_FRAME: u32 = (1 << 24) - 1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// Open streams remembered per connection; the oldest are forgotten beyond this.
const MAX_OPEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; 9]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether the header obeys the frame's rules (RFC 9113 §6) and the receiver's
    /// `max_len`; `known` also asks for a frame type this framer knows (used to find
    /// the place again after a loss).
    fn plausible(&self, known: bool, max_len: u32) -> bool {
        let on_stream = self.stream != 0;
        if self.len > max_len {
            return false;
        }
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => !on_stream && self.len.is_multiple_of(6),
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => !known,
        }
    }

    /// Payload bytes to read before the rest is skipped.
    fn want(&self) -> usize {
        let n = match self.kind {
            HEADERS => BLOCK_PREFIX,
            RST_STREAM => 4,
            GOAWAY => 8,
            SETTINGS => 6 * 8,
            _ => 0,
        };
        n.min(self.len as usize)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The client's first bytes: the preface, if the connection was seen from its start.
    Start,
    Header,
    /// Inside a payload: `remaining` bytes to go; `acted` once the frame's wanted
    /// prefix was read and acted on.
    Payload {
        header: FrameHeader,
        remaining: u64,
        acted: bool,
    },
    Lost,
}

#[derive(Debug)]
struct Half {
    state: State,
    partial: Vec<u8>,
}

/// Frames both directions of one HTTP/2 connection.
#[derive(Debug)]
pub struct H2Connection {
    client: Half,
    server: Half,
    /// The highest client stream that opened with HEADERS: a higher one is new.
    last_client_stream: u32,
    /// Open streams and the response status seen so far.
    open: BTreeMap<u32, Option<u16>>,
    /// The largest frame the client, and the server, may send: what the other side's
    /// SETTINGS allowed.
    max_frame: [u32; 2],
    pub loss: FramingLoss,
}

impl Default for H2Connection {
    fn default() -> Self {
        Self {
            client: Half {
                state: State::Start,
                partial: Vec::new(),
            },
            server: Half {
                state: State::Header,
                partial: Vec::new(),
            },
            last_client_stream: 0,
            open: BTreeMap::new(),
            max_frame: [DEFAULT_MAX_FRAME; 2],
            loss: FramingLoss::default(),
        }
    }
}

impl H2Connection {
    /// Bytes the client sent.
    pub fn feed_client(&mut self, t: Transfer<'_>, out: &mut Vec<H2Event>) {
        self.feed(true, t, out);
    }

    /// Bytes the server sent.
    pub fn feed_server(&mut self, t: Transfer<'_>, out: &mut Vec<H2Event>) {
        self.feed(false, t, out);
    }

    /// The largest frame this side may send.
    fn max_len(&self, client: bool) -> u32 {
        self.max_frame[usize::from(client)]
    }

    fn half(&mut self, client: bool) -> &mut Half {
        if client {
            &mut self.client
        } else {
            &mut self.server
        }
    }

    fn feed(&mut self, client: bool, t: Transfer<'_>, out: &mut Vec<H2Event>) {
        let max_len = self.max_len(client);
        let half = self.half(client);
        if half.state == State::Lost {
            let header: Option<&[u8; 9]> = t.bytes.get(..9).and_then(|h| h.try_into().ok());
            let frame = header.is_some_and(|h| FrameHeader::parse(h).plausible(true, max_len));
            if t.bytes.starts_with(PREFACE) || frame {
                half.state = if client { State::Start } else { State::Header };
                half.partial.clear();
            }
        }
        let mut i = 0;
        while i < t.bytes.len() {
            let half = self.half(client);
            let avail = t.bytes.len() - i;
            match half.state {
                State::Lost => {
                    self.loss.unframed_bytes += avail as u64;
                    return;
                }
                State::Start => {
                    let seen = half.partial.len();
                    let take = (PREFACE.len() - seen).min(avail);
                    if t.bytes[i..i + take] != PREFACE[seen..seen + take] {
                        if seen == 0 {
                            // Attached after the preface: frames from here.
                            half.state = State::Header;
                            continue;
                        }
                        self.lose(client, avail as u64);
                        break;
                    }
                    half.partial.extend_from_slice(&t.bytes[i..i + take]);
                    i += take;
                    if half.partial.len() == PREFACE.len() {
                        half.partial.clear();
                        half.state = State::Header;
                        out.push(H2Event::Preface);
                    }
                }
                State::Header => {
                    let take = (9 - half.partial.len()).min(avail);
                    half.partial.extend_from_slice(&t.bytes[i..i + take]);
                    i += take;
                    let Ok(bytes) = <&[u8; 9]>::try_from(half.partial.as_slice()) else {
                        break;
                    };
                    let header = FrameHeader::parse(bytes);
                    half.partial.clear();
                    if !header.plausible(false, max_len) {
                        self.lose(client, (t.bytes.len() - i) as u64);
                        break;
                    }
                    half.state = State::Payload {
                        header,
                        remaining: u64::from(header.len),
                        acted: false,
                    };
                    self.advance(client, out);
                }
                State::Payload {
                    header,
                    remaining,
                    acted,
                } => {
                    let take = if acted {
                        usize::try_from(remaining).unwrap_or(usize::MAX).min(avail)
                    } else {
                        let take = (header.want() - half.partial.len()).min(avail);
                        half.partial.extend_from_slice(&t.bytes[i..i + take]);
                        take
                    };
                    i += take;
                    half.state = State::Payload {
                        header,
                        remaining: remaining - take as u64,
                        acted,
                    };
                    self.advance(client, out);
                }
            }
        }
        self.gap(client, t.missing(), out);
    }

    /// Act on the frame once its wanted prefix is in; expect a header once its payload
    /// is over.
    fn advance(&mut self, client: bool, out: &mut Vec<H2Event>) {
        let half = self.half(client);
        let State::Payload {
            header,
            remaining,
            acted,
        } = half.state
        else {
            return;
        };
        if !acted && half.partial.len() == header.want() {
            self.act(client, header, out);
        }
        if remaining == 0 {
            let half = self.half(client);
            half.state = State::Header;
            half.partial.clear();
        }
    }

    /// Act on the frame with the payload prefix in `partial` (maybe cut short by the
    /// capture), once.
    fn act(&mut self, client: bool, header: FrameHeader, out: &mut Vec<H2Event>) {
        let half = self.half(client);
        let prefix = std::mem::take(&mut half.partial);
        if let State::Payload { acted, .. } = &mut half.state {
            *acted = true;
        }
        let stream = header.stream;
        let ends = header.flags & END_STREAM != 0;
        match header.kind {
            HEADERS => {
                let block = header_block(header.flags, &prefix);
                if client {
                    if stream % 2 == 1 && stream > self.last_client_stream {
                        self.last_client_stream = stream;
                        self.remember(stream, None);
                        out.push(H2Event::Request {
                            stream,
                            path: block.and_then(hpack::path),
                        });
                    }
                } else {
                    let status = block.and_then(hpack::status);
                    if ends {
                        let seen = self.open.remove(&stream).flatten();
                        out.push(H2Event::Answered {
                            stream,
                            status: status.or(seen),
                        });
                    } else if status.is_some() {
                        self.remember(stream, status);
                    }
                }
            }
            DATA if ends && !client => {
                let status = self.open.remove(&stream).flatten();
                out.push(H2Event::Answered { stream, status });
            }
            RST_STREAM if prefix.len() == 4 => {
                self.open.remove(&stream);
                out.push(H2Event::Reset {
                    stream,
                    by_client: client,
                    code: be32(&prefix[..4]),
                });
            }
            // Settings a side sends bound the frames the other side may send.
            SETTINGS if header.flags & 0x1 == 0 => {
                for param in prefix.chunks_exact(6) {
                    let value = be32(&param[2..6]);
                    if u16::from_be_bytes([param[0], param[1]]) == SETTINGS_MAX_FRAME_SIZE
                        && (DEFAULT_MAX_FRAME..=LARGEST_MAX_FRAME).contains(&value)
                    {
                        self.max_frame[usize::from(!client)] = value;
                    }
                }
            }
            GOAWAY if prefix.len() == 8 => out.push(H2Event::GoAway {
                last_stream: be32(&prefix[..4]) & 0x7fff_ffff,
                code: be32(&prefix[4..8]),
            }),
            _ => {}
        }
    }

    /// Remember an open stream (and its status), forgetting the oldest beyond the bound.
    fn remember(&mut self, stream: u32, status: Option<u16>) {
        self.open.insert(stream, status);
        while self.open.len() > MAX_OPEN {
            self.open.pop_first();
        }
    }

    /// Bytes of a transfer the probe did not capture: a payload passes by count (the
    /// frame acts on what was captured of its prefix), anything else loses the place.
    fn gap(&mut self, client: bool, missing: u64, out: &mut Vec<H2Event>) {
        if missing == 0 {
            return;
        }
        match self.half(client).state {
            State::Payload {
                header,
                remaining,
                acted,
            } if missing <= remaining => {
                if !acted {
                    self.act(client, header, out);
                }
                if let State::Payload { remaining, .. } = &mut self.half(client).state {
                    *remaining -= missing;
                }
                self.advance(client, out);
            }
            State::Lost => self.loss.unframed_bytes += missing,
            _ => self.lose(client, missing),
        }
    }

    fn lose(&mut self, client: bool, bytes: u64) {
        let half = self.half(client);
        half.state = State::Lost;
        half.partial.clear();
        self.loss.desync(bytes);
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The header block fragment of a HEADERS payload prefix: after the pad length
/// (PADDED) and the stream dependency and weight (PRIORITY).
fn header_block(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    if flags & PADDED != 0 {
        at += 1;
    }
    if flags & PRIORITY_FLAG != 0 {
        at += 5;
    }
    payload.get(at..)
}

#[cfg(test)]
#[path = "http2_tests.rs"]
mod tests;
