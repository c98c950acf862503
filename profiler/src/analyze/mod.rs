//! `analyze`: the verdicts, judged on plain typed values (interned stacks, ledgers,
//! snapshots of blocked threads); nothing here touches the kernel.
//!
//! - [`memory`]: leak, allocator retention, mapped growth or no growth;
//! - [`waits`]: what threads were blocked on, and whether a process is stalled;
//! - [`requests`]: protocol framers of the request ledger (requests and answers).
pub mod capture;
pub mod frames;
pub mod memory;
pub mod requests;
pub mod target;
pub mod waits;

pub use capture::CaptureState;
pub use target::Target;
