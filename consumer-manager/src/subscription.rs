//! A subscription's live state: partition cursors, members (presence), and for a
//! group the generation and the partition assignment. Everything here is synchronous
//! and runs under the subscription's lock; I/O happens outside it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pubsub_client::now_ms;
use tokio::sync::{Notify, watch};

use crate::assignment::{Assignment, sticky};
use crate::cursor::{Cursor, Holder};
use crate::delivery::FETCH_BYTES_PER_RECORD;
use crate::error::{Error, Result};
use crate::lock::recover;
use crate::metrics::SubscriptionCounters;
use crate::options::Options;
use crate::store::SubscriptionRecord;

/// How a member reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read/Ack calls.
    Pull,
    /// An open Stream.
    Stream,
}

impl Mode {
    /// As presence shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pull => "pull",
            Mode::Stream => "stream",
        }
    }
}

/// A connected reader.
#[derive(Debug)]
pub struct Member {
    /// Lease holder id of this member's session.
    pub holder: Holder,
    /// Address it connects from.
    pub address: String,
    /// When it joined, ms since the epoch.
    pub since_ms: i64,
    /// Last time it was heard from.
    pub last_seen: Instant,
    /// Pull or stream.
    pub mode: Mode,
    /// Set to true when the member is evicted (a stream then ends).
    pub evicted: watch::Sender<bool>,
}

/// Mutable state of a subscription.
pub struct State {
    /// One cursor per partition.
    pub cursors: Vec<Cursor>,
    /// Connected members by id.
    pub members: BTreeMap<String, Member>,
    /// Group generation (groups only; bumped on every membership change).
    pub generation: u64,
    /// Group assignment of the current generation.
    pub assignment: Assignment,
    /// Dead letters written so far.
    pub dead_lettered: u64,
    /// Replay position per dead-letter partition.
    pub replayed: Vec<u64>,
    /// High watermark per partition, as last seen.
    pub high_watermarks: Vec<Option<u64>>,
    /// Incarnation of the topic the cursors belong to (0: not known yet).
    pub topic_created_ms: u64,
    /// Incarnation of the dead-letter topic `replayed` belongs to (0: none).
    pub dead_letter_created_ms: u64,
    /// Set, with why, once the subscription is deleted (unsubscribed, or its topic
    /// deleted): nothing may be written for it any more.
    pub deleted: Option<Deletion>,
    /// Set once another consumer manager serves the subscription (its journal
    /// partition was let go of): nothing may be written for it here any more.
    pub moved: bool,
}

/// Why a subscription was deleted, as its members and late requests are told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// An Unsubscribe call.
    Unsubscribed,
    /// Its topic was deleted.
    TopicDeleted {
        /// The topic.
        topic: String,
    },
    /// Its topic was deleted and created again: the offsets belong to the old one.
    TopicRecreated {
        /// The topic.
        topic: String,
    },
}

impl std::fmt::Display for Deletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deletion::Unsubscribed => write!(f, "unsubscribed"),
            Deletion::TopicDeleted { topic } => write!(f, "its topic {topic:?} was deleted"),
            Deletion::TopicRecreated { topic } => {
                write!(f, "its topic {topic:?} was deleted and created again")
            }
        }
    }
}

/// A subscription: immutable identity and options, and its state under a lock.
pub struct Subscription {
    /// Subscription name.
    pub name: String,
    /// Topic it reads.
    pub topic: String,
    /// Partition count: grows (never shrinks) when partitions are added to the
    /// topic, after the cursors for them exist (see [`Subscription::grow_to`]).
    partitions: AtomicU32,
    /// Effective options.
    pub options: Options,
    state: Mutex<State>,
    /// Woken when records may have become deliverable (nack, release, rebalance,
    /// credits) so waiting readers look again.
    pub changed: Notify,
    turn: AtomicUsize,
    /// Bytes per record its fetches showed lately, to size the next fetch by.
    record_bytes: AtomicU64,
    /// Held while its dead letters are replayed, so none is moved twice; other
    /// subscriptions replay meanwhile.
    pub(crate) replaying: tokio::sync::Mutex<()>,
    /// Its delivery counters (metrics).
    pub(crate) counters: SubscriptionCounters,
}

