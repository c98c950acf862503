//! The memory analysis: per process, from the ledger's growth by stack, the live
//! allocations and resident memory, the verdict ([`verdict::judge`]).
pub mod report;
pub mod verdict;

pub use report::{report, MemoryWindow};
