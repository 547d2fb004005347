//! The broker's configuration, built by the binary and validated once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pubsub_proto::auth::NodeSecurity;
use pubsub_proto::ids::BrokerId;

use crate::LocalReads;

/// Settings of one broker process.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This broker's id in the cluster.
    pub broker_id: BrokerId,
    /// Directory holding one subdirectory per partition and the metadata file.
    pub data_dir: PathBuf,
    /// Address clients are told to connect to (host:port).
    pub advertised_address: String,
    /// Failure domain (rack, zone): replicas of a partition are spread across racks.
    pub rack: Option<String>,
    /// Addresses of the cluster-manager nodes.
    pub cluster_managers: Vec<String>,
    /// A follower that has not caught up with its leader for this long leaves the
    /// in-sync replicas (Kafka's replica.lag.time.max.ms, default 10 s).
    pub replica_lag_max: Duration,
    /// How often retention is applied to every partition.
    pub retention_check_interval: Duration,
    /// Appends stop while less than this would stay free on the data directory's
    /// filesystem (0 turns the check off): the Raft log and the consumer manager's
    /// database, which may share the disk, keep room to write (default 64 MiB).
    pub min_free_bytes: u64,
    /// Access control: off, or on with the cluster secret this broker presents to the
    /// cluster managers and its peers.
    pub security: NodeSecurity,
    /// The Kafka-protocol listener, if this broker serves one.
    pub kafka: Option<KafkaListener>,
    /// Reads of this broker's partitions by a consumer manager in the same process
    /// (standalone), which the broker attaches itself to once it runs.
    pub local_reads: Option<LocalReads>,
}

/// The Kafka-protocol listener's socket, bound by the binary (so a port in use is
/// reported at start, and port 0 gets its real port advertised), and the address
/// Kafka clients are told (in Metadata answers) to reach this broker at.
#[derive(Clone, Debug)]
pub struct KafkaListener {
    /// The bound socket.
    pub socket: Arc<std::net::TcpListener>,
    /// `host:port` clients connect to.
    pub advertised_address: String,
    /// The consumer manager's gRPC address, which serves Kafka consumer groups;
    /// `None`: the group APIs are not offered.
    pub consumer_manager: Option<String>,
}

/// Default of [`BrokerConfig::min_free_bytes`]: room for the metadata databases
/// and a restart, small next to any disk a broker runs on.
pub(crate) const MIN_FREE_BYTES_DEFAULT: u64 = 64 << 20;

impl BrokerConfig {
    /// A broker `broker_id` over `data_dir`, advertising `address`, in the cluster
    /// managed by `cluster_managers`.
    pub fn new(
        broker_id: BrokerId,
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
            retention_check_interval: Duration::from_secs(30),
            replica_lag_max: Duration::from_secs(10),
            min_free_bytes: MIN_FREE_BYTES_DEFAULT,
            security: NodeSecurity::default(),
            kafka: None,
            local_reads: None,
        }
    }
}
