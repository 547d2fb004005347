//! One partition's delivery state within a subscription.
//!
//! Every offset in `[committed, next)` is exactly one of: acknowledged (above the
//! committed offset, waiting for the gap below it to close), leased to a reader until
//! a deadline, or waiting for redelivery. Offsets below `committed` are done; offsets
//! at or above `next` were never delivered. The window `next - committed` is bounded,
//! so this state, and what a restart must reload, stays small.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Instant;

use crate::id_map::IdMap;
use crate::ranges::RangeSet;
use expiry::Expiry;
use leases::Leases;

/// Most records of one partition delivered and not yet acknowledged (Pub/Sub's
/// outstanding-message limit, per partition).
pub(crate) const MAX_WINDOW: u64 = 50_000;

/// Identifies who holds a lease: one reader session (a stream or a pull member).
pub(crate) type Holder = u64;

/// A delivered, unacknowledged record's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    deadline: Instant,
    holder: Holder,
}

/// What an acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Newly acknowledged.
    Acked,
    /// Already acknowledged (or below the committed offset): nothing to do.
    Already,
    /// Never delivered: the caller named an offset it cannot have received.
    NotDelivered,
}

/// Why and where delivery of new records of a partition stopped: the batch there
/// cannot be decoded and nothing may pass over it unrecorded. Held in memory only: a
/// restart meets the batch again and stops again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// First offset of the batch.
    pub offset: u64,
    /// Why it cannot be decoded.
    pub reason: String,
}

/// The delivery state of one partition.
#[derive(Debug, Default)]
pub struct Cursor {
    committed: u64,
    next: u64,
    /// Acknowledged offsets above `committed`, as ranges.
    acked: RangeSet,
    leases: Leases<Lease>,
    /// When leases run out, by run of offsets leased together.
    expiry: Expiry,
    redeliver: BTreeSet<u64>,
    /// Deliveries so far of offsets delivered more than once (others: 1).
    deliveries: IdMap<u32>,
    held: IdMap<u64>,
    /// Seeks so far: a delivery planned before a seek must not apply after it.
    seeks: u64,
    /// Set while no new record may be delivered (a seek clears it).
    stopped: Option<Stopped>,
}

impl Cursor {
    /// A cursor at `offset` with nothing delivered.
    pub fn at(offset: u64) -> Self {
        Cursor {
            committed: offset,
            next: offset,
            ..Cursor::default()
        }
    }

    /// A cursor reloaded after a restart: leases are gone, so every delivered offset
    /// that is not acknowledged waits for redelivery, with its delivery count kept.
    pub fn restore(
        committed: u64,
        next: u64,
        acked: impl IntoIterator<Item = Range<u64>>,
        deliveries: impl IntoIterator<Item = (u64, u32)>,
    ) -> Self {
        let next = next.max(committed);
        let mut cursor = Cursor::at(committed);
        cursor.next = next;
        cursor.acked = acked
            .into_iter()
            .map(|r| r.start.max(committed + 1)..r.end.min(next))
            .collect();
        cursor.deliveries = deliveries
            .into_iter()
            .filter(|&(o, _)| o >= committed && o < next)
            .collect();
        cursor.redeliver = (committed..next)
            .filter(|&o| !cursor.acked.contains(o))
            .collect();
        cursor.advance();
        cursor
    }

    /// Everything below this offset is acknowledged.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The first offset never delivered.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Delivered and not acknowledged (leased or waiting for redelivery); not those
    /// given back unsent (see [`Cursor::unsend`]) until they go out again.
    pub fn outstanding(&self) -> u64 {
        let unsent = self
            .deliveries
            .iter()
            .filter(|&(offset, &count)| count == 0 && self.redeliver.contains(offset))
            .count();
        (self.leases.len() + self.redeliver.len() - unsent) as u64
    }

    /// Ranges of offsets acknowledged above the committed offset (persisted so a
    /// restart does not redeliver them) that hold an offset of `span`, whole.
    pub fn acked_ranges(&self, span: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        self.acked.overlapping(span)
    }

    /// Records `holder` holds leases on.
    pub fn held_by(&self, holder: Holder) -> u64 {
        self.held.get(&holder).copied().unwrap_or(0)
    }

    /// How many more records may be delivered for the first time.
    pub fn room(&self) -> u64 {
        MAX_WINDOW.saturating_sub(self.next - self.committed)
    }

