//! Memoized unwinding: a stack whose registers and the stack bytes the unwinder read are
//! the same as before unwinds to the same frames, so it is unwound (and interned) once.
//!
//! The key is exact rather than a hash of the whole copied window: the window holds up
//! to 32 KiB of live locals that change between samples, while the walk only reads a
//! few hundred bytes. Each entry remembers the highest address the walk read and a hash
//! of `[sp, end)`, so a lookup hashes just that range.
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use crate::events::{StackId, StackSample};

/// Entries beyond this are dropped all at once (the cache refills with what recurs).
const MAX_ENTRIES: usize = 65_536;

/// Entries kept per register triple; the oldest goes first. Registers that keep
/// missing belong to a stack whose read bytes change every time (a loop counter in an
/// outer frame): a longer list would only make every lookup hash more ranges.
const MAX_PER_KEY: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Entry {
    end: u64,
    hash: u64,
    stack: StackId,
    truncated: bool,
}

/// Cache of unwound stacks of one address space.
#[derive(Default)]
pub struct UnwindCache {
    entries: HashMap<(u64, u64, u64), Vec<Entry>>,
    len: usize,
    pub hits: u64,
    pub misses: u64,
}

fn hash_range(sample: &StackSample, end: u64) -> Option<u64> {
    let from = usize::try_from(sample.sp.checked_sub(sample.base)?).ok()?;
    let to = usize::try_from(end.checked_sub(sample.base)?).ok()?;
    let bytes = sample.bytes.get(from..to)?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    sample.ret_fix.hash(&mut h);
    sample.ip_is_return.hash(&mut h);
    Some(h.finish())
}

impl UnwindCache {
    /// The cached stack for `sample`, if one was unwound from the same registers and
    /// the same bytes.
    pub fn get(&mut self, sample: &StackSample) -> Option<(StackId, bool)> {
        let entries = self.entries.get(&(sample.ip, sample.sp, sample.bp))?;
        // Entries of one key mostly share their end: hash each distinct range once.
        let mut hashed: Vec<(u64, Option<u64>)> = Vec::with_capacity(entries.len());
        let found = entries
            .iter()
            .find(|e| {
                let hash = match hashed.iter().find(|(end, _)| *end == e.end) {
                    Some(&(_, hash)) => hash,
                    None => {
                        let hash = hash_range(sample, e.end);
                        hashed.push((e.end, hash));
                        hash
                    }
                };
                hash == Some(e.hash)
            })
            .map(|e| (e.stack, e.truncated));
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Remember that `sample`, whose walk read memory below `end`, unwound to `stack`.
    pub fn insert(&mut self, sample: &StackSample, end: u64, stack: StackId, truncated: bool) {
        let Some(hash) = hash_range(sample, end.max(sample.sp)) else {
            return;
        };
        if self.len >= MAX_ENTRIES {
            self.clear();
        }
        let list = self
            .entries
            .entry((sample.ip, sample.sp, sample.bp))
            .or_default();
        if list.len() >= MAX_PER_KEY {
            list.remove(0);
            self.len -= 1;
        }
        list.push(Entry {
            end: end.max(sample.sp),
            hash,
            stack,
            truncated,
        });
        self.len += 1;
    }

    /// Forget everything (the address space changed).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes: Vec<u8>) -> StackSample {
        StackSample {
            ip: 0x401000,
            sp: 0x7000_0010,
            bp: 0,
            base: 0x7000_0000,
            bytes,
            ret_fix: None,
            ip_is_return: false,
        }
    }

    /// Check that a stack hits when the bytes the walk read are equal, even if bytes
    /// beyond them differ, and misses when a read byte differs.
    #[test]
    fn hits_only_on_identical_read_bytes() {
        let mut cache = UnwindCache::default();
        let mut bytes = vec![0u8; 256];
        cache.insert(&sample(bytes.clone()), 0x7000_0040, 7, false);
        bytes[0x80] = 1; // beyond what the walk read
        assert_eq!(cache.get(&sample(bytes.clone())), Some((7, false)));
        bytes[0x20] = 1; // inside [sp, end)
        assert_eq!(cache.get(&sample(bytes.clone())), None);
        bytes[0x05] = 9; // below sp: never part of the key
        bytes[0x20] = 0;
        assert_eq!(cache.get(&sample(bytes)), Some((7, false)));
        assert_eq!((cache.hits, cache.misses), (2, 1));
    }

    /// Check that a key keeps only its newest entries, so a stack whose read bytes
    /// change every time does not make lookups slower and slower.
    #[test]
    fn bounded_entries_per_key() {
        let mut cache = UnwindCache::default();
        for i in 0..(MAX_PER_KEY as u8 + 3) {
            let mut bytes = vec![0u8; 64];
            bytes[0x10] = i;
            cache.insert(&sample(bytes), 0x7000_0020, StackId::from(i), false);
        }
        assert_eq!(cache.len, MAX_PER_KEY);
        let mut first = vec![0u8; 64];
        assert_eq!(cache.get(&sample(first.clone())), None);
        first[0x10] = MAX_PER_KEY as u8 + 2;
        assert_eq!(
            cache.get(&sample(first)),
            Some((StackId::from(MAX_PER_KEY as u8 + 2), false))
        );
    }

    /// Check that different registers never share an entry and that clear forgets.
    #[test]
    fn keys_on_registers_and_clears() {
        let mut cache = UnwindCache::default();
        let s = sample(vec![0u8; 64]);
        cache.insert(&s, 0x7000_0020, 1, true);
        let mut other = s.clone();
        other.bp = 5;
        assert_eq!(cache.get(&other), None);
        assert_eq!(cache.get(&s), Some((1, true)));
        cache.clear();
        assert_eq!(cache.get(&s), None);
    }
}
