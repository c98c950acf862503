//! Aggregation after unwinding: interning stacks so that each distinct stack of a
//! process is unwound into names once and referred to by a small [`StackId`].
mod stacks;

pub use stacks::{StackTable, SymbolizedStack};