    /// Deliveries so far of a delivered offset.
    pub fn deliveries(&self, offset: u64) -> u32 {
        self.deliveries.get(&offset).copied().unwrap_or(1)
    }

    /// Moves leases whose deadline passed to the redelivery set.
    pub fn expire(&mut self, now: Instant) {
        while let Some((deadline, run)) = self.expiry.pop_due(now, self.committed) {
            for offset in run {
                // Acknowledged, given back or leased again since: not this lease.
                if self
                    .leases
                    .get(offset)
                    .is_some_and(|l| l.deadline == deadline)
                {
                    self.unlease(offset);
                    self.redeliver.insert(offset);
                }
            }
        }
    }

    /// Leases up to `max` offsets waiting for redelivery to `holder`; returns each with
    /// its delivery attempt number (deliveries so far + 1), counted now.
    pub fn claim_redeliveries(
        &mut self,
        max: usize,
        holder: Holder,
        deadline: Instant,
    ) -> Vec<(u64, u32)> {
        let offsets: Vec<u64> = self.redeliver.iter().take(max).copied().collect();
        offsets
            .into_iter()
            .map(|offset| {
                self.redeliver.remove(&offset);
                let attempt = self.deliveries(offset).saturating_add(1);
                self.deliveries.insert(offset, attempt);
                self.lease(offset, holder, deadline);
                (offset, attempt)
            })
            .collect()
    }

    /// Gives back a claimed redelivery that could not be sent (its record could not be
    /// fetched), so it is offered again; the delivery count is not undone.
    pub fn unclaim(&mut self, offset: u64) {
        if self.leases.contains(offset) {
            self.unlease(offset);
            self.redeliver.insert(offset);
        }
    }

    /// Delivers `offset` for the first time to `holder`. Offsets must come in
    /// increasing order; any below `next` were delivered already (false). A gap
    /// before `offset` holds no records and counts as acknowledged.
    pub fn deliver_new(&mut self, offset: u64, holder: Holder, deadline: Instant) -> bool {
        if offset < self.next || self.room() == 0 {
            return false;
        }
        self.skip_gap(offset);
        self.next = offset + 1;
        self.lease(offset, holder, deadline);
        true
    }

    /// Passes over a record that is never delivered (aged out for this subscription):
    /// it counts as acknowledged.
    pub fn pass_new(&mut self, offset: u64) -> bool {
        if offset < self.next {
            return false;
        }
        self.skip_gap(offset);
        self.next = offset + 1;
        self.acked.insert(offset);
        self.advance();
        true
    }

    /// Passes over `[next, offset)` without delivering it (a batch that went to the
    /// dead-letter topic): it counts as acknowledged. Returns the offsets passed.
    pub fn pass_to(&mut self, offset: u64) -> std::ops::Range<u64> {
        let passed = self.next..offset.max(self.next);
        self.skip_gap(offset);
        self.advance();
        passed
    }

    /// Stops delivery of new records at `offset` (the batch there cannot be decoded);
    /// redeliveries below it go on.
    pub fn stop(&mut self, offset: u64, reason: String) {
        self.stopped = Some(Stopped { offset, reason });
    }

    /// Where and why delivery of new records stopped, if it did.
    pub fn stopped(&self) -> Option<&Stopped> {
        self.stopped.as_ref()
    }

    fn skip_gap(&mut self, offset: u64) {
        if offset > self.next {
            if self.committed == self.next {
                self.committed = offset;
            } else {
                self.acked.insert_range(self.next..offset);
            }
            self.next = offset;
        }
    }

    /// Records that retention removed everything below `start`: whatever was
    /// outstanding there can never be delivered again and is dropped.
    pub fn skip_below(&mut self, start: u64) {
        if start <= self.committed {
            return;
        }
        let below: Vec<u64> = self
            .leases
            .iter()
            .map(|(o, _)| o)
            .filter(|&o| o < start)
            .collect();
        for offset in below {
            self.unlease(offset);
        }
        self.redeliver = self.redeliver.split_off(&start);
        self.acked.remove_below(start);
        self.deliveries.retain(|&o, _| o >= start);
        self.committed = start;
        self.next = self.next.max(start);
        self.advance();
    }

