//! The cluster manager's configuration, built by the binary and validated once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use pubsub_proto::auth::{NewToken, NodeSecurity};

use crate::access_sync::ADMIN_TOKEN_FILE;
use crate::command::ADDRESS_BYTES_MAX;
use crate::error::{Error, Result};
use crate::raft::RaftSettings;

/// A broker that misses heartbeats for this long is fenced, and its partitions move
/// to in-sync replicas: acks=all writers stall about this long (plus the check
/// interval) when a leader dies. Three heartbeats fit in it, each attempt bounded so a
/// hung cluster-manager node costs one of them; a Raft election does not count
/// against it (a new Raft leader waits a whole lease before judging brokers); leader
/// epochs fence a broker that was merely slow, so a spurious fence costs a leader
/// change, never data. It was 6 s: writers stalled 7.1 s after a leader's kill -9,
/// 3.1-3.3 s with 3 s (`failover.rs`, docs/performance.md).
pub(crate) const LEASE_DEFAULT: Duration = Duration::from_secs(3);
/// How often the Raft leader looks for expired leases: adds at most this to a
/// failover. A check reads the applied state and writes nothing unless a lease
/// expired, so it is cheap.
pub(crate) const LEASE_CHECK_INTERVAL_DEFAULT: Duration = Duration::from_millis(250);

/// Settings of one cluster-manager node.
#[derive(Clone, Debug)]
pub struct ClusterManagerConfig {
    /// This node's Raft id, unique in the group.
    pub node_id: u64,
    /// `host:port` other nodes and clients reach this node at. Unset: this node's entry
    /// in `peers`, else the listener's local address.
    pub advertised_address: Option<String>,
    /// Directory of the Raft log, vote and snapshots (a sled database in `raft/`).
    pub data_dir: PathBuf,
    /// The initial voters, this node included, for a new cluster. Empty: this node alone
    /// (`pubsubd standalone`). A node joining a running cluster lists the existing
    /// members without itself and waits to be added with `AddMember`.
    ///
    /// On first start (empty data directory) the node with the lowest id among `peers`
    /// initializes the group with all of them as voters; the others wait to be contacted.
    /// A node that restarts with data never initializes again.
    pub peers: Vec<Member>,
    /// Broker lease: a broker is fenced after this long without a heartbeat.
    pub lease: Duration,
    /// How often the leader checks leases.
    pub lease_check_interval: Duration,
    /// Raft timing and snapshot interval.
    pub raft: RaftSettings,
    /// Access control: off, or on with the cluster secret.
    pub security: NodeSecurity,
    /// Where the first admin token is written when access control is first on
    /// [default: `admin.token` in `data_dir`].
    pub admin_token_path: PathBuf,
    /// The first admin token, made by the operator (a Kubernetes Secret, say) instead
    /// of by this node; nothing is written then.
    pub admin_token: Option<NewToken>,
}

/// One Raft member: its node id and gRPC address, written `id=host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Raft node id.
    pub id: u64,
    /// `host:port` of its gRPC server.
    pub address: String,
}

impl FromStr for Member {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((id, address)) = s.split_once('=') else {
            return Err(Error::Config(format!(
                "peer {s:?} is not of the form id=host:port"
            )));
        };
        let id = id
            .trim()
            .parse()
            .map_err(|e| Error::Config(format!("peer {s:?}: bad node id: {e}")))?;
        Ok(Member {
            id,
            address: address.trim().to_string(),
        })
    }
}

impl ClusterManagerConfig {
    /// A single-node configuration over `data_dir` with default timings.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        ClusterManagerConfig {
            node_id,
            advertised_address: None,
            admin_token_path: data_dir.join(ADMIN_TOKEN_FILE),
            data_dir,
            peers: Vec::new(),
            lease: LEASE_DEFAULT,
            lease_check_interval: LEASE_CHECK_INTERVAL_DEFAULT,
            raft: RaftSettings::default(),
            security: NodeSecurity::default(),
            admin_token: None,
        }
    }

    /// Checks the settings together; `run` calls it first.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config(message));
        if self.lease.is_zero() || self.lease_check_interval.is_zero() {
            return bad("lease and lease_check_interval must be positive".into());
        }
        if self.lease_check_interval > self.lease {
            return bad(format!(
                "lease_check_interval {:?} is longer than the lease {:?}",
                self.lease_check_interval, self.lease
            ));
        }
        let mut ids = BTreeSet::new();
        for peer in &self.peers {
            if !ids.insert(peer.id) {
                return bad(format!("peer id {} is listed twice", peer.id));
            }
            check_address(&peer.address)?;
        }
        if let Some(address) = &self.advertised_address {
            check_address(address)?;
        }
        self.raft.openraft_config()?;
        Ok(())
    }

    /// Whether this node starts the group on an empty data directory: it is alone, or
    /// has the lowest id among the peers it belongs to.
    pub(crate) fn bootstraps(&self) -> bool {
        if self.peers.is_empty() {
            return true;
        }
        let lowest = self.peers.iter().map(|p| p.id).min();
        self.peers.iter().any(|p| p.id == self.node_id) && lowest == Some(self.node_id)
    }
}

/// Checks a `host:port` address for emptiness and length.
pub(crate) fn check_address(address: &str) -> Result<()> {
    if address.is_empty() || address.len() > ADDRESS_BYTES_MAX || !address.contains(':') {
        return Err(Error::Config(format!(
            "address {:?} is not host:port of at most {ADDRESS_BYTES_MAX} bytes",
            address.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[&str]) -> Vec<Member> {
        list.iter().map(|m| m.parse().unwrap()).collect()
    }

    #[test]
    fn peers_parse_from_id_equals_address() {
        assert_eq!(
            "3=10.0.0.3:9393".parse::<Member>().unwrap(),
            Member {
                id: 3,
                address: "10.0.0.3:9393".into()
            }
        );
        assert!("10.0.0.3:9393".parse::<Member>().is_err());
        assert!("x=10.0.0.3:9393".parse::<Member>().is_err());
    }

    #[test]
    fn only_the_lowest_listed_id_bootstraps() {
        let mut config = ClusterManagerConfig::new(2, "/tmp/x");
        assert!(config.bootstraps(), "alone");
        config.peers = members(&["1=a:1", "2=b:1", "3=c:1"]);
        assert!(!config.bootstraps());
        config.node_id = 1;
        assert!(config.bootstraps());
        config.node_id = 0;
        assert!(!config.bootstraps(), "a joiner not in the list");
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let mut config = ClusterManagerConfig::new(1, "/tmp/x");
        assert!(config.validate().is_ok());
        config.peers = members(&["1=a:1", "1=b:1"]);
        assert!(config.validate().is_err());
        config.peers = members(&["1=a:1"]);
        config.lease_check_interval = Duration::from_secs(60);
        assert!(config.validate().is_err());
        config.lease_check_interval = Duration::from_secs(1);
        config.raft.election_timeout_min = config.raft.election_timeout_max;
        assert!(config.validate().is_err());
    }
}
