//! A set of offsets kept as disjoint, non-adjacent half-open ranges.
//!
//! Acknowledgements above a partition's committed offset arrive mostly in runs (a
//! subscriber acks in order, or a few records lag behind the rest): as ranges, a run
//! of any length costs one entry in memory and one key in sled, where single offsets
//! cost one each. Pure and property-tested against a `BTreeSet`.

use std::collections::BTreeMap;
use std::ops::Range;

/// Offsets as ranges: `start -> end` (end excluded). Invariant: ranges are non-empty,
/// disjoint, and never adjacent (adjacent ones are merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// The range holding `offset`, if any.
    pub(crate) fn range_of(&self, offset: u64) -> Option<Range<u64>> {
        let (&start, &end) = self.ranges.range(..=offset).next_back()?;
        (offset < end).then_some(start..end)
    }

    /// Whether `offset` is in the set.
    pub(crate) fn contains(&self, offset: u64) -> bool {
        self.range_of(offset).is_some()
    }

    /// Adds `offset`; false if it was there already.
    pub(crate) fn insert(&mut self, offset: u64) -> bool {
        if self.contains(offset) {
            return false;
        }
        self.insert_range(offset..offset + 1);
        true
    }

    /// Adds every offset of `range`.
    pub(crate) fn insert_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // Merge with every range that overlaps or touches [start, end), from the
        // last one starting at or before `end` down.
        while let Some((&s, &e)) = self.ranges.range(..=end).next_back()
            && e >= start
        {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// The first range, if any.
    pub(crate) fn first(&self) -> Option<Range<u64>> {
        self.ranges.first_key_value().map(|(&s, &e)| s..e)
    }

    /// Removes and returns the first range.
    pub(crate) fn pop_first(&mut self) -> Option<Range<u64>> {
        let (start, end) = self.ranges.pop_first()?;
        Some(start..end)
    }

    /// Drops every offset below `offset`.
    pub(crate) fn remove_below(&mut self, offset: u64) {
        let above = self.ranges.split_off(&offset);
        let straddling = self.ranges.last_key_value().map(|(_, &end)| end);
        self.ranges = above;
        if let Some(end) = straddling.filter(|&end| end > offset) {
            self.ranges.insert(offset, end);
        }
    }

    /// The ranges, in order.
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }

    /// The ranges that hold an offset of `span`, in order, whole.
    pub(crate) fn overlapping(&self, span: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let from = self.range_of(span.start).map_or(span.start, |r| r.start);
        self.ranges
            .range(from..span.end)
            .map(|(&s, &e)| s..e)
            .filter(move |r| r.end > span.start)
    }

    /// The offsets, in order.
    #[cfg(test)]
    fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().flatten()
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = RangeSet::default();
        for range in iter {
            set.insert_range(range);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn adjacent_runs_merge_into_one_range() {
        let mut set = RangeSet::default();
        for o in [5, 7, 6, 9] {
            assert!(set.insert(o));
        }
        assert!(!set.insert(6));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![5..8, 9..10]);
        set.insert_range(8..9);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![5..10]);
        set.remove_below(7);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![7..10]);
        assert_eq!(set.overlapping(8..9).collect::<Vec<_>>(), vec![7..10]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        InsertRange(u8, u8),
        PopFirst,
        RemoveBelow(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(Op::Insert),
            (any::<u8>(), 0u8..20).prop_map(|(s, n)| Op::InsertRange(s, n)),
            Just(Op::PopFirst),
            any::<u8>().prop_map(Op::RemoveBelow),
        ]
    }

    proptest! {
        /// Against a `BTreeSet`: same members, same count, and the ranges stay
        /// disjoint and never adjacent.
        #[test]
        fn range_set_matches_a_set(ops in proptest::collection::vec(op(), 1..100)) {
            let mut set = RangeSet::default();
            let mut model: BTreeSet<u64> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(o) => {
                        prop_assert_eq!(set.insert(u64::from(o)), model.insert(u64::from(o)));
                    }
                    Op::InsertRange(s, n) => {
                        let range = u64::from(s)..u64::from(s) + u64::from(n);
                        set.insert_range(range.clone());
                        model.extend(range);
                    }
                    Op::PopFirst => {
                        let popped: Vec<u64> = set.pop_first().into_iter().flatten().collect();
                        for o in &popped {
                            prop_assert!(model.remove(o));
                        }
                        if let Some(&next) = model.first() {
                            prop_assert!(popped.last().is_some_and(|&l| next > l + 1));
                        }
                    }
                    Op::RemoveBelow(o) => model = model.split_off(&u64::from(o)),
                }
                if let Op::RemoveBelow(o) = op {
                    set.remove_below(u64::from(o));
                }
                prop_assert_eq!(set.offsets().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                let ranges: Vec<_> = set.iter().collect();
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].end < pair[1].start, "{:?} not disjoint and apart", pair);
                }
                for o in 0..300u64 {
                    prop_assert_eq!(set.contains(o), model.contains(&o));
                }
            }
        }
    }
}