impl Subscription {
    /// A subscription from its stored record and cursors.
    pub fn new(record: &SubscriptionRecord, cursors: Vec<Cursor>) -> Self {
        let partitions = record.partitions;
        Subscription {
            counters: SubscriptionCounters::new(&record.name),
            name: record.name.clone(),
            topic: record.topic.clone(),
            partitions: AtomicU32::new(partitions),
            options: record.options.clone(),
            state: Mutex::new(State {
                cursors,
                members: BTreeMap::new(),
                generation: record.generation,
                assignment: Assignment::new(),
                dead_lettered: record.dead_lettered,
                replayed: record.replayed.clone(),
                high_watermarks: vec![None; partitions as usize],
                topic_created_ms: record.topic_created_ms,
                dead_letter_created_ms: record.dead_letter_created_ms,
                deleted: None,
                moved: false,
            }),
            changed: Notify::new(),
            turn: AtomicUsize::new(0),
            replaying: tokio::sync::Mutex::new(()),
            record_bytes: AtomicU64::new(FETCH_BYTES_PER_RECORD),
        }
    }

    /// The partitions of its topic it reads (0 to this, exclusive).
    pub fn partitions(&self) -> u32 {
        self.partitions.load(Ordering::Acquire)
    }

    /// Reads `count` partitions from now on (more than before): the new ones start
    /// at offset 0, the first record of a new partition, so none is missed. The
    /// cursors exist before the count says so: a reader that sees the new count finds
    /// their cursors.
    pub fn grow_to(&self, state: &mut State, count: u32) {
        let before = self.partitions();
        if count <= before {
            return;
        }
        state.cursors.resize_with(count as usize, || Cursor::at(0));
        state.high_watermarks.resize(count as usize, None);
        self.partitions.store(count, Ordering::Release);
    }

    /// Locks the state of a subscription that still exists and is served here
    /// (NOT_FOUND once it was deleted, UNAVAILABLE once it moved to another consumer
    /// manager), so an operation that raced Unsubscribe or the move writes nothing.
    pub fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.lock_any();
        if let Some(why) = &state.deleted {
            return Err(Error::SubscriptionDeleted {
                name: self.name.clone(),
                why: why.clone(),
            });
        }
        if state.moved {
            return Err(Error::NotOwner {
                subscription: self.name.clone(),
                owner: None,
            });
        }
        Ok(state)
    }

    /// Locks the state, deleted or not.
    pub fn lock_any(&self) -> MutexGuard<'_, State> {
        recover(self.state.lock())
    }

    /// The record to store for this subscription's current state.
    pub fn record(&self, state: &State) -> SubscriptionRecord {
        SubscriptionRecord {
            name: self.name.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions(),
            options: self.options.clone(),
            generation: state.generation,
            dead_lettered: state.dead_lettered,
            replayed: state.replayed.clone(),
            topic_created_ms: state.topic_created_ms,
            dead_letter_created_ms: state.dead_letter_created_ms,
        }
    }

    /// A counter that rotates which partition a delivery serves first.
    pub fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// The lease deadline of a record delivered now.
    pub fn lease_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(u64::from(self.options.ack_deadline_ms))
    }

    /// Bytes per record its fetches showed lately.
    pub(crate) fn record_bytes(&self) -> u64 {
        self.record_bytes.load(Ordering::Relaxed)
    }

    /// Takes a fetch of `records` records in `bytes` bytes into the estimate (a
    /// moving average; fetches of a few records say little and are left out).
    pub(crate) fn observe_fetch(&self, bytes: usize, records: usize) {
        if records < 16 {
            return;
        }
        let seen = (bytes / records).clamp(16, 1 << 20) as u64;
        let before = self.record_bytes();
        self.record_bytes
            .store((before * 3 + seen) / 4, Ordering::Relaxed);
    }

    /// How long a member may go unheard before it is removed.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.options.session_timeout_ms))
    }
}

