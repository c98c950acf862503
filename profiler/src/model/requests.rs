//! The request ledger's contracts: what the framers learnt from a connection's bytes
//! (protocol metadata only, never payload), and the requests verdict built from it.
use serde::{Deserialize, Serialize};

/// Which way a connection goes, as the process sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConnRole {
    /// Accepted on the listener with this local port: the process serves requests.
    Inbound { port: u16 },
    /// Connected to this peer (`127.0.0.1:5432`): the process is a client.
    Outbound { peer: String },
}

/// One thing a connection did, as metadata: what `CaptureRecord::Conn` carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnEvent {
    /// The connection exists: accepted, connected, or found open in /proc at attach
    /// (`seen_open`: it began before the window).
    Opened {
        role: ConnRole,
        seen_open: bool,
    },
    /// The first bytes told its protocol (`http1`, `http2`, `postgres`, `tls`).
    Protocol {
        name: String,
    },
    /// A request began: HTTP/1 (stream 0, answered in order) or an HTTP/2 stream.
    /// `route` is `GET /orders` or a gRPC method path, never a query or header value.
    Request {
        stream: u32,
        route: String,
    },
    /// A request was answered (HTTP/1: the oldest one of the connection).
    Answered {
        stream: u32,
    },
    /// HTTP/1 requests answered whose request lines the profiler did not read: the
    /// kernel counted the exchanges of this connection.
    AnsweredUnseen {
        count: u64,
    },
    /// PostgreSQL: the client sent a query whose first keyword is this (`BEGIN`).
    Query {
        keyword: String,
    },
    /// PostgreSQL: the stack of the thread that wrote the `BEGIN` just framed (the
    /// kernel sends one per connection per 100 ms at most).
    TransactionBegun {
        stack: super::StackRef,
    },
    /// PostgreSQL: ReadyForQuery, with the transaction status byte (`I`, `T`, `E`).
    Ready {
        status: char,
    },
    /// Bytes moved (reads from the peer, writes to it).
    Bytes {
        read: u64,
        written: u64,
    },
    /// Bytes the framers could not frame (a gap, garbage, beyond the capture).
    Unframed {
        bytes: u64,
    },
    Closed,
}

/// The connections of a process to one outbound peer, at the end of the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerPool {
    pub peer: String,
    /// `postgres` when its bytes told so (or a pool's silence left only the port).
    pub protocol: Option<String>,
    pub open: usize,
    /// Open connections that carried no byte in the whole window.
    pub silent: usize,
    /// Connections whose last ReadyForQuery said "in transaction", and the longest
    /// time one has been so (ns), when the probes saw it.
    pub in_transaction: usize,
    pub in_transaction_ns: u64,
    /// The shortest time one of them has been in its transaction (ns); 0 when none.
    pub in_transaction_least_ns: u64,
    /// The code that began the transactions open now, where the probes saw the
    /// `BEGIN` written, most connections first.
    pub begun_under: Vec<TxOrigin>,
}

/// A function that began some of a pool's open transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TxOrigin {
    /// The innermost frame of the application's own code on the stack that wrote
    /// `BEGIN` (for JavaScript, outside `node_modules` and Node's own modules).
    pub function: String,
    pub connections: usize,
}

/// Requests on one listener at the end of the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerRequests {
    pub port: u16,
    /// Requests read and not answered, and the oldest one's age (ns).
    pub in_flight: usize,
    pub oldest_ns: u64,
    /// Requests answered in the window.
    pub answered: u64,
    /// Requests in flight at the end of each second of the window.
    pub in_flight_series: Vec<usize>,
}

/// The verdict on requests that never get an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestStall {
    /// The listener whose requests pile up, and the routes that get no answer.
    pub port: u16,
    pub routes: Vec<String>,
    /// Requests (HTTP/1 requests, HTTP/2 and gRPC streams) read and not answered.
    pub unanswered: usize,
    /// `grpc streams`, `http/2 streams` or `requests`.
    pub unit: String,
    pub oldest_ns: u64,
    /// How long none of these routes has been answered (ns).
    pub none_answered_ns: u64,
    /// What was answered meanwhile (`:8080`, `GET /health on :3000`) and how often.
    pub while_answered: Option<(String, u64)>,
    /// The outbound pool whose every connection stayed silent, if any.
    pub pool: Option<PeerPool>,
    /// Seconds the probes watched.
    pub window_ns: u64,
}
