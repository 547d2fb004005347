//! [`ClusterState`] under Raft: applies committed entries, builds and installs snapshots,
//! and publishes the state to the rest of the node.
//!
//! The state itself lives in memory; what is persisted is the last snapshot, in the
//! `raft-snapshot` sled tree: `meta` holds the JSON of the openraft `SnapshotMeta` and
//! `data` the JSON of the `ClusterState`, written together in one batch and flushed. On
//! start the state is loaded from that snapshot, and openraft re-applies the committed
//! log entries after it. A snapshot is taken every
//! `snapshot_logs_since_last` entries (see [`RaftSettings`](super::RaftSettings)), so at most that
//! many are replayed.
//!
//! Every applied batch replaces the published [`MetadataView`]. Watchers are woken only
//! when the metadata they see changed (not for heartbeats), through
//! `watch::Sender::send_if_modified`.

// openraft's traits return its `StorageError` (large, unboxed); the helpers here return
// the same type so `?` passes it through unchanged.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use pubsub_proto::flush::SledFile;
use tokio::sync::watch;

use super::codec::{self, PAYLOAD_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use super::{CommandResult, Entry, NodeId, StorageError, TypeConfig};
use crate::command::Response;
use crate::state::ClusterState;

const SNAPSHOT_TREE: &str = "raft-snapshot";
const META_KEY: &[u8] = b"meta";
const DATA_KEY: &[u8] = b"data";

/// The metadata as last applied on this node.
#[derive(Clone, Debug, Default)]
pub struct MetadataView {
    /// Index of the last applied Raft log entry: the metadata version.
    pub applied_index: u64,
    /// The state after it.
    pub state: Arc<ClusterState>,
}

/// The Raft state machine: the cluster state plus what openraft needs to resume.
pub(crate) struct StateMachineStore {
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    snapshots: sled::Tree,
    /// Distinguishes snapshots built at the same log id.
    snapshot_seq: u64,
    published: watch::Sender<MetadataView>,
    /// The database's data file, synced after each flush.
    file: SledFile,
    users: Arc<()>,
}

/// Builds a snapshot from a copy of the state taken when openraft asked for it, so
/// building does not hold up applying.
pub(crate) struct SnapshotBuilder {
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    snapshots: sled::Tree,
    file: SledFile,
    snapshot_id: String,
    _users: Arc<()>,
}

fn snapshot_read_error(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::read_snapshot(None, e).into()
}

fn snapshot_write_error(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::write_snapshot(None, e).into()
}

impl StateMachineStore {
    /// Opens the state machine in `db`, starting from its last snapshot if any; `users`
    /// counts handles on the database, as for the log store.
    pub(crate) fn open(
        db: &sled::Db,
        file: SledFile,
        users: &Arc<()>,
    ) -> Result<(Self, watch::Receiver<MetadataView>), StorageError> {
        let snapshots = db
            .open_tree(SNAPSHOT_TREE)
            .map_err(|e| snapshot_read_error(&e))?;
        let (state, last_applied, membership) = match load_snapshot(&snapshots)? {
            Some((meta, data)) => (decode_state(&data)?, meta.last_log_id, meta.last_membership),
            None => Default::default(),
        };
        let view = MetadataView {
            applied_index: last_applied.map_or(0, |l| l.index),
            state: Arc::new(state.clone()),
        };
        let (published, watching) = watch::channel(view);
        let store = StateMachineStore {
            state,
            last_applied,
            membership,
            snapshots,
            snapshot_seq: 0,
            published,
            file,
            users: users.clone(),
        };
        Ok((store, watching))
    }

    fn publish(&self, wake_watchers: bool) {
        let view = MetadataView {
            applied_index: self.last_applied.map_or(0, |l| l.index),
            state: Arc::new(self.state.clone()),
        };
        self.published.send_if_modified(|current| {
            *current = view;
            wake_watchers
        });
    }
}

/// A persisted snapshot: its openraft meta and the state's bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

fn load_snapshot(tree: &sled::Tree) -> Result<Option<StoredSnapshot>, StorageError> {
    let meta = tree.get(META_KEY).map_err(|e| snapshot_read_error(&e))?;
    let data = tree.get(DATA_KEY).map_err(|e| snapshot_read_error(&e))?;
    let (Some(meta), Some(data)) = (meta, data) else {
        return Ok(None);
    };
    let meta = codec::decode(&meta, PAYLOAD_BYTES_MAX).map_err(|e| snapshot_read_error(&e))?;
    Ok(Some((meta, data.to_vec())))
}

fn decode_state(data: &[u8]) -> Result<ClusterState, StorageError> {
    codec::decode(data, SNAPSHOT_BYTES_MAX)
        .map_err(|e| StorageIOError::read_state_machine(&e).into())
}

/// Persists a snapshot (meta and data in one batch) and flushes it.
async fn save_snapshot(
    tree: &sled::Tree,
    file: &SledFile,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), StorageError> {
    let meta_bytes = codec::encode(meta).map_err(|e| snapshot_write_error(&e))?;
    let mut batch = sled::Batch::default();
    batch.insert(META_KEY, meta_bytes);
    batch.insert(DATA_KEY, data);
    tree.apply_batch(batch)
        .map_err(|e| snapshot_write_error(&e))?;
    super::flush(tree, file)
        .await
        .map_err(|e| snapshot_write_error(&e))?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = codec::encode(&self.state).map_err(|e| snapshot_write_error(&e))?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        };
        save_snapshot(&self.snapshots, &self.file, &meta, &data).await?;
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            bytes = data.len(),
            "built metadata snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError,
    > {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut changed = false;
        for entry in entries {
            if let Some(last) = self.last_applied {
                assert!(
                    entry.log_id.index > last.index,
                    "entries are applied in log order, each once"
                );
            }
            self.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                // A new leader's first entry: watchers learn of the leader change.
                EntryPayload::Blank => Ok(Response::Applied),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(Response::Applied)
                }
                EntryPayload::Normal(command) => {
                    let kind = command.kind();
                    let result = self.state.apply(command);
                    if let Err(e) = &result {
                        tracing::debug!(command = kind, error = %e, "command refused");
                    }
                    result
                }
            };
            changed |= result.as_ref().is_ok_and(Response::changes_metadata);
            results.push(result);
        }
        self.publish(changed);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_seq),
            None => format!("0-0-{}", self.snapshot_seq),
        };
        SnapshotBuilder {
            state: self.state.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
            file: self.file.clone(),
            snapshot_id,
            _users: self.users.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = decode_state(&data)?;
        save_snapshot(&self.snapshots, &self.file, meta, &data).await?;
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            bytes = data.len(),
            "installed metadata snapshot from the leader"
        );
        self.state = state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish(true);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(
            load_snapshot(&self.snapshots)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::command::Command;

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    fn register(broker: u32) -> EntryPayload<TypeConfig> {
        EntryPayload::Normal(Command::RegisterBroker {
            broker,
            address: format!("b{broker}:1"),
            rack: None,
            kafka_address: None,
            now_ms: 1,
            lease_ms: 0,
            proven: false,
        })
    }

    #[tokio::test]
    async fn snapshots_persist_and_restore_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let membership = Membership::new(
            vec![[1u64].into_iter().collect()],
            [(1u64, openraft::BasicNode::new("n1:1"))]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        let built = {
            let db = crate::raft::open_test_db(dir.path());
            let (mut sm, mut watching) =
                StateMachineStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
            let results = sm
                .apply([
                    entry(1, EntryPayload::Membership(membership.clone())),
                    entry(2, register(7)),
                    entry(
                        3,
                        EntryPayload::Normal(Command::Heartbeat {
                            broker: 99,
                            now_ms: 1,
                            sizes: Vec::new(),
                        }),
                    ),
                ])
                .await
                .unwrap();
            assert_eq!(results.len(), 3);
            assert!(results[2].is_err(), "unknown broker");
            assert!(watching.has_changed().unwrap());
            assert_eq!(watching.borrow_and_update().applied_index, 3);
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(3));
            snapshot.meta
        };
        let db = crate::raft::open_test_db(dir.path());
        let (mut sm, watching) =
            StateMachineStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
        let (applied, stored) = sm.applied_state().await.unwrap();
        assert_eq!(applied, built.last_log_id);
        assert_eq!(stored.membership(), &membership);
        assert!(watching.borrow().state.brokers().contains_key(&7));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built);

        // Installing a snapshot from elsewhere replaces the state.
        let other_dir = tempfile::tempdir().unwrap();
        let other_db = crate::raft::open_test_db(other_dir.path());
        let (mut other, other_watching) =
            StateMachineStore::open(&other_db, SledFile::none(), &Arc::default()).unwrap();
        other
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert!(other_watching.borrow().state.brokers().contains_key(&7));
        assert_eq!(other.applied_state().await.unwrap().0, built.last_log_id);
    }

    #[tokio::test]
    async fn heartbeats_do_not_wake_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::raft::open_test_db(dir.path());
        let (mut sm, mut watching) =
            StateMachineStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
        sm.apply([entry(1, register(1))]).await.unwrap();
        watching.borrow_and_update();
        sm.apply([entry(
            2,
            EntryPayload::Normal(Command::Heartbeat {
                broker: 1,
                now_ms: 50,
                sizes: Vec::new(),
            }),
        )])
        .await
        .unwrap();
        assert!(!watching.has_changed().unwrap());
        assert_eq!(watching.borrow().applied_index, 2, "yet readers see it");
        assert_eq!(
            watching.borrow().state.brokers()[&1].last_heartbeat_ms(),
            50
        );
    }

    #[tokio::test]
    async fn a_corrupt_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::raft::open_test_db(dir.path());
        let (mut sm, _) = StateMachineStore::open(&db, SledFile::none(), &Arc::default()).unwrap();
        let meta = SnapshotMeta::default();
        let result = sm
            .install_snapshot(&meta, Box::new(Cursor::new(b"{broken".to_vec())))
            .await;
        assert!(result.is_err());
    }
}