    /// Acknowledges one offset.
    pub fn ack(&mut self, offset: u64) -> AckOutcome {
        if offset >= self.next {
            return AckOutcome::NotDelivered;
        }
        if offset < self.committed || self.acked.contains(offset) {
            return AckOutcome::Already;
        }
        self.unlease(offset);
        if !self.redeliver.is_empty() {
            self.redeliver.remove(&offset);
        }
        if !self.deliveries.is_empty() {
            self.deliveries.remove(&offset);
        }
        if offset == self.committed {
            // In order (the usual case): the committed offset moves, no range kept.
            self.committed += 1;
        } else {
            self.acked.insert(offset);
        }
        self.advance();
        AckOutcome::Acked
    }

    /// Gives back an offset claimed for `holder` at delivery `attempt` that never
    /// reached it (its stream was gone): offered again first, as if that attempt never
    /// happened, so the next delivery is `attempt` again. Also when the holder's leases
    /// were released meanwhile (it left), as long as no one claimed the offset since.
    /// Returns the delivery count to store, or `None` if the offset moved on
    /// (acknowledged, or delivered again).
    pub fn unsend(&mut self, offset: u64, holder: Holder, attempt: u32) -> Option<u32> {
        let leased = self.holder_of(offset) == Some(holder);
        if !(leased || self.redeliver.contains(&offset)) || self.deliveries(offset) != attempt {
            return None;
        }
        self.unclaim(offset);
        let count = attempt.saturating_sub(1);
        self.deliveries.insert(offset, count);
        Some(count)
    }

    /// Gives an offset `holder` has leased back for immediate redelivery (a late nack
    /// from a reader whose lease moved on changes nothing).
    pub fn nack(&mut self, offset: u64, holder: Holder) {
        self.unclaim_if(offset, holder);
    }

    /// Like [`Cursor::unclaim`], only if `holder` still holds the lease.
    pub fn unclaim_if(&mut self, offset: u64, holder: Holder) {
        if self.holder_of(offset) == Some(holder) {
            self.unclaim(offset);
        }
    }

    /// Who holds the lease on `offset`, if anyone.
    pub fn holder_of(&self, offset: u64) -> Option<Holder> {
        self.leases.get(offset).map(|l| l.holder)
    }

    /// Gives back every lease `holder` has (it left), for immediate redelivery.
    pub fn release(&mut self, holder: Holder) {
        if self.held_by(holder) == 0 {
            return;
        }
        let offsets: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.holder == holder)
            .map(|(o, _)| o)
            .collect();
        for offset in offsets {
            self.unlease(offset);
            self.redeliver.insert(offset);
        }
    }

    /// Kafka-style commit: everything below `offset` is acknowledged.
    pub fn commit_to(&mut self, offset: u64) {
        if offset <= self.committed {
            return;
        }
        let start_next = self.next.max(offset);
        self.skip_below(offset);
        self.next = start_next;
    }

    /// Moves the position: nothing is outstanding afterwards, delivery starts at
    /// `offset` (it may move backwards, to read again).
    pub fn seek(&mut self, offset: u64) {
        let seeks = self.seeks + 1;
        *self = Cursor::at(offset);
        self.seeks = seeks;
    }

    /// How many seeks this cursor has had.
    pub fn seeks(&self) -> u64 {
        self.seeks
    }

    fn lease(&mut self, offset: u64, holder: Holder, deadline: Instant) {
        self.leases.insert(offset, Lease { deadline, holder });
        self.expiry.add(offset, deadline, self.committed);
        *self.held.entry(holder).or_default() += 1;
    }

    fn unlease(&mut self, offset: u64) {
        if let Some(lease) = self.leases.remove(offset)
            && let Some(count) = self.held.get_mut(&lease.holder)
        {
            *count -= 1;
            if *count == 0 {
                self.held.remove(&lease.holder);
            }
        }
    }

    fn advance(&mut self) {
        if self
            .acked
            .first()
            .is_some_and(|first| first.start == self.committed)
            && let Some(first) = self.acked.pop_first()
        {
            // Ranges are never adjacent: no other starts at this one's end.
            self.committed = first.end;
        }
        if self.committed > self.next {
            self.next = self.committed;
        }
    }

    /// Partitions' holders with leases here (for presence).
    pub fn holders(&self) -> impl Iterator<Item = Holder> + '_ {
        self.held.keys().copied()
    }
}

mod expiry;
mod leases;
#[cfg(test)]
mod tests;
