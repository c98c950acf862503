//! HTTP/1.x framing: a request line in, a status line out.
//!
//! Each direction is a small state machine over lines and bodies: the request or status
//! line, the header lines (only `Content-Length` and `Transfer-Encoding` are read, and
//! only to find where the body ends), then the body by length, in chunks, or (for a
//! response without either) until the connection closes. Keep-alive and pipelining
//! follow from that: the next message starts where the body ends, and responses answer
//! requests in order (a `HEAD` request's response has no body).
use std::collections::VecDeque;

use super::{text, FramingLoss, Transfer, MAX_PARTIAL};

/// What the framer saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http1Event {
    /// A request line: the method (from a fixed list, else `OTHER`) and the path
    /// without its query.
    Request { method: &'static str, path: String },
    /// A final status line (1xx interim responses are not answers, except 101).
    Response { status: u16 },
}

/// Request methods reported by name.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line.
    Size,
    /// Chunk data still to pass, then its CRLF.
    Data(u64),
    /// Trailer lines after the last chunk, until a blank line.
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a request or status line.
    Start,
    /// Inside the header lines.
    Headers,
    Body(u64),
    Chunked(Chunk),
    /// A response without length: the body ends when the connection does.
    UntilClose,
    /// After `101 Switching Protocols`: not HTTP/1 any more.
    Switched,
    /// Lost the place: wait for a transfer that starts a message.
    Lost,
}

/// What the headers of the current message said about its body.
#[derive(Clone, Copy, Debug, Default)]
struct Head {
    content_length: Option<u64>,
    chunked: bool,
    /// The status of a response; 0 for a request.
    status: u16,
    /// A response to `HEAD`: no body whatever the headers say.
    no_body: bool,
}

/// One direction of an HTTP/1 connection.
#[derive(Debug)]
struct Half {
    requests: bool,
    state: State,
    head: Head,
    partial: Vec<u8>,
}

impl Half {
    fn new(requests: bool) -> Self {
        Self {
            requests,
            state: State::Start,
            head: Head::default(),
            partial: Vec::new(),
        }
    }

    /// Whether an incomplete first line can still become a request or status line.
    fn could_start(&self, line: &[u8]) -> bool {
        let line = trim(line);
        if self.requests {
            let method = line.iter().take_while(|b| b.is_ascii_uppercase()).count();
            method <= 16 && (method == line.len() || line[method] == b' ')
        } else {
            let n = line.len().min(7);
            line[..n] == b"HTTP/1."[..n]
        }
    }

    /// Whether `bytes` can begin a message of this direction (to find our place again).
    fn starts_message(&self, bytes: &[u8]) -> bool {
        if self.requests {
            let method: Vec<u8> = bytes
                .iter()
                .take_while(|b| b.is_ascii_uppercase())
                .copied()
                .collect();
            !method.is_empty() && method.len() <= 16 && bytes.get(method.len()) == Some(&b' ')
        } else {
            bytes.starts_with(b"HTTP/1.")
        }
    }
}

/// Frames both directions of one HTTP/1.x connection.
#[derive(Debug)]
pub struct Http1Connection {
    request: Half,
    response: Half,
    /// Methods of requests not answered yet, oldest first (pipelining).
    pending: VecDeque<&'static str>,
    pub loss: FramingLoss,
}

impl Default for Http1Connection {
    fn default() -> Self {
        Self {
            request: Half::new(true),
            response: Half::new(false),
            pending: VecDeque::new(),
            loss: FramingLoss::default(),
        }
    }
}

impl Http1Connection {
    /// Bytes the client sent (requests).
    pub fn feed_request(&mut self, t: Transfer<'_>, out: &mut Vec<Http1Event>) {
        self.feed(true, t, out);
    }

    /// Bytes the server sent (responses).
    pub fn feed_response(&mut self, t: Transfer<'_>, out: &mut Vec<Http1Event>) {
        self.feed(false, t, out);
    }

    /// Between exchanges: both directions at a message start, every request answered,
    /// and the place never lost. Only such a connection can have its next exchanges
    /// counted by the kernel from the turns of direction alone.
    pub fn at_rest(&self) -> bool {
        self.request.state == State::Start
            && self.response.state == State::Start
            && self.request.partial.is_empty()
            && self.response.partial.is_empty()
            && self.pending.is_empty()
            && self.loss.desyncs == 0
    }

