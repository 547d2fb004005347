//! One hosted partition replica: its log, its high watermark, and, on the leader, what
//! it knows of its followers.
//!
//! The log is synchronous; every call that may touch the disk runs on tokio's
//! blocking pool. Two watch channels publish progress: the log end (durable appends,
//! which wakes followers' long polls) and the high watermark (offsets below it are on
//! every in-sync replica, which wakes consumers' long polls). The leader computes the
//! high watermark as the smallest log end among the in-sync replicas; a follower takes
//! the leader's, capped by its own log end.
//!
//! A third watch publishes the term (leader and leader epoch) with the high watermark
//! this replica computed *as leader in that term*. Producers waiting for acks=all wait
//! on it, not on the high watermark: a record is acknowledged only if it is committed
//! in the leader epoch it was appended in. A replica deposed while they wait (paused
//! past its lease, or cut off and replaced) answers them all at once with NOT_LEADER
//! naming the new leader; as a follower it may truncate their records and its high
//! watermark (learned from the new leader) then passes offsets that hold other
//! records, so the plain high watermark proves nothing about them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use pubsub_storage::{Log, ReadSlice};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::disk::{DiskSpace, Writer};
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::metrics::TopicCounters;

/// What a partition replica knows of its role, from the metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Role {
    /// The leader, if any.
    pub leader: Option<u32>,
    /// The current leader epoch.
    pub leader_epoch: i32,
    /// Every replica, preferred leader first.
    pub replicas: Vec<u32>,
    /// The in-sync replicas.
    pub in_sync_replicas: Vec<u32>,
    /// The leader's client address, from the same metadata.
    pub leader_address: Option<String>,
    /// Replicas a move is adding: they fetch under the broker's move throttle until
    /// they are in sync.
    pub adding: Vec<u32>,
}

/// Who leads a partition in which epoch, and what this replica committed as its
/// leader in that epoch: what a waiting producer's answer depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Term {
    leader: Option<u32>,
    leader_epoch: i32,
    /// The high watermark this replica computed while leading in this term (0 when it
    /// does not lead); only ever raised, and only under the state lock, together with
    /// the role it was computed from.
    committed: u64,
}

/// Where an appended produce request waits: the epoch it was appended in and the
/// offset past its last record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The leader epoch the records were appended in.
    pub leader_epoch: i32,
    /// One past the request's last offset: the high watermark that commits it.
    pub end_offset: u64,
}

/// A produce request's records, appended on the leader.
#[derive(Debug)]
pub(crate) struct Appended {
    /// The base offset of each batch.
    pub base_offsets: Vec<u64>,
    /// What committing them takes.
    pub pending: Pending,
}

/// A follower's progress as the leader sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FollowerState {
    /// The follower's log end offset (the offset it last fetched from).
    pub log_end_offset: u64,
    /// Last time the follower had everything the leader had.
    pub caught_up_at: Instant,
}

struct ReplicaState {
    role: Role,
    followers: HashMap<u32, FollowerState>,
    /// The task that runs this replica's role: a follower's fetcher or a leader's ISR check.
    task: Option<JoinHandle<()>>,
}

/// A partition replica hosted by this broker.
pub(crate) struct Partition {
    log: Arc<Log>,
    disk: Arc<DiskSpace>,
    /// How close to full this topic may fill the disk.
    writer: Writer,
    topic: String,
    index: u32,
    broker_id: u32,
    log_end: watch::Sender<u64>,
    high_watermark: watch::Sender<u64>,
    /// Changes whenever the leader or the leader epoch does.
    term: watch::Sender<Term>,
    state: Mutex<ReplicaState>,
    /// The topic's produce and fetch counters.
    counters: TopicCounters,
}

/// Batches read for a fetch, with the partition's offsets at the time of the read.
pub(crate) struct FetchedBatches {
    /// Whole batches, concatenated; a zero-copy view of the segment's map.
    pub records: Bytes,
    /// The high watermark when the read was made.
    pub high_watermark: u64,
    /// The log start offset when the read was made.
    pub log_start_offset: u64,
    /// The log end offset when the read was made.
    pub log_end_offset: u64,
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock()
            && let Some(task) = state.task.take()
        {
            task.abort();
        }
    }
}

