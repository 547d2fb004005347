//! The broker's configuration, built by the binary and validated once.

use std::path::PathBuf;
use std::time::Duration;

use pubsub_storage::FsyncPolicy;

/// Settings of one broker process.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This broker's id in the cluster.
    pub broker_id: u32,
    /// Directory holding one subdirectory per partition and the metadata file.
    pub data_dir: PathBuf,
    /// Address clients are told to connect to (host:port).
    pub advertised_address: String,
    /// Failure domain (rack, zone): replicas of a partition are spread across racks.
    pub rack: Option<String>,
    /// Addresses of the cluster-manager nodes.
    pub cluster_managers: Vec<String>,
    /// Defaults for topics created without explicit settings.
    pub topic_defaults: TopicDefaults,
    /// A follower that has not caught up with its leader for this long leaves the
    /// in-sync replicas (Kafka's replica.lag.time.max.ms, default 10 s).
    pub replica_lag_max: Duration,
    /// How often retention is applied to every partition.
    pub retention_check_interval: Duration,
    /// Appends stop while less than this would stay free on the data directory's
    /// filesystem (0 turns the check off): the Raft log and the consumer manager's
    /// database, which may share the disk, keep room to write (default 64 MiB).
    pub min_free_bytes: u64,
}

/// Default of [`BrokerConfig::min_free_bytes`]: room for the metadata databases
/// and a restart, small next to any disk a broker runs on.
pub const MIN_FREE_BYTES_DEFAULT: u64 = 64 << 20;

/// Topic settings used when a CreateTopic leaves them unset.
#[derive(Clone, Debug)]
pub struct TopicDefaults {
    /// Retention by age; `None` keeps forever (default 7 days, as Kafka).
    pub retention: Option<Duration>,
    /// Retention by partition size; `None` is unlimited.
    pub retention_bytes: Option<u64>,
    /// Segment size (default 1 GiB).
    pub segment_bytes: u64,
    /// Segment age before a roll (default 7 days).
    pub segment_age: Duration,
    /// Largest batch (default 1 MiB).
    pub max_message_bytes: usize,
    /// Fsync policy (default always, with group commit: an acknowledged record is on disk).
    pub fsync: FsyncPolicy,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            max_message_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

impl BrokerConfig {
    /// A broker `broker_id` over `data_dir`, advertising `address`, in the cluster
    /// managed by `cluster_managers`.
    pub fn new(
        broker_id: u32,
        data_dir: PathBuf,
        address: String,
        cluster_managers: Vec<String>,
    ) -> Self {
        BrokerConfig {
            broker_id,
            data_dir,
            advertised_address: address,
            rack: None,
            cluster_managers,
            topic_defaults: TopicDefaults::default(),
            retention_check_interval: Duration::from_secs(30),
            replica_lag_max: Duration::from_secs(10),
            min_free_bytes: MIN_FREE_BYTES_DEFAULT,
        }
    }
}
