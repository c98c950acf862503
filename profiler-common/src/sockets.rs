//! The socket records and maps of the connection ledger: what one transfer says, how
//! much of it is copied, and the kernel-side totals of connections counted only.
//! Re-exported at the crate root, like every shared type.

/// What a socket record ([`EventKind::Sock`](crate::EventKind::Sock)) says happened,
/// in [`SockEvent::op`].
pub mod sock_op {
    /// `accept`/`accept4` returned `SockEvent::ret` (the new fd) on listener `fd`.
    pub const ACCEPT: u32 = 1;
    /// `connect(fd, addr)` succeeded or is in progress; `addr` holds the peer.
    pub const CONNECT: u32 = 2;
    /// `read`/`readv`/`recvfrom`/`recvmsg` returned `ret` bytes.
    pub const READ: u32 = 3;
    /// `write`/`writev`/`sendto`/`sendmsg` returned `ret` bytes.
    pub const WRITE: u32 = 4;
    /// `close(fd)` of a watched socket. For a count-only socket
    /// ([`SOCK_CAPTURE_NONE`](super::SOCK_CAPTURE_NONE)), `addr` holds its
    /// [`SockCounted`](super::SockCounted) totals as three little-endian u64s (read,
    /// written, last transfer's ktime), so that bytes counted since userspace last read
    /// the map are not lost with the entry.
    pub const CLOSE: u32 = 5;
    /// `close(fd)` of a socket whose exchanges the kernel counted
    /// ([`SOCK_CAPTURE_EXCHANGES_IN`](super::SOCK_CAPTURE_EXCHANGES_IN) or `_OUT`):
    /// `addr` holds [`ExchangeClose`](super::ExchangeClose) (requests, answers, last
    /// answer's ktime), so that exchanges since userspace last read the map are not lost.
    pub const CLOSE_EXCHANGES: u32 = 6;
}

/// Bytes of a transfer a socket record carries when userspace did not ask for more:
/// enough for an HTTP/1 request or status line, a PostgreSQL message header and the
/// first SQL keyword, or a few HTTP/2 frame headers.
pub const SOCK_CAPTURE_DEFAULT: u32 = 512;
/// The most bytes of one transfer a socket record carries (connections known to speak
/// HTTP/2, whose frames coalesce).
pub const SOCK_CAPTURE_MAX: u32 = 4096;
/// Capture length of a count-only socket (TLS, or bytes no framer knows): its
/// transfers send no record; the kernel adds their bytes to `SOCK_COUNTED`, which
/// userspace reads at the window's end. A storm on such a connection then costs one
/// map update per transfer instead of a ring-buffer record with a copy of its bytes.
pub const SOCK_CAPTURE_NONE: u32 = 0;
/// Capture value of an HTTP/1 connection whose request/answer exchanges the kernel
/// counts, the process reading the requests (a server's connection): no record per
/// transfer once counting starts. Userspace asks for it after framing a few plain
/// exchanges itself; the kernel keeps sending records until it sees the process turn
/// from answering to reading a new request, and counts from that request on, so that
/// userspace has framed everything before it. Each later turn from answers to requests
/// is a request (its first bytes kept for the route), each turn back an answer.
pub const SOCK_CAPTURE_EXCHANGES_IN: u32 = u32::MAX;
/// As [`SOCK_CAPTURE_EXCHANGES_IN`], the process writing the requests (a client's).
pub const SOCK_CAPTURE_EXCHANGES_OUT: u32 = u32::MAX - 1;
/// Bytes of the latest request the kernel keeps for a counted connection: enough for a
/// method and a path (userspace keeps no more than the path without its query).
pub const EXCHANGE_ROUTE_BYTES: usize = 64;

// The exchange values sit above any capture length, and the kernel's bounded copy of
// a route masks its length with `EXCHANGE_ROUTE_BYTES - 1`.
const _: () = assert!(SOCK_CAPTURE_EXCHANGES_OUT > SOCK_CAPTURE_MAX);
const _: () = assert!(EXCHANGE_ROUTE_BYTES.is_power_of_two());

