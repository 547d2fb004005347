//! Raft plumbing: the openraft type configuration and the pieces openraft drives.
//!
//! - [`log_store`]: the Raft log and vote in sled, flushed before anything is acknowledged.
//! - [`state_machine`]: [`ClusterState`](crate::state::ClusterState) under Raft, with
//!   snapshots persisted in sled.
//! - [`network`]: the client side of the `Raft` gRPC service, one lazy channel per peer.
//! - [`codec`]: the bounded JSON encoding of everything above.

pub(crate) mod codec;
pub(crate) mod log_store;
pub(crate) mod network;
pub(crate) mod state_machine;

use std::io::Cursor;
use std::time::Duration;

use openraft::{BasicNode, Config, SnapshotPolicy};
use pubsub_proto::flush::{FlushError, SledFile, Timing};

use crate::command::{Command, CommandError, Response};
use crate::error::{Error, Result};

/// What applying one log entry gives: the command's response or why it was refused.
pub(crate) type CommandResult = std::result::Result<Response, CommandError>;

openraft::declare_raft_types!(
    /// The openraft type configuration of the cluster manager: commands as log data,
    /// `u64` node ids, nodes known by their gRPC address.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A handle on the running Raft node.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A Raft node id.
pub(crate) type NodeId = u64;
/// openraft's storage error for this configuration.
pub(crate) type StorageError = openraft::StorageError<NodeId>;

/// Log entries after which a snapshot is taken: the metadata is small, so snapshots are
/// cheap and a short log makes restarts and catch-up fast.
pub(crate) const SNAPSHOT_LOGS_SINCE_LAST: u64 = 1000;
/// Log entries kept behind a snapshot (at most a fifth of the snapshot interval), so a
/// briefly lagging follower catches up from the log instead of a full snapshot.
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 200;
/// Snapshot chunk size: one chunk is JSON of its bytes (up to ~4x), well under the gRPC
/// message limit.
const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// Time a follower has to install one snapshot chunk.
const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3);
/// Entries per AppendEntries request; bounds the request to a few MiB.
const APPEND_ENTRIES_MAX: u64 = 300;

/// Raft timing and log compaction.
///
/// A follower that stops hearing from the leader first waits out the leader's lease,
/// which openraft sets to `election_timeout_max`, then a random election timeout, and
/// checks both only every 1.5 heartbeats. Failover therefore takes about
/// `election_timeout_max + election_timeout + 1.5 * heartbeat`: 1.9-2.8 s with the
/// defaults (measured 3.3-4.1 s with 250 ms / 1-2 s, too close to the 5 s goal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    /// Interval of leader heartbeats; also each AppendEntries RPC's timeout.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in
    /// `election_timeout_min..election_timeout_max` starts an election.
    pub election_timeout_min: Duration,
    /// Upper end of the election timeout range.
    pub election_timeout_max: Duration,
    /// A snapshot is taken after this many log entries, and the log before it purged.
    pub snapshot_logs_since_last: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat: Duration::from_millis(200),
            election_timeout_min: Duration::from_millis(600),
            election_timeout_max: Duration::from_millis(1200),
            snapshot_logs_since_last: SNAPSHOT_LOGS_SINCE_LAST,
        }
    }
}

impl RaftSettings {
    /// The validated openraft configuration.
    pub fn openraft_config(&self) -> Result<Config> {
        if self.snapshot_logs_since_last == 0 {
            return Err(Error::Config(
                "snapshot_logs_since_last must be positive".into(),
            ));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: "pubsub-cluster-manager".into(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(INSTALL_SNAPSHOT_TIMEOUT),
            max_payload_entries: APPEND_ENTRIES_MAX,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT
                .min(self.snapshot_logs_since_last / 5),
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| Error::Config(format!("raft settings: {e}")))
    }
}

/// Opens a sled database in a test, retrying while a just-dropped handle to the same
/// directory still holds its file lock (sled releases it from a background thread).
#[cfg(test)]
pub(crate) fn open_test_db(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open sled at {}: {e}", path.display()),
        }
    }
}

/// Makes everything written to `tree`'s database durable (sled's flush, then an
/// fdatasync of its `file`: see `SledFile`), through the one flush helper (`pubsub_proto::flush`): on tokio's blocking pool, asked again after 1 s,
/// failed after 10 s (Raft then stops, and the node restarts from disk).
pub(crate) async fn flush(tree: &sled::Tree, file: &SledFile) -> Result<(), FlushError> {
    let (tree, file) = (tree.clone(), file.clone());
    let flush = move || {
        tree.flush().map_err(std::io::Error::other)?;
        file.sync()
    };
    pubsub_proto::flush::on_blocking_pool(flush, Timing::DEFAULT, "raft storage").await
}