    /// Requests read and not answered yet (more than one: the client pipelines).
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn feed(&mut self, requests: bool, t: Transfer<'_>, out: &mut Vec<Http1Event>) {
        let half = if requests {
            &mut self.request
        } else {
            &mut self.response
        };
        if half.state == State::Lost && half.starts_message(t.bytes) {
            half.state = State::Start;
            half.partial.clear();
        }
        let mut i = 0;
        while i < t.bytes.len() {
            let half = if requests {
                &mut self.request
            } else {
                &mut self.response
            };
            match half.state {
                State::Body(n) => {
                    let take = n.min((t.bytes.len() - i) as u64);
                    i += take as usize;
                    half.state = if take == n {
                        State::Start
                    } else {
                        State::Body(n - take)
                    };
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = n.min((t.bytes.len() - i) as u64);
                    i += take as usize;
                    half.state = State::Chunked(Chunk::Data(n - take));
                    if take == n {
                        // The CRLF after the data is read as an empty line.
                        half.state = State::Chunked(Chunk::Size);
                        half.partial.clear();
                    }
                }
                State::UntilClose | State::Switched => return,
                State::Lost => {
                    self.loss.unframed_bytes += (t.bytes.len() - i) as u64;
                    return;
                }
                State::Start | State::Headers | State::Chunked(_) => {
                    let Some(nl) = t.bytes[i..].iter().position(|&b| b == b'\n') else {
                        half.partial.extend_from_slice(&t.bytes[i..]);
                        let implausible =
                            half.state == State::Start && !half.could_start(&half.partial);
                        if half.partial.len() > MAX_PARTIAL || implausible {
                            let n = half.partial.len() as u64;
                            self.lose(requests, n);
                        }
                        break;
                    };
                    // A line within one transfer (the usual case) is framed where it
                    // lies; only a line split across transfers is joined in a buffer.
                    let raw = &t.bytes[i..i + nl];
                    i += nl + 1;
                    let joined;
                    let mut line = if half.partial.is_empty() {
                        raw
                    } else {
                        half.partial.extend_from_slice(raw);
                        joined = std::mem::take(&mut half.partial);
                        &joined[..]
                    };
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    if line.len() > MAX_PARTIAL || !self.line(requests, line, out) {
                        let rest = (t.bytes.len() - i) as u64;
                        self.lose(requests, rest);
                        break;
                    }
                }
            }
        }
        self.gap(requests, t.missing());
    }

    /// Bytes of a transfer that were not captured: a body passes by count, anything
    /// else lost its place.
    fn gap(&mut self, requests: bool, missing: u64) {
        if missing == 0 {
            return;
        }
        let half = if requests {
            &mut self.request
        } else {
            &mut self.response
        };
        match half.state {
            State::Body(n) if missing <= n => {
                half.state = if missing == n {
                    State::Start
                } else {
                    State::Body(n - missing)
                };
            }
            State::Chunked(Chunk::Data(n)) if missing < n => {
                half.state = State::Chunked(Chunk::Data(n - missing));
            }
            State::UntilClose | State::Switched => {}
            State::Lost => self.loss.unframed_bytes += missing,
            _ => self.lose(requests, missing),
        }
    }

    fn lose(&mut self, requests: bool, bytes: u64) {
        let half = if requests {
            &mut self.request
        } else {
            &mut self.response
        };
        half.state = State::Lost;
        half.partial.clear();
        self.loss.desync(bytes);
    }