/// Value of `SOCK_EXCHANGES`: the kernel's count of one HTTP/1 connection's exchanges.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockExchanges {
    pub read: u64,
    pub written: u64,
    /// ktime of the last transfer.
    pub last_ns: u64,
    /// Turns to requests and to answers since counting began.
    pub requests: u64,
    pub answers: u64,
    /// ktime the request now in flight began; 0: none in flight.
    pub pending_since_ns: u64,
    /// ktime of the last answer; 0: none yet.
    pub last_answer_ns: u64,
    /// The direction of the last transfer ([`sock_op::READ`] or [`sock_op::WRITE`]).
    pub last_op: u32,
    /// 1 once counting began (a turn from answer to request was seen), else 0.
    pub counting: u32,
    /// How many bytes of `route` the latest request filled.
    pub route_len: u32,
    pub _pad: u32,
    /// The first bytes of the latest request (its request line).
    pub route: [u8; EXCHANGE_ROUTE_BYTES],
}

impl Default for SockExchanges {
    fn default() -> Self {
        SockExchanges {
            read: 0,
            written: 0,
            last_ns: 0,
            requests: 0,
            answers: 0,
            pending_since_ns: 0,
            last_answer_ns: 0,
            last_op: 0,
            counting: 0,
            route_len: 0,
            _pad: 0,
            route: [0; EXCHANGE_ROUTE_BYTES],
        }
    }
}

/// What a [`sock_op::CLOSE_EXCHANGES`] record carries in `addr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeClose {
    pub requests: u64,
    pub answers: u64,
    pub last_answer_ns: u64,
}

impl ExchangeClose {
    pub fn to_addr(self) -> [u8; 24] {
        words_to_addr([self.requests, self.answers, self.last_answer_ns])
    }

    pub fn from_addr(addr: &[u8; 24]) -> Self {
        let [requests, answers, last_answer_ns] = addr_to_words(addr);
        ExchangeClose {
            requests,
            answers,
            last_answer_ns,
        }
    }
}

fn words_to_addr(words: [u64; 3]) -> [u8; 24] {
    let mut addr = [0u8; 24];
    for (i, w) in words.iter().enumerate() {
        addr[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    addr
}

fn addr_to_words(addr: &[u8; 24]) -> [u64; 3] {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&addr[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    [word(0), word(1), word(2)]
}

/// Value of `SOCK_COUNTED`: the bytes of a count-only socket since it became one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockCounted {
    pub read: u64,
    pub written: u64,
    /// ktime of the last transfer.
    pub last_ns: u64,
}

impl SockCounted {
    /// The totals as a count-only socket's close record carries them in `addr`.
    pub fn to_addr(self) -> [u8; 24] {
        words_to_addr([self.read, self.written, self.last_ns])
    }

    /// The inverse of [`SockCounted::to_addr`].
    pub fn from_addr(addr: &[u8; 24]) -> Self {
        let [read, written, last_ns] = addr_to_words(addr);
        SockCounted {
            read,
            written,
            last_ns,
        }
    }
}

/// Body of an [`EventKind::Sock`](crate::EventKind::Sock) record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockEvent {
    /// The socket: the connection (read, write, close, connect) or the listener (accept).
    pub fd: i32,
    /// A [`sock_op`] value.
    pub op: u32,
    /// The syscall's return value: bytes transferred, or the accepted fd.
    pub ret: i64,
    /// Bytes of the transfer that follow the body (a prefix, at most
    /// [`SOCK_CAPTURE_MAX`]).
    pub captured: u32,
    pub _pad: u32,
    /// `connect`: the first 24 bytes of the `sockaddr` (family, port, address), else 0.
    pub addr: [u8; 24],
}

/// Key of the watched sockets (map `SOCK_FDS`): a target's socket descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: u32,
}
