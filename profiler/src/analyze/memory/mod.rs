//! The memory analysis: per process, from the ledger's growth by stack, the live
//! allocations and resident memory, the verdict ([`verdict::judge`]). Whether live
//! allocations really grow is [`growth`]'s decision, on their age, their [`trend`]
//! over the daemon's intervals ([`series`]) and the net growth.
pub mod growth;
pub mod oom;
pub mod report;
pub mod series;
pub mod trend;
pub mod verdict;

pub use report::{report, MemoryWindow};
