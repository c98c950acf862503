//! Allocator-level accounting: which allocator a process uses, and its sampled live
//! blocks by stack.
//!
//! The mapping ledger sees memory the way the kernel hands it out (brk, mmap), which
//! blames whoever happened to extend the heap. The allocator view sees the blocks the
//! program asked for and has not freed, which names the code that holds memory. Side by
//! side they tell a leak (live blocks grow) from allocator retention or fragmentation
//! (the heap grows while live blocks do not); see `memory_verdict`.
pub mod detect;
pub mod layout;
pub mod live;
pub mod net;

pub use detect::{detect, AllocatorChoice, AllocatorFamily};
pub use layout::HeapLayout;
pub use live::{LiveAllocations, LiveGrowth};
