//! The subscription-state journal: every write to the consumer manager's sled trees
//! is also appended to a replicated topic on the brokers, so a subscription's state
//! survives the loss of the node (and disk) that kept it.
//!
//! Kafka keeps consumer offsets the same way (`__consumer_offsets`): the brokers'
//! replication, with its zero-loss failover, already solves keeping bytes on several
//! nodes, so the consumer manager needs no consensus of its own. The topic
//! ([`TOPIC`]) has [`SHARDS`] partitions; a subscription's writes go to the partition
//! its name hashes to, in the order they reached sled.
//!
//! - **Write.** The store applies a step's writes to sled, then hands them to
//!   [`Journal::record`] (still under the subscription's lock, so one subscription's
//!   writes are queued in order). Group commit's round ([`Journal::append`]) sends
//!   what was queued, at most [`CHUNK_BYTES`] per record, with acks=all; the round's
//!   waiters are answered once every record is stored. So "durable" means on the
//!   in-sync replicas of the journal, and sled is this node's view of it, never
//!   flushed on the write path.
//! - **Rebuild.** At load the trees are emptied and every partition of the journal is
//!   read from its start to its high watermark, each record's writes applied in
//!   order (`replay`). A node with an empty disk rebuilds the same state.
//! - **Snapshots.** Once a partition has taken `--journal-snapshot-bytes` (32 MiB)
//!   since its last snapshot, the round after it writes every key of that partition's
//!   subscriptions as they are in sled, then deletes the journal below the snapshot
//!   (`DeleteRecords` on every replica). A snapshot is read after the round's queued
//!   writes were sent, and a write reaches sled before it is queued, so whatever a
//!   snapshot misses follows it in the journal; replay from its first offset gives
//!   the same trees. A snapshot cut short by a crash deletes nothing.
//! - **Creation.** The topic is created with the first write, so a cluster without
//!   subscriptions has none. A node that finds no journal topic but holds
//!   subscriptions in sled (an upgrade) creates it and writes its whole store as the
//!   first snapshot; one that finds none while an earlier rebuild was cut short (the
//!   `restoring` mark) refuses to upload a partial copy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use pubsub_client::ProducerRecord;
use pubsub_proto::ids::PartitionId;
use pubsub_proto::v1;

pub(crate) use pubsub_proto::journal::Tree;
use pubsub_proto::journal::{self as codec, Op};

use crate::error::{Error, Result};
use crate::lock::recover;
use crate::ownership::Ownership;
use crate::source::{ReadOutcome, Source};
use crate::store::Store;

/// The journal topic (internal, as Kafka's `__consumer_offsets`).
pub(crate) const TOPIC: &str = pubsub_proto::ids::SUBSCRIPTION_STATE_TOPIC;
/// Partitions of a new journal topic: how far subscriptions can later be spread.
pub(crate) const SHARDS: u32 = 16;
/// Most bytes of writes in one journal record: a quarter of the topic's largest batch
/// (1 MiB by default), so a producer batch of two records always fits.
const CHUNK_BYTES: usize = 256 << 10;
/// The topic's largest batch, where its description does not say.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Bytes asked per read while rebuilding.
const REPLAY_FETCH_BYTES: u32 = 4 << 20;

/// The sled trees the journal carries, indexed by [`Tree`].
pub(crate) type Trees = [sled::Tree; 4];

/// The part of the journal a manager serves.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    /// The partitions rebuilt and written, with the epoch each was granted at;
    /// `None`: every one, without epochs (a lone consumer manager).
    pub(crate) epochs: Option<BTreeMap<u32, u64>>,
    /// The lease a write must still hold when stored to be acknowledged.
    pub(crate) ownership: Option<Arc<Ownership>>,
}

/// One partition's queued writes, as whole records.
struct Queued {
    records: Vec<Vec<u8>>,
    /// Bytes after which a record is full.
    record_bytes: usize,
    /// The epoch the records are written under.
    epoch: Option<u64>,
}

impl Queued {
    fn new(record_bytes: usize, epoch: Option<u64>) -> Queued {
        Queued {
            records: Vec::new(),
            record_bytes,
            epoch,
        }
    }