impl State {
    /// Adds a member or refreshes one; returns its holder id and whether it is new.
    pub fn touch(
        &mut self,
        member_id: &str,
        address: &str,
        mode: Mode,
        new_holder: impl FnOnce() -> Holder,
    ) -> (Holder, bool) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_seen = Instant::now();
            return (member.holder, false);
        }
        let holder = new_holder();
        self.members.insert(
            member_id.to_string(),
            Member {
                holder,
                address: address.to_string(),
                since_ms: now_ms(),
                last_seen: Instant::now(),
                mode,
                evicted: watch::channel(false).0,
            },
        );
        (holder, true)
    }

    /// Removes a member; a stream is told to end. The leases of a group member or a
    /// stream go back for redelivery now (its partitions move, or its connection is
    /// gone); a shared pull reader's leases run to their ack deadline, since it may
    /// still ack what it holds.
    pub fn remove(&mut self, member_id: &str, group: bool) -> bool {
        let Some(member) = self.members.remove(member_id) else {
            return false;
        };
        if group || member.mode == Mode::Stream {
            for cursor in &mut self.cursors {
                cursor.release(member.holder);
            }
        }
        member.evicted.send_replace(true);
        true
    }

    /// Removes every member (the subscription was deleted or moved): their leases go
    /// back and their streams end.
    pub fn remove_all(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove(&id, true);
        }
    }

    /// Ids of members not heard from within `timeout`.
    pub fn expired(&self, timeout: Duration, now: Instant) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Starts a new generation: partitions reassigned (sticky); leases on a partition
    /// that changed owner go back for redelivery to its new owner.
    pub fn rebalance(&mut self, partitions: u32) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let next = sticky(&self.assignment, &ids, partitions);
        let owner = |assignment: &Assignment, partition: u32| {
            assignment
                .iter()
                .find(|(_, owned)| owned.contains(&partition))
                .map(|(id, _)| id.clone())
        };
        for partition in 0..partitions {
            let before = owner(&self.assignment, partition);
            if before != owner(&next, partition)
                && let Some(holder) = before
                    .and_then(|id| self.members.get(&id))
                    .map(|m| m.holder)
                && let Some(cursor) = self.cursors.get_mut(partition as usize)
            {
                cursor.release(holder);
            }
        }
        self.assignment = next;
        self.generation += 1;
    }

    /// Partitions a member may read: its assignment in a group, all otherwise.
    pub fn eligible(&self, group: bool, member_id: &str, partitions: u32) -> Vec<u32> {
        if group {
            self.assignment.get(member_id).cloned().unwrap_or_default()
        } else {
            (0..partitions).collect()
        }
    }

    /// Whether a member may read `partition` (see [`State::eligible`]).
    pub fn may_read(&self, group: bool, member_id: &str, partition: u32) -> bool {
        if group {
            self.assignment
                .get(member_id)
                .is_some_and(|owned| owned.contains(&partition))
        } else {
            (partition as usize) < self.cursors.len()
        }
    }

    /// Records leased to `holder`, across partitions.
    pub fn held_by(&self, holder: Holder) -> u64 {
        self.cursors.iter().map(|c| c.held_by(holder)).sum()
    }

    /// Moves expired leases of every partition to redelivery.
    pub fn expire_all(&mut self, now: Instant) {
        for cursor in &mut self.cursors {
            cursor.expire(now);
        }
    }
}

/// Checks that a group member is current: known, and of the current generation.
pub(crate) fn check_generation(
    subscription: &Subscription,
    state: &State,
    member_id: &str,
    generation: u64,
) -> Result<()> {
    if !subscription.options.group {
        return Ok(());
    }
    if !state.members.contains_key(member_id) {
        return Err(Error::UnknownMember {
            member_id: member_id.to_string(),
            group: subscription.name.clone(),
        });
    }
    if generation != state.generation {
        return Err(Error::StaleGeneration {
            group: subscription.name.clone(),
            given: generation,
            current: state.generation,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
