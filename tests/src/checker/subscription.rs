//! The anomalies of a subscription's history: what one subscriber was delivered and
//! which of its acknowledgements the consumer manager answered, against the records
//! the topic holds.
//!
//! At-least-once delivery allows a record to come back while its acknowledgement is
//! unanswered (the ack may have been lost with a node, or its lease ran out); a record
//! whose ack was answered must never come back, and every record must be delivered at
//! least once. Pure: no I/O, no clock.

use std::collections::HashSet;
use std::fmt;

/// A record of a topic: partition and offset.
pub type RecordId = (u32, u64);

/// One thing the subscriber saw or did, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A record was handed to the subscriber.
    Delivered(RecordId),
    /// The consumer manager answered an acknowledgement of these records: they are
    /// settled and must not be delivered again.
    AckAnswered(Vec<RecordId>),
}

/// The counts of a subscription's history; [`SubscriptionAnomalies::is_clean`] when it
/// kept the at-least-once promise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionAnomalies {
    /// Distinct records delivered.
    pub delivered: usize,
    /// Distinct records whose acknowledgement was answered.
    pub acked: usize,
    /// Deliveries of a record already delivered whose ack was never answered: allowed.
    pub redelivered: usize,
    /// Deliveries of a record after its ack was answered: beyond the promise.
    pub redelivered_after_ack: usize,
    /// Records of the topic never delivered.
    pub skipped: usize,
}

impl SubscriptionAnomalies {
    /// Whether the promise held: nothing settled came back, nothing was skipped.
    pub fn is_clean(&self) -> bool {
        self.redelivered_after_ack == 0 && self.skipped == 0
    }
}

impl fmt::Display for SubscriptionAnomalies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delivered {}, acked {}, redelivered {} (allowed), redelivered after an \
             answered ack {}, skipped {}",
            self.delivered, self.acked, self.redelivered, self.redelivered_after_ack, self.skipped
        )
    }
}

/// Checks `events` against `expected`, every record the subscription should deliver.
pub fn check_subscription(
    expected: impl IntoIterator<Item = RecordId>,
    events: &[Event],
) -> SubscriptionAnomalies {
    let mut found = SubscriptionAnomalies::default();
    let mut delivered: HashSet<RecordId> = HashSet::new();
    let mut settled: HashSet<RecordId> = HashSet::new();
    for event in events {
        match event {
            Event::Delivered(id) if settled.contains(id) => found.redelivered_after_ack += 1,
            Event::Delivered(id) if !delivered.insert(*id) => found.redelivered += 1,
            Event::Delivered(_) => {}
            Event::AckAnswered(ids) => settled.extend(ids.iter().copied()),
        }
    }
    found.delivered = delivered.len();
    found.acked = settled.len();
    found.skipped = expected
        .into_iter()
        .filter(|id| !delivered.contains(id))
        .count();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(ids: &[RecordId]) -> Vec<Event> {
        ids.iter().map(|id| Event::Delivered(*id)).collect()
    }

    #[test]
    fn every_record_delivered_and_acked_once_is_clean() {
        let mut events = delivered(&[(0, 0), (0, 1), (1, 0)]);
        events.push(Event::AckAnswered(vec![(0, 0), (0, 1), (1, 0)]));
        let found = check_subscription([(0, 0), (0, 1), (1, 0)], &events);
        assert!(found.is_clean(), "{found}");
        assert_eq!((found.delivered, found.acked, found.redelivered), (3, 3, 0));
    }

    #[test]
    fn a_record_back_before_its_ack_was_answered_is_allowed() {
        // Delivered, its lease ran out (or the ack was lost), delivered again, acked.
        let mut events = delivered(&[(0, 0), (0, 0)]);
        events.push(Event::AckAnswered(vec![(0, 0)]));
        let found = check_subscription([(0, 0)], &events);
        assert!(found.is_clean(), "{found}");
        assert_eq!(found.redelivered, 1);
    }

    #[test]
    fn a_record_back_after_its_ack_was_answered_breaks_the_promise() {
        let mut events = delivered(&[(0, 0)]);
        events.push(Event::AckAnswered(vec![(0, 0)]));
        events.push(Event::Delivered((0, 0)));
        let found = check_subscription([(0, 0)], &events);
        assert!(!found.is_clean());
        assert_eq!(found.redelivered_after_ack, 1);
    }

    #[test]
    fn a_record_never_delivered_is_skipped() {
        let events = delivered(&[(0, 0), (0, 2)]);
        let found = check_subscription([(0, 0), (0, 1), (0, 2)], &events);
        assert_eq!(found.skipped, 1);
        assert!(!found.is_clean());
    }

    #[test]
    fn an_ack_answered_for_a_record_never_delivered_still_settles_it() {
        // The subscriber acked it in an earlier session: a later delivery is beyond
        // the promise, and is not counted as a delivery.
        let events = vec![Event::AckAnswered(vec![(2, 5)]), Event::Delivered((2, 5))];
        let found = check_subscription([], &events);
        assert_eq!(found.redelivered_after_ack, 1);
        assert_eq!(found.delivered, 0);
    }
}