impl Partition {
    /// Wraps the opened log of partition `index` of `topic`, hosted by broker
    /// `broker_id`. The high watermark starts at the log start and moves once the
    /// replica knows its role and its peers' progress.
    pub(crate) fn new(
        log: Log,
        topic: &str,
        index: u32,
        broker_id: u32,
        disk: Arc<DiskSpace>,
    ) -> Self {
        let end = log.log_end_offset();
        let start = log.log_start_offset();
        Partition {
            log: Arc::new(log),
            disk,
            writer: Writer::of_topic(topic),
            topic: topic.to_string(),
            index,
            broker_id,
            log_end: watch::Sender::new(end),
            high_watermark: watch::Sender::new(start),
            term: watch::Sender::new(Term::default()),
            state: Mutex::new(ReplicaState {
                role: Role::default(),
                followers: HashMap::new(),
                task: None,
            }),
            counters: TopicCounters::new(topic),
        }
    }

    /// The topic's produce and fetch counters.
    pub(crate) fn counters(&self) -> &TopicCounters {
        &self.counters
    }

    /// The partition's log.
    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Offsets below this are visible to consumers.
    pub(crate) fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// The durable log end this replica reports.
    pub(crate) fn log_end(&self) -> u64 {
        *self.log_end.borrow()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ReplicaState>> {
        self.state
            .lock()
            .map_err(|_| Error::Task("partition state lock poisoned".into()))
    }

    /// The role the metadata last gave this replica.
    pub(crate) fn role(&self) -> Role {
        self.state
            .lock()
            .map(|s| s.role.clone())
            .unwrap_or_default()
    }

    /// True while a move is adding this replica and it is not in sync yet: its
    /// fetches go through the broker's move throttle. Reads the role in place.
    pub(crate) fn receiving_move(&self) -> bool {
        self.state.lock().is_ok_and(|s| {
            s.role.adding.contains(&self.broker_id)
                && !s.role.in_sync_replicas.contains(&self.broker_id)
        })
    }

    /// True if this broker leads the partition (read from the term watch: no copy
    /// of the role).
    pub(crate) fn is_leader(&self) -> bool {
        self.term.borrow().leader == Some(self.broker_id)
    }

    /// The leader's view of its followers.
    pub(crate) fn followers(&self) -> HashMap<u32, FollowerState> {
        self.state
            .lock()
            .map(|s| s.followers.clone())
            .unwrap_or_default()
    }

    /// Applies the role from new metadata. Returns the previous role, so the caller
    /// can tell whether leadership or the epoch changed and restart the role's task.
    pub(crate) fn set_role(&self, role: Role) -> Result<Role> {
        let mut state = self.lock()?;
        let previous = std::mem::replace(&mut state.role, role.clone());
        let new_term = previous.leader != role.leader || previous.leader_epoch != role.leader_epoch;
        if new_term {
            // A new term for this replica: followers start with a fresh grace period.
            state.followers.clear();
        }
        // Replicas a move added (in the same term) are tracked from now on; those it
        // removed are forgotten.
        let now = Instant::now();
        state
            .followers
            .retain(|replica, _| role.replicas.contains(replica));
        for &replica in role.replicas.iter().filter(|&&r| r != self.broker_id) {
            state.followers.entry(replica).or_insert(FollowerState {
                log_end_offset: 0,
                caught_up_at: now,
            });
        }
        // Published under the lock, so a waiter never sees a commit of one term paired
        // with another term's role.
        self.term.send_if_modified(|current| {
            let changed =
                current.leader != role.leader || current.leader_epoch != role.leader_epoch;
            if changed {
                *current = Term {
                    leader: role.leader,
                    leader_epoch: role.leader_epoch,
                    committed: 0,
                };
            }
            changed
        });
        drop(state);
        self.advance_high_watermark();
        Ok(previous)
    }

    /// Takes the in-sync replicas the cluster manager accepted from this leader in
    /// `leader_epoch`; ignored if the term changed meanwhile (new metadata already says
    /// more than an answer to an older request).
    pub(crate) fn set_in_sync_replicas(&self, leader_epoch: i32, in_sync_replicas: Vec<u32>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.role.leader != Some(self.broker_id) || state.role.leader_epoch != leader_epoch {
            return;
        }
        state.role.in_sync_replicas = in_sync_replicas;
        drop(state);
        self.advance_high_watermark();
    }

    /// Replaces the task running this replica's role (aborting the old one).
    pub(crate) fn set_task(&self, task: Option<JoinHandle<()>>) {
        if let Ok(mut state) = self.state.lock()
            && let Some(old) = std::mem::replace(&mut state.task, task)
        {
            old.abort();
        }
    }

    /// Appends producer batches in order (leader only); returns each base offset.
    ///
    /// Returns once the fsync policy is satisfied, so with `always` every returned
    /// offset is on disk; then the log end moves and the high watermark follows as the
    /// in-sync replicas catch up.
    #[cfg(test)]
    pub(crate) async fn append(&self, batches: Vec<Bytes>) -> Result<Appended> {
        let appended = self.write(batches).await?;
        self.make_durable(appended.pending.end_offset).await?;
        Ok(appended)
    }

    /// Waits until everything below `end` is durable under the fsync policy, then
    /// moves the log end there: only durable records are served to consumers and
    /// followers.
    pub(crate) async fn make_durable(&self, end: u64) -> Result<()> {
        let log = self.log.clone();
        blocking(move || Ok(log.wait_durable(end)?)).await?;
        self.publish_log_end(end);
        Ok(())
    }

    /// Writes producer batches in order (leader only) without waiting for the fsync
    /// policy: [`Partition::make_durable`] does that, then makes them visible.
    /// A produce stream writes its next request while this one waits, so one fsync
    /// covers several requests (group commit across a stream's pipeline).
    pub(crate) async fn write(&self, batches: Vec<Bytes>) -> Result<Appended> {
        let log = self.log.clone();
        let disk = self.disk.clone();
        let writer = self.writer;
        let term = *self.term.borrow();
        if term.leader != Some(self.broker_id) {
            return Err(self.deposed());
        }
        let epoch = term.leader_epoch;
        let (offsets, end) = blocking(move || {
            disk.admit(batches.iter().map(|b| b.len() as u64).sum(), writer)?;
            // All or nothing: a bad batch later in the request must not leave the
            // earlier ones appended behind an error. Each is walked once.
            let checked = batches
                .iter()
                .map(|batch| log.validate(batch))
                .collect::<pubsub_storage::Result<Vec<_>>>()?;
            let mut offsets = Vec::with_capacity(batches.len());
            let mut end = 0;
            for batch in checked {
                let info = log.write_validated(batch, epoch)?;
                offsets.push(info.base_offset);
                end = info.last_offset + 1;
            }
            Ok((offsets, end))
        })
        .await?;
        Ok(Appended {
            base_offsets: offsets,
            pending: Pending {
                leader_epoch: epoch,
                end_offset: end,
            },
        })
    }

    /// Appends batches fetched from the leader (follower only).
    pub(crate) async fn append_replicated(&self, batches: Bytes) -> Result<()> {
        let log = self.log.clone();
        let disk = self.disk.clone();
        let writer = self.writer;
        let end = blocking(move || {
            disk.admit(batches.len() as u64, writer)?;
            log.append_replicated(&batches)?;
            Ok(log.log_end_offset())
        })
        .await?;
        self.publish_log_end(end);
        Ok(())
    }

    /// Truncates the log to `offset` (a diverged follower suffix) or resets it to start
    /// there (the follower is below the leader's log start).
    pub(crate) async fn truncate(&self, offset: u64, reset: bool) -> Result<()> {
        if self.is_leader() {
            // A fetcher aborted as this replica became leader may still be finishing
            // a step; a leader's log is never cut.
            return Err(Error::Unavailable(format!(
                "{}-{} is led here now; not truncating",
                self.topic, self.index
            )));
        }
        let log = self.log.clone();
        let end = blocking(move || {
            if reset {
                log.reset_to(offset)?;
            } else {
                log.truncate_to(offset)?;
            }
            Ok(log.log_end_offset())
        })
        .await?;
        self.log_end.send_replace(end);
        Ok(())
    }

    fn publish_log_end(&self, end: u64) {
        self.log_end.send_if_modified(|current| {
            let moved = end > *current;
            *current = (*current).max(end);
            moved
        });
        self.advance_high_watermark();
    }

    /// A follower fetched from `offset`: it has everything below it.
    pub(crate) fn record_follower(&self, follower: u32, offset: u64) {
        let leader_end = self.log_end();
        if let Ok(mut state) = self.state.lock()
            && let Some(progress) = state.followers.get_mut(&follower)
        {
            progress.log_end_offset = offset;
            if offset >= leader_end {
                progress.caught_up_at = Instant::now();
            }
        }
        self.advance_high_watermark();
    }

    /// A follower learned the leader's high watermark.
    pub(crate) fn follow_high_watermark(&self, leader_high_watermark: u64) {
        if self.is_leader() {
            return;
        }
        let candidate = leader_high_watermark.min(self.log_end());
        self.raise_high_watermark(candidate);
    }

    /// On the leader: the high watermark becomes the smallest log end among the
    /// in-sync replicas (never lower than before, never above this log's end).
    pub(crate) fn advance_high_watermark(&self) {
        let Ok(state) = self.state.lock() else { return };
        if state.role.leader != Some(self.broker_id) {
            return;
        }
        let own = self.log_end();
        let mut candidate = own;
        for replica in &state.role.in_sync_replicas {
            if *replica != self.broker_id {
                let follower = state.followers.get(replica).map_or(0, |f| f.log_end_offset);
                candidate = candidate.min(follower);
            }
        }
        self.raise_high_watermark(candidate);
        let committed = self.high_watermark();
        self.term.send_if_modified(|term| {
            let ours = term.leader == state.role.leader
                && term.leader_epoch == state.role.leader_epoch
                && committed > term.committed;
            if ours {
                term.committed = committed;
            }
            ours
        });
    }

    fn raise_high_watermark(&self, candidate: u64) {
        let candidate = candidate.max(self.log.log_start_offset());
        self.high_watermark.send_if_modified(|hw| {
            let moved = candidate > *hw;
            *hw = (*hw).max(candidate);
            moved
        });
        debug_assert!(
            self.high_watermark() <= self.log.log_end_offset().max(self.log.log_start_offset())
        );
    }

    /// Waits until `pending` is committed in the leader epoch it was appended in
    /// (true) or `deadline` passes (false).
    ///
    /// Fails at once with NOT_LEADER, naming the new leader, if the term changes
    /// first (the replica stopped leading, or leads in a newer epoch, after which it
    /// may have truncated the records), and with UNAVAILABLE when `lease` lapses: a
    /// broker cut off from the cluster manager cannot commit anything it can be sure
    /// of. Either way the records may still be committed; an idempotent retry is
    /// answered with their offsets.
    pub(crate) async fn await_commit(
        &self,
        pending: Pending,
        deadline: tokio::time::Instant,
        lease: &Lease,
    ) -> Result<bool> {
        let mut term = self.term.subscribe();
        let mine =
            |t: &Term| t.leader == Some(self.broker_id) && t.leader_epoch == pending.leader_epoch;
        let decided = term.wait_for(|t| !mine(t) || t.committed >= pending.end_offset);
        let decided = tokio::time::timeout_at(deadline, decided);
        tokio::select! {
            // A commit already seen wins a tie with the lease.
            biased;
            decided = decided => match decided {
                Ok(Ok(t)) if mine(&t) => Ok(true),
                Ok(_) => Err(self.deposed()),
                Err(_) => Ok(false),
            },
            () = lease.lapsed() => Err(self.uncertain(lease)),
        }
    }

    /// The answer to a producer whose leader lost its lease while it waited.
    fn uncertain(&self, lease: &Lease) -> Error {
        Error::Unavailable(format!(
            "broker {} lost contact with the cluster manager {:.1?} past its lease while the write to {}-{} waited; another broker may lead it now; the records may still be committed",
            self.broker_id,
            lease.lapsed_for(),
            self.topic,
            self.index
        ))
    }

    /// The answer to a producer whose leader was deposed while it waited.
    fn deposed(&self) -> Error {
        let role = self.role();
        if role.leader == Some(self.broker_id) {
            return Error::Unavailable(format!(
                "the leader epoch of {}-{} changed to {} while the write waited for the in-sync replicas; the records may still be committed",
                self.topic, self.index, role.leader_epoch
            ));
        }
        Error::NotLeader {
            topic: self.topic.clone(),
            partition: self.index,
            broker: self.broker_id,
            leader: role.leader,
            leader_address: role.leader_address,
        }
    }

    /// Reads batches from `offset` below `end` (the high watermark for consumers, the
    /// log end for followers), waiting until `deadline` for some if none are there.
    pub(crate) async fn fetch(
        &self,
        offset: u64,
        max_bytes: usize,
        deadline: tokio::time::Instant,
        replica: bool,
    ) -> Result<FetchedBatches> {
        let channel = if replica {
            &self.log_end
        } else {
            &self.high_watermark
        };
        let mut bound = channel.subscribe();
        loop {
            let end = *bound.borrow_and_update();
            let log = self.log.clone();
            let slice: ReadSlice =
                blocking(move || Ok(log.read_below(offset, max_bytes, end)?)).await?;
            if !slice.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(FetchedBatches {
                    records: Bytes::from_owner(slice),
                    high_watermark: self.high_watermark(),
                    log_start_offset: self.log.log_start_offset(),
                    log_end_offset: self.log_end(),
                });
            }
            match tokio::time::timeout_at(deadline, bound.changed()).await {
                Ok(Ok(())) | Err(_) => continue,
                // The partition was dropped (topic deleted) while we waited.
                Ok(Err(_)) => return Err(Error::TopicNotFound("(deleted while fetching)".into())),
            }
        }
    }

    /// First offset at or after `timestamp`, or the high watermark if none.
    pub(crate) async fn offset_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let log = self.log.clone();
        let high_watermark = self.high_watermark();
        let found = blocking(move || Ok(log.offset_for_timestamp(timestamp)?)).await?;
        Ok(found.map_or(high_watermark, |o| o.min(high_watermark)))
    }
}

/// Runs disk work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests;
