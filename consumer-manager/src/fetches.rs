//! One fetch serves every subscription reading the same position of a partition.
//!
//! Subscriptions that keep up with a topic all long-poll its partitions at the same
//! offset (their log end), and several subscriptions reading one topic from the same
//! start read the same offsets. A read that finds a fetch of the same topic,
//! partition and offset in flight joins it instead of asking the leader again, when
//! that fetch ends no later than the reader would wait (a reader that must not wait is
//! never held by another's long poll). The leader decodes and CRC-checks the response
//! once; every joiner gets the same records (slices of the one buffer). A joiner
//! whose fetch failed or was dropped fetches on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::lock::recover;

/// Topic, partition, offset.
type Key = (String, u32, u64);

/// A fetch in flight that others may join.
struct InFlight<T> {
    id: u64,
    deadline: Instant,
    done: watch::Receiver<Option<T>>,
}

/// The fetches in flight, by position.
pub(crate) struct Fetches<T> {
    inflight: Mutex<HashMap<Key, InFlight<T>>>,
    next_id: AtomicU64,
}

/// What a reader does: fetch itself (and let others join), or wait for one in flight.
pub(crate) enum Turn<'a, T> {
    /// Fetch, then [`Lead::publish`] the response.
    Lead(Lead<'a, T>),
    /// Wait for this fetch's response ([`joined`]).
    Join(watch::Receiver<Option<T>>),
}

/// A fetch a reader leads; others may join it until it is published or dropped.
pub(crate) struct Lead<'a, T> {
    fetches: &'a Fetches<T>,
    key: Key,
    id: u64,
    sender: watch::Sender<Option<T>>,
}

impl<T: Clone> Fetches<T> {
    /// None in flight.
    pub(crate) fn new() -> Self {
        Fetches {
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// A read of `offset` of `topic`'s `partition` waiting until `deadline` at most:
    /// joins a fetch in flight that ends no later, or leads a new one.
    pub(crate) fn begin(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        deadline: Instant,
    ) -> Turn<'_, T> {
        let key = (topic.to_string(), partition, offset);
        let mut inflight = recover(self.inflight.lock());
        if let Some(running) = inflight.get(&key)
            && running.deadline <= deadline
        {
            return Turn::Join(running.done.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, done) = watch::channel(None);
        // A reader that waits less takes the slot: later readers join the shorter.
        inflight.insert(key.clone(), InFlight { id, deadline, done });
        Turn::Lead(Lead {
            fetches: self,
            key,
            id,
            sender,
        })
    }
}

impl<T> Lead<'_, T> {
    /// Hands the response to every reader that joined.
    pub(crate) fn publish(self, response: T) {
        self.sender.send_replace(Some(response));
    }
}

impl<T> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        let mut inflight = recover(self.fetches.inflight.lock());
        if inflight.get(&self.key).is_some_and(|f| f.id == self.id) {
            inflight.remove(&self.key);
        }
    }
}

/// The response of a joined fetch; `None` if it failed or was dropped (the reader
/// then fetches on its own).
pub(crate) async fn joined<T: Clone>(mut done: watch::Receiver<Option<T>>) -> Option<T> {
    let published = done.wait_for(Option::is_some).await.ok()?;
    (*published).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn readers_of_one_position_share_a_fetch_that_ends_no_later() {
        let fetches: Fetches<u32> = Fetches::new();
        let now = Instant::now();
        let long = now + Duration::from_millis(500);
        let Turn::Lead(lead) = fetches.begin("t", 0, 7, long) else {
            panic!("nothing in flight: the first reader leads");
        };
        let Turn::Join(done) = fetches.begin("t", 0, 7, long + Duration::from_millis(1)) else {
            panic!("a reader that waits as long joins");
        };
        assert!(
            matches!(fetches.begin("t", 0, 7, now), Turn::Lead(_)),
            "a reader that must not wait is not held by a long poll"
        );
        assert!(matches!(fetches.begin("t", 1, 7, long), Turn::Lead(_)));
        lead.publish(42);
        assert_eq!(joined(done).await, Some(42));
    }

    #[tokio::test]
    async fn a_dropped_fetch_lets_its_joiners_fetch_on_their_own() {
        let fetches: Fetches<u32> = Fetches::new();
        let deadline = Instant::now();
        let Turn::Lead(lead) = fetches.begin("t", 0, 7, deadline) else {
            panic!("nothing in flight");
        };
        let Turn::Join(done) = fetches.begin("t", 0, 7, deadline) else {
            panic!("joins");
        };
        drop(lead);
        assert_eq!(joined(done).await, None);
        assert!(matches!(fetches.begin("t", 0, 7, deadline), Turn::Lead(_)));
    }
}
