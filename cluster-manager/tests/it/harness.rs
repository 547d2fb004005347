//! Starting, stopping and restarting in-process cluster-manager nodes, and bounded waits.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::Duration;

use pubsub_cluster_manager::{ClusterManagerConfig, Member, run};
use pubsub_proto::v1;
use pubsub_proto::v1::cluster_manager_client::ClusterManagerClient;
use pubsub_proto::v1::raft_client::RaftClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Longest any single wait in a test may take.
const WAIT: Duration = Duration::from_secs(15);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);

/// A lease long enough that brokers registered by a test never expire during it.
pub fn quiet_lease() -> Duration {
    Duration::from_secs(120)
}

struct Node {
    address: String,
    config: ClusterManagerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<pubsub_cluster_manager::Result<()>>>,
}

/// Nodes of one Raft group, each in its own data directory under one temporary root.
pub struct Cluster {
    root: TempDir,
    nodes: BTreeMap<u64, Node>,
    peers: Vec<Member>,
    lease: Duration,
    snapshot_logs: u64,
}

impl Cluster {
    /// Starts nodes 1..=n as one group with default Raft settings.
    pub async fn start(n: u64, lease: Duration) -> Cluster {
        Cluster::start_with(n, lease, 1000).await
    }

    /// Starts nodes 1..=n, snapshotting every `snapshot_logs` entries.
    pub async fn start_with(n: u64, lease: Duration, snapshot_logs: u64) -> Cluster {
        let mut listeners = Vec::new();
        let mut peers = Vec::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            peers.push(Member { id, address });
            listeners.push((id, listener));
        }
        let mut cluster = Cluster {
            root: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            // A single node runs without peers, as `pubsubd standalone` will.
            peers: if n == 1 { Vec::new() } else { peers },
            lease,
            snapshot_logs,
        };
        for (id, listener) in listeners {
            let config = cluster.config(id, cluster.peers.clone());
            cluster.spawn(id, config, listener);
        }
        cluster
    }

    fn config(&self, id: u64, peers: Vec<Member>) -> ClusterManagerConfig {
        let mut config = ClusterManagerConfig::new(id, self.root.path().join(format!("node-{id}")));
        config.peers = peers;
        config.lease = self.lease;
        config.lease_check_interval = Duration::from_millis(100).min(self.lease);
        config.raft.snapshot_logs_since_last = self.snapshot_logs;
        config
    }

    fn spawn(&mut self, id: u64, config: ClusterManagerConfig, listener: TcpListener) {
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config.clone(), listener, async move {
            let _ = stopped.await;
        }));
        self.nodes.insert(
            id,
            Node {
                address,
                config,
                stop: Some(stop),
                task: Some(task),
            },
        );
    }

    /// Ids of every node started, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Starts a node that joins the running group: it lists the members but not itself,
    /// so it waits to be added. Returns its address.
    pub async fn start_joiner(&mut self, id: u64) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peers: Vec<Member> = self
            .nodes
            .iter()
            .map(|(&id, node)| Member {
                id,
                address: node.address.clone(),
            })
            .collect();
        let config = self.config(id, peers);
        self.spawn(id, config, listener);
        self.nodes[&id].address.clone()
    }

    /// Stops a node through its shutdown future and waits for `run` to return.
    pub async fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = node.task.take() {
            let result = tokio::time::timeout(WAIT, task)
                .await
                .expect("node stopped in time")
                .unwrap();
            result.unwrap();
        }
    }

    /// Starts a stopped node again, on its old address and data directory.
    pub async fn restart(&mut self, id: u64) {
        let node = &self.nodes[&id];
        assert!(node.task.is_none(), "node {id} is running");
        let address = node.address.clone();
        let config = node.config.clone();
        let listener = wait_until("the old port to be free", || {
            let address = address.clone();
            async move { TcpListener::bind(&address).await.ok() }
        })
        .await;
        self.spawn(id, config, listener);
    }

    /// Stops every running node.
    pub async fn shutdown(&mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }

    fn channel(&self, id: u64) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.nodes[&id].address))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy()
    }

    /// A ClusterManager client of node `id`.
    pub async fn client(&self, id: u64) -> ClusterManagerClient<Channel> {
        self.status_client(id)
    }

    /// A ClusterManager client of node `id`, without awaiting anything.
    pub fn status_client(&self, id: u64) -> ClusterManagerClient<Channel> {
        ClusterManagerClient::new(self.channel(id))
    }

    /// A raw Raft client of node `id`.
    pub async fn raft_client(&self, id: u64) -> RaftClient<Channel> {
        RaftClient::new(self.channel(id))
    }

    /// Node `id`'s view of the cluster.
    pub async fn status(&self, id: u64) -> v1::ClusterStatusResponse {
        let client = self.status_client(id);
        retry(|| {
            let mut client = client.clone();
            async move { client.cluster_status(v1::ClusterStatusRequest {}).await }
        })
        .await
    }

    /// Waits until every node in `ids` names the same leader, one of them.
    pub async fn wait_leader(&self, ids: &[u64]) -> u64 {
        let clients: Vec<_> = ids.iter().map(|&id| self.status_client(id)).collect();
        wait_until("one leader agreed by all", || {
            let clients = clients.clone();
            async move {
                let mut leaders = Vec::new();
                for mut client in clients {
                    let status = client
                        .cluster_status(v1::ClusterStatusRequest {})
                        .await
                        .ok()?
                        .into_inner();
                    leaders.push(status.leader_id?);
                }
                let first = leaders[0];
                (leaders.iter().all(|&l| l == first) && ids.contains(&first)).then_some(first)
            }
        })
        .await
    }

    /// Registers brokers `range` through node `via`, at made-up addresses.
    pub async fn register_brokers(&self, via: u64, range: RangeInclusive<u32>) {
        let client = self.status_client(via);
        for broker_id in range {
            retry(|| {
                let mut client = client.clone();
                async move {
                    client
                        .register_broker(v1::RegisterBrokerRequest {
                            broker_id,
                            address: format!("127.0.0.1:{}", 20_000 + broker_id),
                            rack: None,
                            kafka_address: None,
                        })
                        .await
                }
            })
            .await;
        }
    }

    /// Waits until node `id` describes topic `name`.
    pub async fn wait_for_topic(&self, id: u64, name: &str) {
        let client = self.status_client(id);
        wait_until(&format!("node {id} to see topic {name}"), || {
            let mut client = client.clone();
            let name = name.to_string();
            async move {
                client
                    .describe_topic(v1::DescribeTopicRequest { name })
                    .await
                    .ok()
            }
        })
        .await;
    }

    /// Heartbeats `brokers` through node `via` every 200 ms until aborted.
    pub fn heartbeat_in_background(&self, via: u64, brokers: Vec<u32>) -> JoinHandle<()> {
        let client = self.status_client(via);
        tokio::spawn(async move {
            loop {
                for &broker_id in &brokers {
                    let _ = client
                        .clone()
                        .heartbeat(v1::HeartbeatRequest {
                            broker_id,
                            ..Default::default()
                        })
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}

/// Polls `check` until it gives a value, for at most [`WAIT`].
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Repeats a call while it fails with UNAVAILABLE (no leader yet), for at most [`WAIT`].
pub async fn retry<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match call().await {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(status) => panic!("call failed: {status:?}"),
        }
    }
}
