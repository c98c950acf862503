//! The stack table: distinct (process, return addresses) stacks and their names.
use std::collections::HashMap;

use crate::{events::StackId, model::CodeLocation};

/// A stack with its frames named, root (outermost caller) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolizedStack {
    pub pid: u32,
    /// Lookup addresses, leaf first, as the unwinder returned them.
    pub addrs: Vec<u64>,
    /// Frame names, root first (inlined frames expanded).
    pub names: Vec<String>,
    /// The same frames as code locations (one per address, inlined functions as its
    /// lines), root first; empty when the namer gave names only.
    pub locations: Vec<CodeLocation>,
    /// The unwinder stopped early (stack copy too short or unreadable memory).
    pub truncated: bool,
}

/// Interns stacks per process. Names are computed by the caller once per new stack,
/// so repeated stacks cost a hash lookup.
#[derive(Default)]
pub struct StackTable {
    stacks: Vec<SymbolizedStack>,
    index: HashMap<(u32, Vec<u64>), StackId>,
}

impl StackTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `addrs` in process `pid`, naming it with `name` if it is new.
    pub fn intern(
        &mut self,
        pid: u32,
        addrs: Vec<u64>,
        truncated: bool,
        name: impl FnOnce(&[u64]) -> Vec<String>,
    ) -> StackId {
        self.intern_located(pid, addrs, truncated, |a| (name(a), Vec::new()))
    }

    /// [`StackTable::intern`] with a namer that also gives the frames' code locations.
    pub fn intern_located(
        &mut self,
        pid: u32,
        addrs: Vec<u64>,
        truncated: bool,
        name: impl FnOnce(&[u64]) -> (Vec<String>, Vec<CodeLocation>),
    ) -> StackId {
        if let Some(&id) = self.index.get(&(pid, addrs.clone())) {
            return id;
        }
        let id = StackId::try_from(self.stacks.len()).expect("fewer than 2^32 distinct stacks");
        let (names, locations) = name(&addrs);
        self.index.insert((pid, addrs.clone()), id);
        self.stacks.push(SymbolizedStack {
            pid,
            addrs,
            names,
            locations,
            truncated,
        });
        id
    }

    /// Add a stack interned elsewhere (a saved stream); its id, or the id it already
    /// has when the same stack was pushed before.
    pub fn push(&mut self, stack: SymbolizedStack) -> StackId {
        let (names, locations) = (stack.names, stack.locations);
        self.intern_located(stack.pid, stack.addrs, stack.truncated, |_| {
            (names, locations)
        })
    }

    pub fn get(&self, id: StackId) -> Option<&SymbolizedStack> {
        self.stacks.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the same stack of the same process is named once and gets one id,
    /// while the same addresses in another process are a different stack.
    #[test]
    fn interns_per_process_and_names_once() {
        let mut table = StackTable::new();
        let mut calls = 0;
        let mut namer = |a: &[u64]| {
            calls += 1;
            a.iter().rev().map(|x| format!("f{x}")).collect()
        };
        let a = table.intern(1, vec![3, 2, 1], false, &mut namer);
        let b = table.intern(1, vec![3, 2, 1], false, &mut namer);
        let c = table.intern(2, vec![3, 2, 1], false, &mut namer);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(calls, 2);
        assert_eq!(table.get(a).unwrap().names, vec!["f1", "f2", "f3"]);
        assert_eq!(table.len(), 2);
    }
}
