//! A cursor's leases, in a ring indexed by offset. Leased offsets lie in the
//! cursor's window, and a delivery leases the offsets after the last, so a slot per
//! offset from the lowest leased one is dense and cheap: a lease and its ack are an
//! index each, where a hash map of a million leases (a hundred subscriptions reading
//! at once) missed the cache on every record. The ring spans at most [`SPAN_MAX`]
//! offsets: a lease beyond (behind one stuck lease, or across a gap in the log) goes
//! to a map instead, so memory follows the leases, never the distance between them.

use std::collections::VecDeque;

use crate::id_map::IdMap;

/// Slots kept in reserve once no lease is left; a larger ring is given back.
const KEEP_SLOTS: usize = 4_096;
/// Most offsets the ring spans (its slots are 32 bytes: 512 KiB at most).
const SPAN_MAX: usize = 16_384;

/// Leases by offset.
#[derive(Debug)]
pub(super) struct Leases<L> {
    /// The offset of the first slot.
    base: u64,
    slots: VecDeque<Option<L>>,
    /// Slots holding a lease.
    count: usize,
    /// Leases outside the ring's span.
    overflow: IdMap<L>,
    /// Most offsets the ring spans.
    span_max: usize,
}

impl<L> Default for Leases<L> {
    fn default() -> Self {
        Leases {
            base: 0,
            slots: VecDeque::new(),
            count: 0,
            overflow: IdMap::default(),
            span_max: SPAN_MAX,
        }
    }
}

impl<L> Leases<L> {
    /// How many offsets are leased.
    pub(super) fn len(&self) -> usize {
        self.count + self.overflow.len()
    }

    /// The lease on `offset`, if any.
    pub(super) fn get(&self, offset: u64) -> Option<&L> {
        self.in_ring(offset).or_else(|| self.overflow.get(&offset))
    }

    fn in_ring(&self, offset: u64) -> Option<&L> {
        let index = offset.checked_sub(self.base)?;
        self.slots.get(usize::try_from(index).ok()?)?.as_ref()
    }

    /// Whether leasing `offset` keeps the ring within its span.
    fn fits(&self, offset: u64) -> bool {
        if self.slots.is_empty() {
            return true;
        }
        let (low, high) = if offset < self.base {
            (offset, self.base + self.slots.len() as u64 - 1)
        } else {
            (
                self.base,
                offset.max(self.base + self.slots.len() as u64 - 1),
            )
        };
        high - low < self.span_max as u64
    }

    /// Whether `offset` is leased.
    pub(super) fn contains(&self, offset: u64) -> bool {
        self.get(offset).is_some()
    }

    /// Leases `offset` (replacing a lease there).
    pub(super) fn insert(&mut self, offset: u64, lease: L) {
        if !self.overflow.is_empty() {
            self.overflow.remove(&offset);
        }
        if !self.fits(offset) {
            self.overflow.insert(offset, lease);
            return;
        }
        if self.slots.is_empty() {
            self.base = offset;
        }
        while offset < self.base {
            self.slots.push_front(None);
            self.base -= 1;
        }
        let index = (offset - self.base) as usize;
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        if self.slots[index].replace(lease).is_none() {
            self.count += 1;
        }
    }

    /// Ends the lease on `offset`; returns it.
    pub(super) fn remove(&mut self, offset: u64) -> Option<L> {
        if let Some(lease) = self.take_from_ring(offset) {
            return Some(lease);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.remove(&offset)
    }

    fn take_from_ring(&mut self, offset: u64) -> Option<L> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        let lease = self.slots.get_mut(index)?.take()?;
        self.count -= 1;
        self.trim();
        Some(lease)
    }

    /// Every lease, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &L)> + '_ {
        let base = self.base;
        let slots = self.slots.iter().enumerate();
        let ring = slots.filter_map(move |(i, slot)| Some((base + i as u64, slot.as_ref()?)));
        ring.chain(self.overflow.iter().map(|(&offset, lease)| (offset, lease)))
    }

    /// Drops the empty slots at both ends (and, once none is leased, a ring grown
    /// large in a burst).
    fn trim(&mut self) {
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base += 1;
        }
        while self.slots.back().is_some_and(Option::is_none) {
            self.slots.pop_back();
        }
        if self.count == 0 && self.slots.capacity() > KEEP_SLOTS {
            self.slots = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Behaves as a map from offset to lease, whatever the order of inserts and
        /// removals, and the ring never spans more than its limit.
        #[test]
        fn leases_behave_as_a_map(
            ops in proptest::collection::vec((any::<bool>(), 0u64..200), 1..300),
        ) {
            let mut leases = Leases {
                span_max: 50,
                ..Leases::default()
            };
            let mut model = BTreeMap::new();
            for (step, (insert, offset)) in ops.into_iter().enumerate() {
                if insert {
                    leases.insert(offset, step);
                    model.insert(offset, step);
                } else {
                    prop_assert_eq!(leases.remove(offset), model.remove(&offset));
                }
                prop_assert_eq!(leases.len(), model.len());
                let mut all: Vec<(u64, usize)> = leases.iter().map(|(o, &l)| (o, l)).collect();
                all.sort_unstable();
                let expected: Vec<(u64, usize)> = model.iter().map(|(&o, &l)| (o, l)).collect();
                prop_assert_eq!(all, expected);
                for (&offset, lease) in &model {
                    prop_assert_eq!(leases.get(offset), Some(lease));
                }
                prop_assert!(leases.slots.len() <= 50, "the ring spans {}", leases.slots.len());
            }
        }
    }
}
