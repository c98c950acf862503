//! An interval map of non-overlapping `[start, end)` ranges, keyed by start.
//!
//! Every mutation splits at most the two ranges that straddle the edges of the span it
//! touches and then visits only the ranges inside that span. A storm of small
//! mmap/munmap pairs therefore costs O(log n) per event, never a scan of the whole
//! address space.

use std::collections::BTreeMap;

/// One stored range: its end (exclusive) and attributes. The start is the map key.
#[derive(Clone, Debug, PartialEq)]
struct Piece<V> {
    end: u64,
    value: V,
}

/// Non-overlapping ranges with attributes `V`.
///
/// Adjacent ranges with equal attributes are merged after each insert or update, so
/// repeated splitting (mprotect toggles inside one mapping) does not fragment the map.
#[derive(Clone, Debug)]
pub(crate) struct RangeMap<V> {
    pieces: BTreeMap<u64, Piece<V>>,
}

impl<V> Default for RangeMap<V> {
    fn default() -> Self {
        Self {
            pieces: BTreeMap::new(),
        }
    }
}

impl<V: Clone + PartialEq> RangeMap<V> {
    /// Forget every range.
    pub(crate) fn clear(&mut self) {
        self.pieces.clear();
    }

    /// Number of stored ranges (after merging), to check that storms stay small.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    /// All ranges in address order, as `(start, end, value)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64, &V)> {
        self.pieces.iter().map(|(&s, p)| (s, p.end, &p.value))
    }

    /// The range containing `addr`, if any.
    pub(crate) fn get(&self, addr: u64) -> Option<(u64, u64, &V)> {
        let (&s, p) = self.pieces.range(..=addr).next_back()?;
        (p.end > addr).then_some((s, p.end, &p.value))
    }

    /// Ranges intersecting `[start, end)`, clipped to it, without modifying the map.
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64, &V)> {
        // Only the last range starting before `start` can reach into the span.
        let before = self
            .pieces
            .range(..start)
            .next_back()
            .filter(|(_, p)| p.end > start);
        let inside = self.pieces.range(start..end.max(start));
        before
            .into_iter()
            .chain(inside)
            .map(move |(&s, p)| (s.max(start), p.end.min(end), &p.value))
            .filter(|(s, e, _)| s < e)
    }

    /// Remove `[start, end)`, splitting ranges that straddle its edges. Returns the
    /// removed pieces in address order, clipped to the span.
    pub(crate) fn remove(&mut self, start: u64, end: u64) -> Vec<(u64, u64, V)> {
        if start >= end {
            return Vec::new();
        }
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.pieces.range(start..end).map(|(&s, _)| s).collect();
        keys.into_iter()
            .filter_map(|s| self.pieces.remove(&s).map(|p| (s, p.end, p.value)))
            .collect()
    }

    /// Make `[start, end)` one range with `value`, replacing whatever overlapped it.
    pub(crate) fn insert(&mut self, start: u64, end: u64, value: V) {
        if start >= end {
            return;
        }
        self.remove(start, end);
        self.pieces.insert(start, Piece { end, value });
        self.coalesce(start, end);
    }

    /// Apply `f` to the attributes of every mapped byte in `[start, end)`, splitting
    /// ranges at the edges so bytes outside the span are untouched. Holes stay holes.
    pub(crate) fn update(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut V)) {
        if start >= end {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        for (_, piece) in self.pieces.range_mut(start..end) {
            f(&mut piece.value);
        }
        self.coalesce(start, end);
    }

    /// Split the range containing `addr` strictly inside it into two at `addr`.
    fn split_at(&mut self, addr: u64) {
        let Some((&s, piece)) = self.pieces.range_mut(..addr).next_back() else {
            return;
        };
        if piece.end <= addr {
            return;
        }
        let tail = Piece {
            end: piece.end,
            value: piece.value.clone(),
        };
        piece.end = addr;
        debug_assert!(s < addr);
        self.pieces.insert(addr, tail);
    }

    /// Merge touching ranges with equal attributes from the range just before `start`
    /// up to the range starting at `end`: the only places a mutation of `[start, end)`
    /// can have created mergeable neighbours.
    fn coalesce(&mut self, start: u64, end: u64) {
        let first = self.pieces.range(..start).next_back().map(|(&s, _)| s);
        let keys: Vec<u64> = first
            .into_iter()
            .chain(self.pieces.range(start..=end).map(|(&s, _)| s))
            .collect();
        let mut keys = keys.into_iter();
        let Some(mut current) = keys.next() else {
            return;
        };
        for next in keys {
            let mergeable = match (self.pieces.get(&current), self.pieces.get(&next)) {
                (Some(a), Some(b)) => a.end == next && a.value == b.value,
                _ => false,
            };
            if mergeable {
                if let Some(b) = self.pieces.remove(&next) {
                    if let Some(a) = self.pieces.get_mut(&current) {
                        a.end = b.end;
                    }
                }
            } else {
                current = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(map: &RangeMap<char>) -> Vec<(u64, u64, char)> {
        map.iter().map(|(s, e, v)| (s, e, *v)).collect()
    }

    /// Check that removing the middle of a range leaves both ends with its value.
    #[test]
    fn remove_middle_splits() {
        let mut map = RangeMap::default();
        map.insert(0, 100, 'a');
        let removed = map.remove(40, 60);
        assert_eq!(removed, vec![(40, 60, 'a')]);
        assert_eq!(ranges(&map), vec![(0, 40, 'a'), (60, 100, 'a')]);
    }

    /// Check that a removal spanning several ranges and holes clips the edge ranges.
    #[test]
    fn remove_across_ranges_and_holes() {
        let mut map = RangeMap::default();
        map.insert(0, 10, 'a');
        map.insert(20, 30, 'b');
        map.insert(40, 50, 'c');
        let removed = map.remove(5, 45);
        assert_eq!(removed, vec![(5, 10, 'a'), (20, 30, 'b'), (40, 45, 'c')]);
        assert_eq!(ranges(&map), vec![(0, 5, 'a'), (45, 50, 'c')]);
    }

    /// Check that inserting over existing ranges replaces exactly the overlap.
    #[test]
    fn insert_replaces_overlap() {
        let mut map = RangeMap::default();
        map.insert(0, 100, 'a');
        map.insert(50, 150, 'b');
        assert_eq!(ranges(&map), vec![(0, 50, 'a'), (50, 150, 'b')]);
    }

    /// Check that touching ranges with equal values merge and unequal ones do not.
    #[test]
    fn insert_merges_equal_neighbours() {
        let mut map = RangeMap::default();
        map.insert(0, 10, 'a');
        map.insert(20, 30, 'a');
        map.insert(10, 20, 'a');
        assert_eq!(ranges(&map), vec![(0, 30, 'a')]);
        map.insert(30, 40, 'b');
        assert_eq!(ranges(&map), vec![(0, 30, 'a'), (30, 40, 'b')]);
    }

    /// Check that update touches only the span, skips holes, and re-merges afterwards.
    #[test]
    fn update_splits_and_remerges() {
        let mut map = RangeMap::default();
        map.insert(0, 10, 'a');
        map.insert(20, 30, 'a');
        map.update(5, 25, |v| *v = 'b');
        assert_eq!(
            ranges(&map),
            vec![(0, 5, 'a'), (5, 10, 'b'), (20, 25, 'b'), (25, 30, 'a')]
        );
        map.update(0, 30, |v| *v = 'a');
        assert_eq!(ranges(&map), vec![(0, 10, 'a'), (20, 30, 'a')]);
    }

    /// Check that lookups find the containing range and overlapping ranges are clipped.
    #[test]
    fn get_and_overlapping() {
        let mut map = RangeMap::default();
        map.insert(10, 20, 'a');
        map.insert(30, 40, 'b');
        assert_eq!(map.get(10).map(|(s, e, v)| (s, e, *v)), Some((10, 20, 'a')));
        assert_eq!(map.get(19).map(|(_, _, v)| *v), Some('a'));
        assert!(map.get(20).is_none());
        let over: Vec<_> = map
            .overlapping(15, 35)
            .map(|(s, e, v)| (s, e, *v))
            .collect();
        assert_eq!(over, vec![(15, 20, 'a'), (30, 35, 'b')]);
        assert_eq!(map.overlapping(20, 30).count(), 0);
    }
}
