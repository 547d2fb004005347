//! Durable state in sled: subscriptions, per-partition cursors (committed offset and
//! first never-delivered offset), acknowledgements above the committed offset, and
//! delivery counts of redelivered records.
//!
//! Writes are applied key by key under the subscription's lock (so they reach sled in
//! order; see [`Changes`] for why not as batches) and made durable with
//! [`Store::flush`] (group commit) before the caller answers. Keys are
//! `name 0x00 partition(be32) [offset(be64)]`; names never hold NUL.
//!
//! Values: a cursor is `committed(be64) next(be64)`; an ack is a range of
//! acknowledged offsets keyed by its first offset, its value the offset past its last
//! (`end(be64)`), or empty for the single offset of the key (as versions before ranges
//! wrote every ack; a version before ranges would read a range as its first offset
//! only, and deliver the rest again); a delivery count is `count(be32)`.
//!
//! The first sled error (a full disk, say) fails the store for good: memory may then
//! be ahead of the disk, and sled 0.34 keeps the error, so the same database never
//! works again. Everything after answers [`Error::Reloading`], and [`Store::failed`]
//! tells the supervisor to reopen the database and reload from it.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use pubsub_proto::flush::{self, SledFile, Timing};
use serde::{Deserialize, Serialize};

use crate::commit::GroupCommit;
use crate::error::{Error, Result};
use crate::journal::{self, Journal, Scope};
use crate::options::Options;
use crate::source::Source;

/// A subscription as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Subscription name.
    pub name: String,
    /// Topic it reads.
    pub topic: String,
    /// Partition count of the topic when subscribed.
    pub partitions: u32,
    /// Effective options.
    pub options: Options,
    /// Last group generation handed out (never reused after a restart).
    #[serde(default)]
    pub generation: u64,
    /// Records sent to the dead-letter topic.
    #[serde(default)]
    pub dead_lettered: u64,
    /// Replay position in the dead-letter topic, per its partition.
    #[serde(default)]
    pub replayed: Vec<u64>,
    /// Incarnation (`created_ms`) of the topic the offsets belong to; 0 when not known
    /// yet (stored before it was recorded, or a broker that does not say).
    #[serde(default)]
    pub topic_created_ms: u64,
    /// Incarnation of the dead-letter topic the replay positions belong to (0: none).
    #[serde(default)]
    pub dead_letter_created_ms: u64,
}

impl SubscriptionRecord {
    /// Subscription `s` of topic `t` with default options, for tests and benchmarks.
    pub(crate) fn for_test(partitions: u32, topic_created_ms: u64) -> SubscriptionRecord {
        SubscriptionRecord {
            name: "s".into(),
            topic: "t".into(),
            partitions,
            options: Options::resolve("t", "s", None).expect("default options are valid"),
            generation: 0,
            dead_lettered: 0,
            replayed: Vec::new(),
            topic_created_ms,
            dead_letter_created_ms: 0,
        }
    }
}

/// A partition's cursor as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredCursor {
    /// Everything below is acknowledged.
    pub committed: u64,
    /// First offset never delivered.
    pub next: u64,
}

/// A partition cursor reloaded from disk.
pub struct LoadedCursor {
    /// Committed and next offsets.
    pub cursor: StoredCursor,
    /// Acknowledged offsets above the committed one, as ranges.
    pub acked: Vec<Range<u64>>,
    /// Delivery counts of redelivered offsets.
    pub deliveries: Vec<(u64, u32)>,
}

/// The database's name in the log line of a slow flush.
const STORE: &str = "consumer manager";

/// The sled database of a consumer manager. Not `Clone`: the manager owns the only
/// handle, so dropping the manager closes the database (and frees its file lock).
pub struct Store {
    db: sled::Db,
    /// sled's data file, synced after each flush (see `SledFile`).
    file: SledFile,
    /// Set by the first sled error or a flush that never finished: memory may then be
    /// ahead of the disk, so nothing more is acknowledged and the supervisor reloads
    /// from disk (as a log does after a failed fsync). Shared with the flush task.
    failed: Arc<watch::Sender<bool>>,
    /// One flush at a time for every writer (see `commit`).
    commit: Arc<GroupCommit>,
    /// Where writes are made durable, once rebuilt from it (see `journal`); without
    /// one, a flush of sled makes them durable.
    journal: OnceLock<Arc<Journal>>,
    subscriptions: sled::Tree,
    cursors: sled::Tree,
    acks: sled::Tree,
    deliveries: sled::Tree,
}