    /// A record of no writes, under this queue's epoch: it starts a snapshot, or
    /// fences the partition's earlier owners.
    fn marker(&mut self) {
        let mut record = Vec::new();
        codec::begin(&mut record, self.epoch);
        self.records.push(record);
    }

    fn push(&mut self, op: Op<'_>) {
        let full = self
            .records
            .last()
            .is_none_or(|r| r.len() >= self.record_bytes);
        if full {
            self.marker();
        }
        if let Some(record) = self.records.last_mut()
            && let Err(e) = codec::push(record, op)
        {
            // Keys and values are bounded by the store far below the codec's limits.
            tracing::error!(error = %e, "a write too large for the journal was not journaled");
        }
    }
}

/// The journal of one consumer manager's store.
pub(crate) struct Journal {
    source: Source,
    trees: Trees,
    shards: u32,
    /// Bytes a partition takes between snapshots.
    snapshot_after: u64,
    /// Bytes after which a journal record is full.
    record_bytes: usize,
    /// Whether the topic exists (it is created with the first write).
    exists: AtomicBool,
    queued: Mutex<Vec<Queued>>,
    /// Bytes each partition took since its last snapshot (or rebuild).
    since_snapshot: Mutex<Vec<u64>>,
    /// The lease writes are acknowledged under, when consumer managers share the
    /// journal.
    ownership: Option<Arc<Ownership>>,
    /// Per partition, the epoch of this node's grant (`None` for a lone node, or a
    /// partition this node does not serve); changed as partitions are won and let go
    /// (`regrant`).
    epochs: RwLock<Vec<Option<u64>>>,
    /// A partition a write was dropped for, since this node does not serve it: the
    /// store fails at the next round (see [`Journal::record`]).
    unserved: Mutex<Option<u32>>,
    /// Held (shared) while snapshots are written, and alone while partitions are let
    /// go of (`regrant`).
    snapshots: tokio::sync::RwLock<()>,
}

impl Journal {
    /// The journal of `store`, whose trees are emptied and rebuilt from the brokers
    /// (or uploaded, when no journal exists yet), for the partitions of `scope`.
    pub(crate) async fn restore(
        source: Source,
        store: &Store,
        snapshot_after: u64,
        scope: Scope,
    ) -> Result<Journal> {
        let (shards, max_message) = match source.describe(TOPIC).await {
            Ok(described) => (
                Some(partition_count(&described)),
                max_message_bytes(&described),
            ),
            Err(Error::TopicNotFound { .. }) if store.was_restoring()? => {
                return Err(Error::JournalLost { topic: TOPIC });
            }
            Err(Error::TopicNotFound { .. }) => (None, topic_max_message(snapshot_after)),
            Err(e) => return Err(e),
        };
        let count = shards.unwrap_or(SHARDS).max(1);
        let record_bytes = (max_message / 4).clamp(1, CHUNK_BYTES);
        let journal = Journal {
            source,
            trees: store.trees(),
            shards: count,
            snapshot_after: snapshot_after.max(1),
            exists: AtomicBool::new(shards.is_some()),
            record_bytes,
            queued: Mutex::new(Vec::new()),
            since_snapshot: Mutex::new(vec![0; count as usize]),
            ownership: scope.ownership,
            epochs: RwLock::new(
                (0..count)
                    .map(|p| scope.epochs.as_ref().and_then(|e| e.get(&p).copied()))
                    .collect(),
            ),
            unserved: Mutex::new(None),
            snapshots: tokio::sync::RwLock::new(()),
        };
        *recover(journal.queued.lock()) = (0..count).map(|p| journal.fresh(p)).collect();
        if journal.ownership.is_some() && count != pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS
        {
            return Err(Error::JournalUnreadable {
                partition: 0,
                offset: 0,
                why: format!(
                    "the topic has {count} partitions; consumer managers share {}",
                    pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS
                ),
            });
        }
        let served: Vec<u32> = (0..count)
            .filter(|p| scope.epochs.as_ref().is_none_or(|e| e.contains_key(p)))
            .collect();
        if shards.is_none() {
            // No journal yet: created with the first write, or now to upload the
            // state of a node that kept it in sled alone (an upgrade).
            if journal.trees.iter().any(|tree| !tree.is_empty()) {
                tracing::info!(
                    topic = TOPIC,
                    "uploading this node's subscriptions to the new subscription-state journal"
                );
                journal.create().await?;
                journal.snapshot(&served).await?;
            }
            return Ok(journal);
        }
        if journal.ownership.is_some() {
            journal.fence(&served).await?;
        }
        store.mark_restoring(true)?;
        for tree in &journal.trees {
            tree.clear().map_err(Error::Rebuild)?;
        }
        journal.read_again(&served).await?;
        store.mark_restoring(false)?;
        Ok(journal)
    }

