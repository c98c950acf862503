//! Protocol framers of the request ledger: from the bytes a connection carried, which
//! requests began and which were answered.
//!
//! One small module per protocol, each a pure state machine per connection direction
//! that is fed transfers as the kernel hands them over ([`Transfer`]: a captured prefix
//! of a `read`/`write`, and how long the transfer really was), in any split: a message
//! may span transfers, one transfer may hold many messages, and the uncaptured tail of a
//! transfer is skipped by count. Garbage, truncation or a gap inside a header never
//! panics: the framer counts the bytes it could not frame and looks for a message
//! boundary at the start of a later transfer.
//!
//! The output is protocol metadata only: an HTTP method and a path without its query,
//! a gRPC method, a status code, a PostgreSQL message type and the first SQL keyword.
//! Never payload, header values, SQL text or parameters.
pub mod classify;
pub mod framing;
pub mod http1;
pub mod http2;
mod huffman;
pub mod ledger;
pub mod postgres;
mod text;
pub mod verdict;

#[cfg(test)]
mod captured_tests;

/// One transfer of one direction of a connection: the bytes the probe captured (a
/// prefix) and the length of the whole transfer (`len >= bytes.len()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer<'a> {
    pub bytes: &'a [u8],
    pub len: u64,
}

impl<'a> Transfer<'a> {
    /// A transfer captured whole.
    pub fn whole(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            len: bytes.len() as u64,
        }
    }

    /// Bytes of the transfer the probe did not capture.
    pub fn missing(&self) -> u64 {
        self.len.saturating_sub(self.bytes.len() as u64)
    }
}

/// What a framer could not frame, for the report's "lost" counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramingLoss {
    /// Bytes skipped while out of step with the protocol.
    pub unframed_bytes: u64,
    /// Times the framer lost its place (garbage, or a gap inside a header).
    pub desyncs: u64,
}

impl FramingLoss {
    pub(crate) fn desync(&mut self, bytes: u64) {
        self.desyncs += 1;
        self.unframed_bytes += bytes;
    }
}

/// The longest incomplete header a framer keeps between transfers; anything longer is
/// not a header of the protocol and loses sync.
pub(crate) const MAX_PARTIAL: usize = 8 * 1024;