/// Writes one tree's changes key by key, values first, then removals; each is
/// queued in the journal (if any) once sled holds it.
fn write_tree(
    tree: &sled::Tree,
    writes: &Writes,
    journal: Option<(&Journal, journal::Tree)>,
) -> sled::Result<()> {
    let values = writes.iter().filter_map(|(k, v)| Some((k, v.as_deref()?)));
    for (key, value) in values {
        tree.insert(key.as_slice(), value)?;
        if let Some((journal, kind)) = journal {
            journal.record(kind, key, Some(value));
        }
    }
    for (key, _) in writes.iter().filter(|(_, v)| v.is_none()) {
        tree.remove(key.as_slice())?;
        if let Some((journal, kind)) = journal {
            journal.record(kind, key, None);
        }
    }
    Ok(())
}

/// Fails a store for good (see [`Store::failed`]); logs the cause once.
fn fail(failed: &watch::Sender<bool>, why: &dyn std::fmt::Display) {
    if !failed.send_replace(true) {
        tracing::error!(error = %why, "consumer manager database failed; acknowledging nothing more until it is reloaded from disk");
    }
}

fn partition_key(name: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 13);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn offset_key(name: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut key = partition_key(name, partition);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    key
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Where the store's id is kept in the store itself (the default tree).
const STORE_ID_KEY: &[u8] = b"store_id";
/// Set in the default tree while the trees are rebuilt from the journal.
const RESTORING_KEY: &[u8] = b"restoring";

impl Store {
    /// Opens (or creates) the database under `dir`, refusing one that lost its records
    /// (`pubsub_proto::store_id`).
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let opening = |tree| {
            let path = dir.to_path_buf();
            move |source| Error::OpenDatabase { path, tree, source }
        };
        let path = dir.join("sled");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(opening(None))?;
        // A store that comes back empty is refused, never served as new.
        let stored = db
            .get(STORE_ID_KEY)
            .map_err(opening(None))?
            .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok());
        let file = SledFile::open(&path).map_err(|e| opening(None)(sled::Error::Io(e)))?;
        pubsub_proto::store_id::check(&path, stored, |id| {
            db.insert(STORE_ID_KEY, &id[..])
                .and_then(|_| db.flush())
                .map_err(std::io::Error::other)?;
            file.sync()
        })?;
        let tree = |name: &'static str| db.open_tree(name).map_err(opening(Some(name)));
        Ok(Store {
            subscriptions: tree("subscriptions")?,
            cursors: tree("cursors")?,
            acks: tree("acks")?,
            deliveries: tree("deliveries")?,
            db,
            file,
            failed: Arc::new(watch::Sender::new(false)),
            commit: GroupCommit::new(),
            journal: OnceLock::new(),
        })
    }

    /// Whether the store has failed (see [`Store::failed`]).
    pub fn has_failed(&self) -> bool {
        *self.failed.borrow()
    }

    /// Resolves once the store has failed; owns what it needs, so a task can wait on
    /// it beside work that borrows the manager.
    pub fn failed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut failed = self.failed.subscribe();
        async move {
            // The sender lives as long as the store; a closed channel means it is gone.
            let _ = failed.wait_for(|&failed| failed).await;
        }
    }

    /// Every stored subscription.
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        self.subscriptions
            .iter()
            .map(|item| {
                let (key, value) = self.fail_on(item)?;
                serde_json::from_slice(&value).map_err(|source| Error::UnreadableSubscription {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })
            })
            .collect()
    }

    /// Writes a subscription record (not yet durable: see [`Store::flush`]).
    pub fn put_subscription(&self, record: &SubscriptionRecord) -> Result<()> {
        self.check_not_failed()?;
        let value = serde_json::to_vec(record).map_err(Error::Encode)?;
        let inserted = self
            .subscriptions
            .insert(record.name.as_bytes(), &value[..]);
        self.fail_on(inserted)?;
        if let Some(journal) = self.journal.get() {
            let (kind, key) = (journal::Tree::Subscriptions, record.name.as_bytes());
            journal.record(kind, key, Some(&value));
        }
        Ok(())
    }

    /// Reloads one partition's cursor; `None` if it was never stored.
    pub fn cursor(&self, name: &str, partition: u32) -> Result<Option<LoadedCursor>> {
        let Some(value) = self.fail_on(self.cursors.get(partition_key(name, partition)))? else {
            return Ok(None);
        };
        let (Some(committed), Some(next)) = (
            value.get(..8).and_then(be_u64),
            value.get(8..16).and_then(be_u64),
        ) else {
            return Err(Error::UnreadableCursor {
                subscription: name.to_string(),
                partition,
                len: value.len(),
            });
        };
        let prefix = partition_key(name, partition);
        let offset_of = |key: &[u8]| key.get(prefix.len()..).and_then(be_u64);
        let mut acked = Vec::new();
        let mut stale = Vec::new();
        for item in self.acks.scan_prefix(&prefix) {
            let (key, value) = self.fail_on(item)?;
            let Some(start) = offset_of(&key) else {
                continue;
            };
            let end = match value.len() {
                0 => start.saturating_add(1),
                _ => be_u64(&value).ok_or_else(|| Error::UnreadableCursor {
                    subscription: name.to_string(),
                    partition,
                    len: value.len(),
                })?,
            };
            if end <= committed.saturating_add(1) || start >= next {
                stale.push((&self.acks, key));
                continue;
            }
            acked.push(start..end);
        }
        let mut deliveries = Vec::new();
        for item in self.deliveries.scan_prefix(&prefix) {
            let (key, value) = self.fail_on(item)?;
            if let (Some(offset), Some(count)) = (offset_of(&key), be_u32(&value)) {
                if offset < committed || offset >= next {
                    stale.push((&self.deliveries, key));
                    continue;
                }
                deliveries.push((offset, count));
            }
        }
        // Left by a step a crash cut short (see `apply`): gone before any later
        // position could make them count.
        for (tree, key) in stale {
            self.fail_on(tree.remove(key))?;
        }
        Ok(Some(LoadedCursor {
            cursor: StoredCursor { committed, next },
            acked,
            deliveries,
        }))
    }

    /// Applies a set of changes (in order with other applies; durable after flush).
    /// Should a crash keep only part of it, what is kept is harmless: cursors go first
    /// (a newer committed offset with stale acks and counts below it, ignored and
    /// removed on load, never removed acks with an older committed offset); in a tree,
    /// writes go before removals (a merged ack range is stored before the ranges it
    /// swallowed are removed, so no ack is ever missing).
    pub fn apply(&self, changes: Changes) -> Result<()> {
        self.check_not_failed()?;
        if changes.empty {
            return Ok(());
        }
        let journal = self.journal.get().map(Arc::as_ref);
        let to = |kind| journal.map(|j| (j, kind));
        let applied = write_tree(&self.cursors, &changes.cursors, to(journal::Tree::Cursors))
            .and_then(|()| write_tree(&self.acks, &changes.acks, to(journal::Tree::Acks)))
            .and_then(|()| {
                let to = to(journal::Tree::Deliveries);
                write_tree(&self.deliveries, &changes.deliveries, to)
            });
        self.fail_on(applied)
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.has_failed() {
            return Err(Error::Reloading);
        }
        Ok(())
    }

    /// Passes a sled result on; an error fails the store (whatever the operation:
    /// the caller may already have changed memory to match a write that did not land).
    fn fail_on<T>(&self, result: sled::Result<T>) -> Result<T> {
        result.map_err(|e| {
            self.fail(&e);
            Error::Reloading
        })
    }

    /// Ends the store's service as a failure does (see [`Store::failed`]), without
    /// logging one: its manager is retired while the database is sound.
    pub(crate) fn stop(&self) {
        self.failed.send_replace(true);
    }

    /// Fails the store for good (see [`Store::failed`]); logs the cause once.
    pub(crate) fn fail(&self, why: &dyn std::fmt::Display) {
        fail(&self.failed, why);
    }

    /// Adds to `changes` the removal of the ack ranges starting in `span` of a
    /// partition, to be stored again as they now are (ranges merged).
    pub fn forget_acks(
        &self,
        changes: &mut Changes,
        name: &str,
        partition: u32,
        span: Range<u64>,
    ) -> Result<()> {
        let (start, end) = (
            offset_key(name, partition, span.start),
            offset_key(name, partition, span.end),
        );
        for item in self.acks.range(start..end) {
            let (key, _) = self.fail_on(item)?;
            changes.acks.entry(key.to_vec()).or_insert(None);
        }
        changes.empty = false;
        Ok(())
    }

    /// Adds to `changes` the removal of acknowledgements and delivery counts of
    /// offsets in `[from, to)` of a partition (the committed offset passed them). They
    /// go with the cursor's change, never ahead of it.
    pub fn forget_range(
        &self,
        changes: &mut Changes,
        name: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let (start, end) = (
            offset_key(name, partition, from),
            offset_key(name, partition, to),
        );
        for item in self.acks.range(start.clone()..end.clone()) {
            let (key, _) = self.fail_on(item)?;
            changes.acks.entry(key.to_vec()).or_insert(None);
        }
        for item in self.deliveries.range(start..end) {
            let (key, _) = self.fail_on(item)?;
            changes.deliveries.entry(key.to_vec()).or_insert(None);
        }
        changes.empty = false;
        Ok(())
    }

    /// Deletes a subscription and everything stored for it.
    pub fn delete_subscription(&self, name: &str) -> Result<()> {
        self.check_not_failed()?;
        let prefix = name_prefix(name);
        let journal = self.journal.get();
        let trees = [
            (&self.cursors, journal::Tree::Cursors),
            (&self.acks, journal::Tree::Acks),
            (&self.deliveries, journal::Tree::Deliveries),
        ];
        for (tree, kind) in trees {
            let mut batch = sled::Batch::default();
            let mut keys = Vec::new();
            for item in tree.scan_prefix(&prefix) {
                let (key, _) = self.fail_on(item)?;
                batch.remove(key.clone());
                keys.push(key);
            }
            self.fail_on(tree.apply_batch(batch))?;
            if let Some(journal) = journal {
                keys.iter().for_each(|key| journal.record(kind, key, None));
            }
        }
        self.fail_on(self.subscriptions.remove(name.as_bytes()))?;
        if let Some(journal) = journal {
            journal.record(journal::Tree::Subscriptions, name.as_bytes(), None);
        }
        Ok(())
    }

    /// Makes everything applied so far durable, through group commit (`commit`): the
    /// flush runs through the one flush helper (`pubsub_proto::flush`) on tokio's
    /// blocking pool, a flush still waiting after a second followed by a new one
    /// (which wakes a flush sled forgot, and covers everything the first did); any
    /// failure, or no answer within 10 s, fails the store. Writers that ask while a
    /// flush runs share the next one.
    pub async fn flush(&self) -> Result<()> {
        self.check_not_failed()?;
        if let Some(journal) = self.journal.get() {
            let (journal, failed) = (journal.clone(), self.failed.clone());
            let round = move || {
                let (journal, failed) = (journal.clone(), failed.clone());
                async move {
                    let appended = journal.append().await;
                    appended.map_err(|e| fail(&failed, &e)).is_ok()
                }
            };
            self.commit.durable(round, self.failed()).await;
            return self.check_not_failed();
        }
        let (flush_fn, failed) = (self.flush_fn(), self.failed.clone());
        let round = move || {
            let (flush_fn, failed) = (flush_fn.clone(), failed.clone());
            async move {
                let flushed = flush::on_blocking_pool(flush_fn, Timing::DEFAULT, STORE).await;
                flushed.map_err(|e| fail(&failed, &e)).is_ok()
            }
        };
        self.commit.durable(round, self.failed()).await;
        self.check_not_failed()
    }

    /// Rebuilds the trees from the subscription-state journal on the brokers (or
    /// uploads them when there is none yet); from then on, writes are made durable
    /// there (see `journal`).
    pub(crate) async fn attach_journal(
        &self,
        source: Source,
        snapshot_after: u64,
        scope: Scope,
    ) -> Result<()> {
        let journal = Journal::restore(source, self, snapshot_after, scope).await?;
        let _ = self.journal.set(Arc::new(journal));
        Ok(())
    }

    /// The journal writes are made durable in, once attached.
    pub(crate) fn journal(&self) -> Option<&Journal> {
        self.journal.get().map(Arc::as_ref)
    }

    /// The trees the journal carries, in [`journal::Tree`] order.
    pub(crate) fn trees(&self) -> journal::Trees {
        [
            self.subscriptions.clone(),
            self.cursors.clone(),
            self.acks.clone(),
            self.deliveries.clone(),
        ]
    }

    /// Whether a rebuild from the journal was cut short (the trees hold part of it).
    pub(crate) fn was_restoring(&self) -> Result<bool> {
        let mark = self.db.get(RESTORING_KEY).map_err(Error::Rebuild)?;
        Ok(mark.is_some())
    }

    /// Sets or clears the mark that a rebuild from the journal is under way, durably.
    pub(crate) fn mark_restoring(&self, on: bool) -> Result<()> {
        let marked = match on {
            true => self.db.insert(RESTORING_KEY, &[1u8][..]).map(drop),
            false => self.db.remove(RESTORING_KEY).map(drop),
        };
        marked
            .and_then(|()| self.db.flush().map(drop))
            .and_then(|()| self.file.sync().map_err(sled::Error::Io))
            .map_err(Error::Rebuild)
    }

    /// One blocking flush of the database, for [`flush::on_blocking_pool`].
    fn flush_fn(&self) -> impl Fn() -> std::io::Result<()> + Clone + Send + 'static {
        let (db, file) = (self.db.clone(), self.file.clone());
        move || {
            db.flush().map_err(std::io::Error::other)?;
            file.sync()
        }
    }

    /// Wakes every flush still waiting on a failed database, so it ends and lets go
    /// of the database: a flush that finds sled's error wakes the others.
    pub async fn wake_flushes(&self) {
        // One flush, waited for no longer than a nudge: its result does not matter.
        let once = Timing {
            timeout: Timing::DEFAULT.nudge,
            ..Timing::DEFAULT
        };
        let _ = flush::on_blocking_pool(self.flush_fn(), once, STORE).await;
    }
}

mod changes;
pub(crate) use changes::Changes;
use changes::Writes;

#[cfg(test)]
mod tests;
