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
//! A third watch publishes the term (leader and leader epoch). Producers waiting for
//! the high watermark (acks=all) also wait on it: a replica deposed while they wait,
//! paused past its lease for instance, answers them all at once with NOT_LEADER
//! naming the new leader, instead of holding them until their timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use pubsub_storage::{Log, ReadSlice};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::disk::DiskSpace;
use crate::error::{Error, Result};

/// What a partition replica knows of its role, from the metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
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
}

/// Who leads a partition in which epoch: what a waiting producer's answer depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Term {
    leader: Option<u32>,
    leader_epoch: i32,
}

/// A follower's progress as the leader sees it.
#[derive(Clone, Copy, Debug)]
pub struct FollowerState {
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
pub struct Partition {
    log: Arc<Log>,
    disk: Arc<DiskSpace>,
    topic: String,
    index: u32,
    broker_id: u32,
    log_end: watch::Sender<u64>,
    high_watermark: watch::Sender<u64>,
    /// Changes whenever the leader or the leader epoch does.
    term: watch::Sender<Term>,
    state: Mutex<ReplicaState>,
}

/// Batches read for a fetch, with the partition's offsets at the time of the read.
pub struct FetchedBatches {
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
    pub fn new(log: Log, topic: &str, index: u32, broker_id: u32, disk: Arc<DiskSpace>) -> Self {
        let end = log.log_end_offset();
        let start = log.log_start_offset();
        Partition {
            log: Arc::new(log),
            disk,
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
        }
    }

    /// The partition's log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Offsets below this are visible to consumers.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// The durable log end this replica reports.
    pub fn log_end(&self) -> u64 {
        *self.log_end.borrow()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ReplicaState>> {
        self.state
            .lock()
            .map_err(|_| Error::Task("partition state lock poisoned".into()))
    }

    /// The role the metadata last gave this replica.
    pub fn role(&self) -> Role {
        self.state
            .lock()
            .map(|s| s.role.clone())
            .unwrap_or_default()
    }

    /// True if this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.role().leader == Some(self.broker_id)
    }

    /// The leader's view of its followers.
    pub fn followers(&self) -> HashMap<u32, FollowerState> {
        self.state
            .lock()
            .map(|s| s.followers.clone())
            .unwrap_or_default()
    }

    /// Applies the role from new metadata. Returns the previous role, so the caller
    /// can tell whether leadership or the epoch changed and restart the role's task.
    pub fn set_role(&self, role: Role) -> Result<Role> {
        let mut state = self.lock()?;
        let previous = std::mem::replace(&mut state.role, role.clone());
        if previous.leader != role.leader || previous.leader_epoch != role.leader_epoch {
            // A new term for this replica: followers start with a fresh grace period.
            let now = Instant::now();
            state.followers = role
                .replicas
                .iter()
                .filter(|&&r| r != self.broker_id)
                .map(|&r| {
                    (
                        r,
                        FollowerState {
                            log_end_offset: 0,
                            caught_up_at: now,
                        },
                    )
                })
                .collect();
        }
        drop(state);
        let term = Term {
            leader: role.leader,
            leader_epoch: role.leader_epoch,
        };
        self.term.send_if_modified(|current| {
            let changed = *current != term;
            *current = term;
            changed
        });
        self.advance_high_watermark();
        Ok(previous)
    }