    /// Replays partitions `shards` into the trees, refusing any a newer owner wrote
    /// (`check_epoch`); their snapshot counts start from what was read.
    async fn read_again(&self, shards: &[u32]) -> Result<()> {
        for &shard in shards {
            let (bytes, highest) = self.replay(shard).await?;
            self.check_epoch(shard, highest)?;
            recover(self.since_snapshot.lock())[shard as usize] = bytes;
        }
        Ok(())
    }

    /// Refuses a partition whose journal holds a record of a higher epoch than this
    /// node's grant: a newer owner wrote there (this grant is stale, and a reload
    /// for the next one follows), or the epochs went back, and this node's writes
    /// would all be skipped on replay. Either way serving it could lose acks.
    fn check_epoch(&self, shard: u32, highest: u64) -> Result<()> {
        match self.epoch(shard) {
            Some(mine) if highest > mine => Err(Error::JournalUnreadable {
                partition: shard,
                offset: 0,
                why: format!(
                    "an owner with epoch {highest} wrote here, above this node's grant (epoch {mine})"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// An empty queue of partition `shard`'s writes, under this node's epoch.
    fn fresh(&self, shard: u32) -> Queued {
        Queued::new(self.record_bytes, self.epoch(shard))
    }

    /// The epoch partition `shard` is written under: `None` for a lone node, or a
    /// partition this node does not serve.
    fn epoch(&self, shard: u32) -> Option<u64> {
        recover(self.epochs.read())
            .get(shard as usize)
            .copied()
            .flatten()
    }

    /// Whether this node writes partition `shard`: always alone, only the
    /// partitions granted when sharing.
    fn serves(&self, shard: u32) -> bool {
        self.ownership.is_none() || self.epoch(shard).is_some()
    }

    /// Appends a marker under this node's epoch to each partition of `shards`
    /// before reading them: whatever an earlier owner still writes lands after it
    /// with a lower epoch, and every replay skips it (`replay`).
    async fn fence(&self, shards: &[u32]) -> Result<()> {
        let mut records = Vec::new();
        for &shard in shards {
            let mut queue = self.fresh(shard);
            queue.marker();
            records.extend(
                queue
                    .records
                    .into_iter()
                    .map(|r| to_record(shard as usize, r)),
            );
        }
        if !records.is_empty() {
            self.source
                .append(TOPIC, records, self.record_bytes * 2)
                .await?;
        }
        Ok(())
    }

    /// Creates the journal topic (the first write of a cluster's consumer managers);
    /// refuses one made elsewhere meanwhile with another partition count, which the
    /// writes queued so far were not placed by.
    async fn create(&self) -> Result<()> {
        self.source
            .create_topic(new_topic(self.snapshot_after))
            .await?;
        self.found(&self.source.describe(TOPIC).await?)
    }

    /// Takes the topic `described` as the journal, unless its partitions are not the
    /// ones writes are placed by.
    fn found(&self, described: &v1::DescribeTopicResponse) -> Result<()> {
        let found = partition_count(described);
        if found != self.shards {
            return Err(Error::JournalUnreadable {
                partition: 0,
                offset: 0,
                why: format!(
                    "the topic has {found} partitions; this node placed writes by {}",
                    self.shards
                ),
            });
        }
        self.exists.store(true, Ordering::Release);
        Ok(())
    }

    /// The partition a subscription's writes go to.
    fn shard_of(&self, key: &[u8]) -> usize {
        let name = codec::subscription_of(key);
        pubsub_proto::ids::subscription_shard(name, self.shards) as usize
    }

    /// Queues one write that sled already holds, for the next [`Journal::append`].
    pub(crate) fn record(&self, tree: Tree, key: &[u8], value: Option<&[u8]>) {
        let shard = self.shard_of(key);
        if !self.serves(shard as u32) {
            // A subscription is let go of only once nothing writes for it (`regrant`);
            // should one still, the next round fails the store rather than answer it.
            tracing::error!(
                partition = shard,
                "a write for a journal partition this node does not serve was dropped"
            );
            recover(self.unserved.lock()).get_or_insert(shard as u32);
            return;
        }
        let mut queued = recover(self.queued.lock());
        if let Some(queue) = queued.get_mut(shard) {
            queue.push(Op { tree, key, value });
        }
    }

    /// Sends every queued write and waits until all are stored (one group-commit
    /// round); then snapshots any partition due for one.
    pub(crate) async fn append(&self) -> Result<()> {
        if let Some(partition) = *recover(self.unserved.lock()) {
            return Err(Error::Unserved { partition });
        }
        let taken: Vec<Queued> = {
            let mut queued = recover(self.queued.lock());
            let shards = queued.iter_mut().enumerate();
            shards
                .map(|(shard, q)| std::mem::replace(q, self.fresh(shard as u32)))
                .collect()
        };
        let mut records = Vec::new();
        let mut due = Vec::new();
        {
            let mut since = recover(self.since_snapshot.lock());
            for (shard, queue) in taken.into_iter().enumerate() {
                for record in queue.records {
                    since[shard] += record.len() as u64;
                    records.push(to_record(shard, record));
                }
                if since[shard] >= self.snapshot_after && self.serves(shard as u32) {
                    due.push(shard as u32);
                }
            }
        }
        if !records.is_empty() {
            if !self.exists.load(Ordering::Acquire) {
                self.create().await?;
            }
            self.source
                .append(TOPIC, records, self.record_bytes * 2)
                .await?;
            // Stored after the lease may have run out: the next owner may have read
            // the journal without it, so it is not acknowledged.
            if self.ownership.as_ref().is_some_and(|o| !o.still_valid()) {
                return Err(Error::LeaseLost);
            }
        }
        if !due.is_empty() {
            self.snapshot(&due).await?;
        }
        Ok(())
    }

    /// Writes every key of the subscriptions of partitions `shards` as sled holds it
    /// (one pass over the trees for all of them), then deletes each partition's
    /// journal below its snapshot's first record.
    async fn snapshot(&self, shards: &[u32]) -> Result<()> {
        // Held to the end: a partition is let go of only once no snapshot of it runs
        // (its deletion below the snapshot could otherwise hit the next owner's writes).
        let _gate = self.snapshots.read().await;
        let mut queues: Vec<Option<Queued>> = (0..self.shards).map(|_| None).collect();
        for &shard in shards.iter().filter(|&&shard| self.serves(shard)) {
            queues[shard as usize] = Some(self.fresh(shard));
        }
        for (tree, kind) in self.trees.iter().zip(Tree::ALL) {
            for item in tree.iter() {
                let (key, value) = item.map_err(Error::Rebuild)?;
                if let Some(Some(queue)) = queues.get_mut(self.shard_of(&key)) {
                    let value = Some(&value[..]);
                    queue.push(Op {
                        tree: kind,
                        key: &key,
                        value,
                    });
                }
            }
        }
        for (shard, queue) in queues.into_iter().enumerate() {
            if let Some(queue) = queue {
                self.write_snapshot(shard as u32, queue).await?;
            }
        }
        Ok(())
    }

    /// Appends one partition's snapshot and deletes the journal below it.
    async fn write_snapshot(&self, shard: u32, mut queue: Queued) -> Result<()> {
        if queue.records.is_empty() {
            // Nothing to keep: an empty marker record starts the snapshot.
            queue.marker();
        }
        let bytes: u64 = queue.records.iter().map(|r| r.len() as u64).sum();
        let records = queue
            .records
            .into_iter()
            .map(|r| to_record(shard as usize, r))
            .collect();
        let batch_bytes = self.record_bytes * 2;
        let stored = self.source.append(TOPIC, records, batch_bytes).await?;
        recover(self.since_snapshot.lock())[shard as usize] = bytes;
        let first = stored.first().and_then(|m| m.offset);
        tracing::info!(partition = shard, offset = ?first, bytes, "subscription-state journal snapshot written");
        // A node whose lease may have run out deletes nothing: its snapshot may be a
        // replaced owner's (skipped on replay), and what precedes it is then needed.
        let owning = self.ownership.as_ref().is_none_or(|o| o.still_valid());
        if let Some(first) = first.filter(|_| owning) {
            self.delete_below(shard, first).await;
        }
        Ok(())
    }

    /// Deletes a partition's journal below `offset` on each of its replicas; a
    /// replica that fails keeps its records until the next snapshot (replay from an
    /// earlier start gives the same state).
    async fn delete_below(&self, shard: u32, offset: u64) {
        let described = match self.source.describe(TOPIC).await {
            Ok(described) => described,
            Err(e) => {
                tracing::debug!(error = %e, "journal compaction skipped");
                return;
            }
        };
        for address in replica_addresses(&described, shard) {
            if let Err(e) = self
                .source
                .delete_below(&address, TOPIC, shard, offset)
                .await
            {
                tracing::warn!(shard, broker = %address, error = %e, "journal compaction failed on a replica");
            }
        }
    }

    /// Applies a partition's journal, from its start to its high watermark, to the
    /// trees; returns the bytes read and the highest epoch seen.
    async fn replay(&self, shard: u32) -> Result<(u64, u64)> {
        let (mut offset, mut bytes) = (0, 0);
        // The highest epoch read so far: a record below it is a replaced owner's.
        let mut highest = 0;
        loop {
            let fetched = match self
                .source
                .read(TOPIC, shard, offset, Duration::ZERO, REPLAY_FETCH_BYTES)
                .await?
            {
                ReadOutcome::Records(fetched) => fetched,
                ReadOutcome::BelowStart { log_start } => {
                    offset = log_start;
                    continue;
                }
                ReadOutcome::AboveEnd { .. } => return Ok((bytes, highest)),
            };
            if let Some(undecodable) = fetched.undecodable {
                return Err(Error::JournalUnreadable {
                    partition: shard,
                    offset: undecodable.offset,
                    why: undecodable.reason,
                });
            }
            if fetched.records.is_empty() {
                if offset >= fetched.high_watermark {
                    return Ok((bytes, highest));
                }
                return Err(Error::JournalUnreadable {
                    partition: shard,
                    offset,
                    why: "no record below the high watermark".into(),
                });
            }
            for record in fetched.records.iter() {
                let value = record.value.as_deref().unwrap_or_default();
                bytes += value.len() as u64;
                self.apply(value, &mut highest)
                    .map_err(|why| Error::JournalUnreadable {
                        partition: shard,
                        offset: record.offset,
                        why,
                    })?;
                offset = record.offset + 1;
            }
        }
    }

    /// Applies one journal record's writes to the trees, unless an owner with a
    /// higher epoch than its writer's wrote before it (`highest`, raised here). A
    /// record without an epoch (a lone consumer manager's) is always applied.
    fn apply(&self, value: &[u8], highest: &mut u64) -> std::result::Result<(), String> {
        let record = codec::decode(value).map_err(|e| e.to_string())?;
        if !current(record.epoch, highest) {
            tracing::warn!(epoch = ?record.epoch, highest = *highest, "skipped a journal record of a replaced owner");
            return Ok(());
        }
        for op in record.ops {
            let tree = &self.trees[op.tree as usize];
            let written = match op.value {
                Some(value) => tree.insert(op.key, value).map(drop),
                None => tree.remove(op.key).map(drop),
            };
            written.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Whether a record written under `epoch` is applied after records whose highest
/// epoch was `highest` (raised to it): not if a newer owner wrote before it; always
/// if it has no epoch (a lone consumer manager's).
fn current(epoch: Option<u64>, highest: &mut u64) -> bool {
    match epoch {
        Some(epoch) if epoch < *highest => false,
        Some(epoch) => {
            *highest = epoch;
            true
        }
        None => true,
    }
}

/// A journal record for partition `shard`.
fn to_record(shard: usize, value: Vec<u8>) -> ProducerRecord {
    ProducerRecord {
        value: Some(Bytes::from(value)),
        partition: Some(PartitionId(shard as u32)),
        ..Default::default()
    }
}

mod regrant;
mod topic;
use topic::{max_message_bytes, new_topic, partition_count, replica_addresses, topic_max_message};
#[cfg(test)]
mod tests;
