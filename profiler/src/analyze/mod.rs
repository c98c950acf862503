//! `analyze`: the verdicts, judged on plain typed values (interned stacks, ledgers,
//! snapshots of blocked threads); nothing here touches the kernel.
//!
//! - [`memory`]: leak, allocator retention, mapped growth or no growth;
//! - [`waits`]: what threads were blocked on, and whether a process is stalled.
pub mod frames;
pub mod memory;
pub mod target;
pub mod waits;

pub use target::Target;