    /// Replaces the task running this replica's role (aborting the old one).
    pub fn set_task(&self, task: Option<JoinHandle<()>>) {
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
    pub async fn append(&self, batches: Vec<Bytes>) -> Result<(Vec<u64>, u64)> {
        let log = self.log.clone();
        let disk = self.disk.clone();
        let epoch = self.role().leader_epoch;
        let (offsets, end) = blocking(move || {
            disk.admit(batches.iter().map(|b| b.len() as u64).sum())?;
            // All or nothing: a bad batch later in the request must not leave the
            // earlier ones appended behind an error. Each is walked once.
            let checked = batches
                .iter()
                .map(|batch| log.validate(batch))
                .collect::<pubsub_storage::Result<Vec<_>>>()?;
            let mut offsets = Vec::with_capacity(batches.len());
            let mut end = 0;
            for batch in checked {
                let info = log.append_validated(batch, epoch)?;
                offsets.push(info.base_offset);
                end = info.last_offset + 1;
            }
            Ok((offsets, end))
        })
        .await?;
        self.publish_log_end(end);
        Ok((offsets, end))
    }

    /// Appends batches fetched from the leader (follower only).
    pub async fn append_replicated(&self, batches: Bytes) -> Result<()> {
        let log = self.log.clone();
        let disk = self.disk.clone();
        let end = blocking(move || {
            disk.admit(batches.len() as u64)?;
            log.append_replicated(&batches)?;
            Ok(log.log_end_offset())
        })
        .await?;
        self.publish_log_end(end);
        Ok(())
    }

    /// Truncates the log to `offset` (a diverged follower suffix) or resets it to start
    /// there (the follower is below the leader's log start).
    pub async fn truncate(&self, offset: u64, reset: bool) -> Result<()> {
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
    pub fn record_follower(&self, follower: u32, offset: u64) {
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
    pub fn follow_high_watermark(&self, leader_high_watermark: u64) {
        let candidate = leader_high_watermark.min(self.log_end());
        self.raise_high_watermark(candidate);
    }

    /// On the leader: the high watermark becomes the smallest log end among the
    /// in-sync replicas (never lower than before, never above this log's end).
    pub fn advance_high_watermark(&self) {
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
        drop(state);
        self.raise_high_watermark(candidate);
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

    /// Waits until the high watermark reaches `offset` (true) or `deadline` passes
    /// (false), while this replica leads in the term it leads now.
    ///
    /// Fails at once with NOT_LEADER, naming the new leader, if the replica does not
    /// lead or the term changes while waiting: a deposed leader's high watermark never
    /// moves again, and the producer should retry where the partition now lives. (Its
    /// records may still be committed; an idempotent retry is answered with their
    /// offsets.)
    pub async fn await_high_watermark(
        &self,
        offset: u64,
        deadline: tokio::time::Instant,
    ) -> Result<bool> {
        let mut watermark = self.high_watermark.subscribe();
        let mut term = self.term.subscribe();
        if term.borrow_and_update().leader != Some(self.broker_id) {
            return Err(self.deposed());
        }
        let reached = tokio::time::timeout_at(deadline, watermark.wait_for(|&hw| hw >= offset));
        tokio::select! {
            // Reached wins a tie: the records are on every in-sync replica, whoever
            // leads now.
            biased;
            reached = reached => Ok(reached.is_ok_and(|r| r.is_ok())),
            _ = term.changed() => Err(self.deposed()),
        }
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
    pub async fn fetch(
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
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let log = self.log.clone();
        let high_watermark = self.high_watermark();
        let found = blocking(move || Ok(log.offset_for_timestamp(timestamp)?)).await?;
        Ok(found.map_or(high_watermark, |o| o.min(high_watermark)))
    }
}

/// Runs disk work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use pubsub_storage::{BatchBuilder, Compression, FsyncPolicy, LogConfig, ProducerStamp};

    fn partition(dir: &std::path::Path) -> Partition {
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let disk = Arc::new(DiskSpace::new(dir.to_path_buf(), 0));
        Partition::new(Log::open(dir, config).unwrap(), "t", 0, 1, disk)
    }

    fn batch(records: u32) -> Bytes {
        let mut builder = BatchBuilder::new();
        for _ in 0..records {
            builder.push(0, None, Some(b"v"), &[]);
        }
        Bytes::from(
            builder
                .build(Compression::None, ProducerStamp::NONE)
                .unwrap()
                .unwrap(),
        )
    }

    fn leader_of(isr: &[u32]) -> Role {
        Role {
            leader: Some(1),
            leader_epoch: 1,
            replicas: vec![1, 2, 3],
            in_sync_replicas: isr.to_vec(),
            leader_address: None,
        }
    }

    #[tokio::test]
    async fn the_high_watermark_is_the_smallest_in_sync_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let partition = partition(dir.path());
        partition.set_role(leader_of(&[1, 2, 3])).unwrap();
        partition.append(vec![batch(10)]).await.unwrap();
        assert_eq!(
            partition.high_watermark(),
            0,
            "no follower has the records yet"
        );
        partition.record_follower(2, 10);
        assert_eq!(
            partition.high_watermark(),
            0,
            "follower 3 is in sync and has nothing"
        );
        partition.record_follower(3, 4);
        assert_eq!(partition.high_watermark(), 4);
        partition.set_role(leader_of(&[1, 2])).unwrap();
        partition.record_follower(2, 10);
        assert_eq!(partition.high_watermark(), 10, "3 left the ISR");
        partition.record_follower(2, 7);
        assert_eq!(
            partition.high_watermark(),
            10,
            "the high watermark never goes back"
        );
    }

    #[tokio::test]
    async fn a_follower_takes_the_leaders_high_watermark_capped_by_its_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let partition = partition(dir.path());
        partition
            .set_role(Role {
                leader: Some(2),
                leader_epoch: 1,
                replicas: vec![1, 2],
                in_sync_replicas: vec![1, 2],
                leader_address: Some("b2:9392".into()),
            })
            .unwrap();
        partition.follow_high_watermark(50);
        assert_eq!(partition.high_watermark(), 0, "nothing replicated yet");
    }

    #[tokio::test]
    async fn a_deposed_leader_answers_its_waiting_producers_at_once_naming_the_new_leader() {
        let dir = tempfile::tempdir().unwrap();
        let partition = Arc::new(partition(dir.path()));
        partition.set_role(leader_of(&[1, 2, 3])).unwrap();
        partition.append(vec![batch(10)]).await.unwrap();
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let partition = partition.clone();
                tokio::spawn(async move { partition.await_high_watermark(10, far).await })
            })
            .collect();
        tokio::task::yield_now().await;
        partition
            .set_role(Role {
                leader: Some(2),
                leader_epoch: 2,
                leader_address: Some("b2:9392".into()),
                ..leader_of(&[2, 3])
            })
            .unwrap();
        for waiter in waiters {
            let answer = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("answered at once, not at the deadline")
                .unwrap();
            let Err(Error::NotLeader {
                leader,
                leader_address,
                ..
            }) = answer
            else {
                panic!("expected NOT_LEADER, got {answer:?}");
            };
            assert_eq!(leader, Some(2));
            assert_eq!(leader_address.as_deref(), Some("b2:9392"));
        }
        // A producer arriving after the change is refused at once too.
        assert!(matches!(
            partition.await_high_watermark(10, far).await,
            Err(Error::NotLeader { .. })
        ));
    }

    #[tokio::test]
    async fn a_waiting_producer_is_answered_when_the_high_watermark_reaches_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let partition = Arc::new(partition(dir.path()));
        partition.set_role(leader_of(&[1, 2])).unwrap();
        partition.append(vec![batch(10)]).await.unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(
            !partition.await_high_watermark(10, soon).await.unwrap(),
            "times out while the follower lags"
        );
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let waiter = tokio::spawn({
            let partition = partition.clone();
            async move { partition.await_high_watermark(10, far).await }
        });
        tokio::task::yield_now().await;
        // An ISR change keeps the term: the waiter goes on waiting.
        partition.set_role(leader_of(&[1, 2, 3])).unwrap();
        partition.set_role(leader_of(&[1, 2])).unwrap();
        partition.record_follower(2, 10);
        assert!(waiter.await.unwrap().unwrap());
    }
}