    /// One complete line of a line state; false when it is not HTTP/1.
    fn line(&mut self, requests: bool, line: &[u8], out: &mut Vec<Http1Event>) -> bool {
        let half = if requests {
            &mut self.request
        } else {
            &mut self.response
        };
        match half.state {
            // Blank lines before a request line are allowed (RFC 9112 §2.2).
            State::Start if line.is_empty() => true,
            State::Start if requests => {
                let Some((method, path)) = request_line(line) else {
                    return false;
                };
                half.head = Head::default();
                half.state = State::Headers;
                self.pending.push_back(method);
                out.push(Http1Event::Request { method, path });
                true
            }
            State::Start => {
                let Some(status) = status_line(line) else {
                    return false;
                };
                half.head = Head {
                    status,
                    ..Head::default()
                };
                half.state = State::Headers;
                true
            }
            State::Headers if line.is_empty() => {
                self.end_of_head(requests, out);
                true
            }
            State::Headers => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    return false;
                };
                let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
                if name.eq_ignore_ascii_case(b"content-length") {
                    let Some(n) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                    else {
                        return false;
                    };
                    half.head.content_length = Some(n);
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    half.head.chunked = value
                        .split(|&b| b == b',')
                        .any(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
                }
                true
            }
            State::Chunked(Chunk::Size) if line.is_empty() => true,
            State::Chunked(Chunk::Size) => {
                let hex = line
                    .split(|&b| b == b';')
                    .next()
                    .map(trim)
                    .unwrap_or_default();
                let Some(size) = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                else {
                    return false;
                };
                half.state = State::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                true
            }
            State::Chunked(Chunk::Trailers) => {
                if line.is_empty() {
                    half.state = State::Start;
                }
                true
            }
            _ => false,
        }
    }

    /// The blank line after the headers: emit a response, decide how the body ends.
    fn end_of_head(&mut self, requests: bool, out: &mut Vec<Http1Event>) {
        let head = if requests {
            self.request.head
        } else {
            self.response.head
        };
        let mut no_body = head.no_body;
        if !requests {
            let status = head.status;
            if (100..200).contains(&status) && status != 101 {
                // Interim: the final response is still to come.
                self.response.state = State::Start;
                return;
            }
            let method = self.pending.pop_front();
            no_body |= method == Some("HEAD") || status == 204 || status == 304;
            out.push(Http1Event::Response { status });
            if status == 101 {
                self.response.state = State::Switched;
                self.request.state = State::Switched;
                return;
            }
        }
        let half = if requests {
            &mut self.request
        } else {
            &mut self.response
        };
        half.state = if no_body {
            State::Start
        } else if head.chunked {
            State::Chunked(Chunk::Size)
        } else {
            match head.content_length {
                Some(0) => State::Start,
                Some(n) => State::Body(n),
                None if requests => State::Start,
                None => State::UntilClose,
            }
        };
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// `GET /path?q HTTP/1.1` → (`GET`, `/path`).
fn request_line(line: &[u8]) -> Option<(&'static str, String)> {
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with(b"HTTP/1.") {
        return None;
    }
    Some((method_name(method)?, text::path_of(target)))
}

/// A request method's name from the fixed list (`OTHER` for another token of capital
/// letters); None when `method` is no such token.
fn method_name(method: &[u8]) -> Option<&'static str> {
    if method.is_empty() || method.len() > 16 || !method.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    Some(
        METHODS
            .iter()
            .find(|m| m.as_bytes() == method)
            .copied()
            .unwrap_or("OTHER"),
    )
}

/// The route (`POST /orders`) of the request whose first bytes are `prefix`, which may
/// end inside the request line: a cut path ends in `…`. None when the bytes do not
/// start a request line.
pub fn route_of_prefix(prefix: &[u8]) -> Option<String> {
    if let Some(nl) = prefix.iter().position(|&b| b == b'\n') {
        let line = &prefix[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (method, path) = request_line(line)?;
        return Some(format!("{method} {path}"));
    }
    let mut parts = prefix.splitn(2, |&b| b == b' ');
    let (method, rest) = (parts.next()?, parts.next()?);
    let name = method_name(method)?;
    let (target, whole) = match rest.iter().position(|&b| b == b' ') {
        Some(end) => (&rest[..end], true),
        None => (rest, false),
    };
    if !target.starts_with(b"/") {
        return None;
    }
    let path = text::path_of(target);
    let cut = !whole && !target.iter().any(|&b| b == b'?' || b == b'#');
    Some(format!("{name} {path}{}", if cut { "…" } else { "" }))
}

/// `HTTP/1.1 200 OK` → 200.
fn status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "http1_tests.rs"]
mod tests;
