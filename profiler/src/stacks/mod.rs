//! Aggregation after unwinding: interning stacks so that each distinct stack of a
//! process is unwound into names once and referred to by a small [`StackId`].
pub mod js_frames;
pub mod locations;
mod resolver;
mod table;
mod unwind_cache;

pub use resolver::{Resolved, StackResolver};
pub use table::{StackTable, SymbolizedStack};
pub use unwind_cache::UnwindCache;
