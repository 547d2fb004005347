//! The Raft log and vote in sled.
//!
//! Two trees: `raft-log` maps each entry's index, as 8 big-endian bytes (so sled's key
//! order is log order), to the JSON of the entry; `raft-meta` holds the JSON of the vote
//! (`vote`), the last committed log id (`committed`) and the last purged log id
//! (`purged`).
//!
//! Raft's safety rests on a node never forgetting a vote or an entry it acknowledged. sled
//! buffers writes and flushes every 500 ms by default, so `save_vote`, `append` (before
//! its callback), `truncate` and `purge` flush (`raft::flush`) before they report success.
//! `committed` is written without a flush: losing it only means re-applying fewer entries
//! at start-up; the next flush persists it anyway.

// openraft's traits return its `StorageError` (large, unboxed); the helpers here return
// the same type so `?` passes it through unchanged.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use pubsub_proto::flush::SledFile;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{self, PAYLOAD_BYTES_MAX};
use super::{Entry, NodeId, StorageError, TypeConfig};

const LOG_TREE: &str = "raft-log";
const META_TREE: &str = "raft-meta";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";

/// The Raft log store over one sled database. Clones share the trees; openraft uses a
/// clone as its log reader.
#[derive(Clone)]
pub(crate) struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    /// The database's data file, synced after each flush.
    file: SledFile,
    /// Counts live handles on the database, so the owner can wait for the last one
    /// (openraft's replication tasks hold clones) before reopening it.
    _users: Arc<()>,
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_error(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::read_logs(e).into()
}

fn write_error(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::write_logs(e).into()
}

impl LogStore {
    /// Opens (or creates) the log trees in `db`; `users` counts the store's clones.
    pub(crate) fn open(
        db: &sled::Db,
        file: SledFile,
        users: &Arc<()>,
    ) -> Result<Self, sled::Error> {
        Ok(LogStore {
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
            file,
            _users: users.clone(),
        })
    }

    /// Whether nothing was ever stored: no vote, no entry, nothing purged. Only then may
    /// a node bootstrap a new cluster.
    pub(crate) fn is_pristine(&self) -> Result<bool, sled::Error> {
        Ok(self.meta.is_empty() && self.log.is_empty())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self.meta.get(key).map_err(|e| read_error(&e))? else {
            return Ok(None);
        };
        codec::decode(&bytes, PAYLOAD_BYTES_MAX)
            .map(Some)
            .map_err(|e| read_error(AnyError::new(&e).add_context(|| "raft-meta")))
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| write_error(&e))?;
        self.meta.insert(key, bytes).map_err(|e| write_error(&e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        super::flush(&self.log, &self.file)
            .await
            .map_err(|e| write_error(&e))?;
        Ok(())
    }

    fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
        codec::decode(bytes, PAYLOAD_BYTES_MAX)
            .map_err(|e| read_error(AnyError::new(&e).add_context(|| "raft-log entry")))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(log_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(log_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(log_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(log_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(|e| read_error(&e))?;
            entries.push(Self::decode_entry(&bytes)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(PURGED_KEY)?;
        let last = match self.log.last().map_err(|e| read_error(&e))? {
            Some((_, bytes)) => Some(Self::decode_entry(&bytes)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = codec::encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.meta
            .insert(VOTE_KEY, bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        super::flush(&self.meta, &self.file)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE_KEY)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.write_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED_KEY)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| write_error(&e))?;
            batch.insert(&log_key(entry.log_id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(|e| write_error(&e))?;
        // Durable before acknowledged: the callback tells openraft the entries survive a
        // crash, so it only runs after the flush.
        match super::flush(&self.log, &self.file).await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(write_error(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "truncating raft log");
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| write_error(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| write_error(&e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "purging raft log");
        // The purge mark goes first: after a crash between the two steps, entries at or
        // below it are ignored and removed by the next purge.
        self.write_meta(PURGED_KEY, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_key(log_id.index)) {
            let (key, _) = item.map_err(|e| write_error(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| write_error(&e))?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn entries_votes_and_purges_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::raft::open_test_db(dir.path());
            let mut store = LogStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
            assert!(store.is_pristine().unwrap());
            store
                .blocking_append((1..=5).map(|i| entry(1, i)))
                .await
                .unwrap();
            store.save_vote(&Vote::new(3, 2)).await.unwrap();
            store.truncate(entry(1, 5).log_id).await.unwrap();
            store.purge(entry(1, 2).log_id).await.unwrap();
            store
                .save_committed(Some(entry(1, 3).log_id))
                .await
                .unwrap();
            db.flush().unwrap();
        }
        let db = crate::raft::open_test_db(dir.path());
        let mut store = LogStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
        assert!(!store.is_pristine().unwrap());
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        assert_eq!(
            store.read_committed().await.unwrap(),
            Some(entry(1, 3).log_id)
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(1, 2).log_id));
        assert_eq!(state.last_log_id, Some(entry(1, 4).log_id));
        assert_eq!(
            indexes(&store.try_get_log_entries(0..100).await.unwrap()),
            vec![3, 4]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(4..=4).await.unwrap()),
            vec![4]
        );
    }

    #[tokio::test]
    async fn a_fully_purged_log_reports_the_purged_id_as_last() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::raft::open_test_db(dir.path());
        let mut store = LogStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
        store
            .blocking_append((1..=3).map(|i| entry(2, i)))
            .await
            .unwrap();
        store.purge(entry(2, 3).log_id).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(entry(2, 3).log_id));
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn corrupt_entries_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::raft::open_test_db(dir.path());
        let mut store = LogStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
        store.log.insert(log_key(1), &b"{not json"[..]).unwrap();
        assert!(store.try_get_log_entries(..).await.is_err());
        assert!(store.get_log_state().await.is_err());
    }
}
