//! Aggregation after unwinding: interning stacks so that each distinct stack of a
//! process is unwound into names once and referred to by a small [`StackId`].
mod stacks;
mod unwind_cache;

pub use stacks::{StackTable, SymbolizedStack};
pub use unwind_cache::UnwindCache;
