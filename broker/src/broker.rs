//! The partitions this broker hosts, kept in step with the cluster metadata.
//!
//! The cluster manager decides which broker holds which replica and who leads; the
//! broker applies each metadata snapshot it receives ([`Broker::apply_metadata`]):
//! opens the logs of replicas assigned to it, records leaders and epochs, and deletes
//! the data of topics that were deleted. Topic writes arriving at the broker's Admin
//! service are forwarded to the cluster manager (`forward.rs`), and answered once this
//! broker has applied the resulting metadata, so a client can produce right after a
//! create.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use pubsub_proto::v1;
use pubsub_storage::{FsyncPolicy, Log};
use tokio::sync::watch;

use crate::cluster::ClusterLink;
use crate::config::BrokerConfig;
use crate::disk::DiskSpace;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::partition::{Partition, Role, blocking};
use crate::replication;
use crate::topic::TopicRecord;

mod forward;
mod release;

/// A topic and the replicas of it this broker hosts.
pub(crate) struct HostedTopic {
    /// The topic's metadata, settings resolved.
    pub record: TopicRecord,
    /// Placement, leaders and in-sync replicas, as the cluster manager sent them.
    pub metadata: v1::TopicMetadata,
    /// Partitions in index order; `None` where this broker holds no replica.
    pub partitions: Vec<Option<Arc<Partition>>>,
}

/// The broker's state: hosted topics and the cluster view they come from.
pub(crate) struct Broker {
    config: BrokerConfig,
    link: Arc<ClusterLink>,
    topics: RwLock<HashMap<String, Arc<HostedTopic>>>,
    /// The last applied metadata; its version tells admin calls when they are visible.
    view: watch::Sender<Arc<v1::ClusterMetadata>>,
    /// Serializes metadata application.
    applying: tokio::sync::Mutex<()>,
    /// Free space under the data directory, checked before every append.
    disk: Arc<DiskSpace>,
    /// Connections to the other brokers, for follower fetches.
    peers: crate::replication::Peers,
    /// The copy rate of replicas this broker receives in moves.
    move_throttle: crate::throttle::MoveThrottle,
    /// Topics in the metadata this broker could not open, with the reason (a full
    /// disk, say), so requests for them say why instead of "does not exist".
    unhosted: RwLock<HashMap<String, String>>,
    /// Until when the cluster manager cannot have fenced this broker.
    lease: Lease,
    /// True once the first metadata snapshot is applied.
    joined: watch::Sender<bool>,
    /// Set when the broker starts a controlled shutdown: heartbeats stop, so it is not
    /// registered again while it hands its leaderships over.
    leaving: std::sync::atomic::AtomicBool,
}

/// Directory of one partition: `<data>/<topic>-<partition>`.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// File in a partition directory naming the topic incarnation its data belongs to.
const INCARNATION_FILE: &str = "topic-created-ms";

/// Makes `dir` hold data of the topic incarnation created at `created_ms`: data left by
/// an older incarnation of the same name (deleted while this broker was away or behind)
/// is removed first, so a recreated topic never serves the old records.
fn claim_for_incarnation(dir: &Path, created_ms: u64) -> Result<()> {
    let marker = dir.join(INCARNATION_FILE);
    let io = |path: &Path, e: std::io::Error| {
        Error::from(pubsub_storage::Error::Io {
            path: path.to_path_buf(),
            source: e,
        })
    };
    match std::fs::read_to_string(&marker) {
        Ok(text) if text.trim() == created_ms.to_string() => return Ok(()),
        Ok(text) => {
            tracing::warn!(dir = %dir.display(), old = %text.trim(), new = created_ms, "removing data of an older topic incarnation");
            std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&marker, e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    Ok(pubsub_storage::replace_file(
        &marker,
        created_ms.to_string().as_bytes(),
    )?)
}

/// The answer to a request for a partition this broker does not lead.
pub(crate) fn not_leader(
    broker: &Broker,
    topic: &str,
    partition: u32,
    leader: Option<u32>,
) -> Error {
    let address = leader.and_then(|id| broker.broker_address(id));
    Error::NotLeader {
        topic: topic.to_string(),
        partition,
        broker: broker.config.broker_id.0,
        leader,
        leader_address: address,
    }
}

impl Broker {
    /// A broker with no topics yet, linked to the cluster managers.
    pub(crate) fn new(config: BrokerConfig, link: Arc<ClusterLink>) -> Self {
        let disk = Arc::new(DiskSpace::new(
            config.data_dir.clone(),
            config.min_free_bytes,
        ));
        Broker {
            disk,
            peers: crate::replication::Peers::new(config.security.link.clone()),
            move_throttle: crate::throttle::MoveThrottle::default(),
            unhosted: RwLock::new(HashMap::new()),
            config,
            link,
            topics: RwLock::new(HashMap::new()),
            view: watch::Sender::new(Arc::new(v1::ClusterMetadata::default())),
            applying: tokio::sync::Mutex::new(()),
            lease: Lease::default(),
            joined: watch::Sender::new(false),
            leaving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The broker's configuration.
    pub(crate) fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Marks the start of a controlled shutdown.
    pub(crate) fn start_leaving(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a controlled shutdown has started.
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits (at most `wait`) until this broker has applied metadata at least as new
    /// as `version`; false if it has not.
    pub(crate) async fn applied(&self, version: u64, wait: std::time::Duration) -> bool {
        let mut view = self.view.subscribe();
        matches!(
            tokio::time::timeout(wait, view.wait_for(|v| v.version >= version)).await,
            Ok(Ok(_))
        )
    }

    /// Marks the first metadata snapshot applied: topic requests are served from now.
    pub(crate) fn mark_joined(&self) {
        self.joined.send_replace(true);
    }

    /// Turns true once the broker has joined the cluster.
    pub(crate) fn joined_watch(&self) -> watch::Receiver<bool> {
        self.joined.subscribe()
    }

    /// Resolves once the broker has joined the cluster.
    pub(crate) async fn joined(&self) {
        let _ = self.joined.subscribe().wait_for(|&joined| joined).await;
    }

    /// This broker's lease at the cluster manager, renewed by its heartbeats.
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The link to the cluster managers.
    pub(crate) fn link(&self) -> &Arc<ClusterLink> {
        &self.link
    }

    /// The last applied cluster metadata.
    pub(crate) fn view(&self) -> Arc<v1::ClusterMetadata> {
        self.view.borrow().clone()
    }

    /// The address of broker `id`, from the metadata.
    pub(crate) fn broker_address(&self, id: u32) -> Option<String> {
        self.view
            .borrow()
            .brokers
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.address.clone())
    }

    /// The connections to other brokers that follower fetches share.
    pub(crate) fn peers(&self) -> &crate::replication::Peers {
        &self.peers
    }

    /// The copy rate of replicas this broker receives in moves.
    pub(crate) fn move_throttle(&self) -> &crate::throttle::MoveThrottle {
        &self.move_throttle
    }

    /// True while some topic in the metadata could not be opened here.
    pub(crate) fn has_unhosted(&self) -> bool {
        self.unhosted.read().is_ok_and(|u| !u.is_empty())
    }

    /// A hosted topic by name.
    pub(crate) fn topic(&self, name: &str) -> Result<Arc<HostedTopic>> {
        let hosted = self
            .topics
            .read()
            .map_err(|_| Error::Task("topic map lock poisoned".into()))?
            .get(name)
            .cloned();
        if let Some(topic) = hosted {
            return Ok(topic);
        }
        let unhosted = self.unhosted.read().ok().and_then(|u| u.get(name).cloned());
        Err(match unhosted {
            Some(reason) => Error::Unavailable(format!(
                "topic {name:?} exists but broker {} cannot open it: {reason}",
                self.config.broker_id.0
            )),
            None => Error::TopicNotFound(name.to_string()),
        })
    }

    /// Every known topic.
    pub(crate) fn all_topics(&self) -> Vec<Arc<HostedTopic>> {
        self.topics
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// This broker's replica of a partition, whatever its role; NOT_FOUND if it holds
    /// none.
    pub(crate) fn local_partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let hosted = self.topic(topic)?;
        hosted
            .partitions
            .get(partition as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::PartitionNotFound {
                topic: topic.to_string(),
                partition,
                partitions: hosted.record.partitions,
            })
    }

    /// A partition this broker leads; otherwise NOT_FOUND or a not-leader error
    /// naming the leader.
    pub(crate) fn leader_partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        Ok(self.leader_replica(topic, partition)?.0)
    }

    /// [`Broker::leader_partition`] with the incarnation (`created_ms`) of the topic it
    /// belongs to, read from the same view, so a reader can tell a recreated topic.
    pub(crate) fn leader_replica(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<Partition>, u64)> {
        let hosted = self.topic(topic)?;
        let Some(metadata) = hosted.metadata.partitions.get(partition as usize) else {
            return Err(Error::PartitionNotFound {
                topic: topic.to_string(),
                partition,
                partitions: hosted.record.partitions,
            });
        };
        let leader = metadata.leader;
        match hosted.partitions.get(partition as usize).cloned().flatten() {
            Some(local) if leader == Some(self.config.broker_id.0) && local.is_leader() => {
                Ok((local, hosted.metadata.created_ms))
            }
            _ => Err(not_leader(self, topic, partition, leader)),
        }
    }

    /// Applies a metadata snapshot: opens newly assigned replicas, updates leaders,
    /// deletes the data of deleted topics.
    pub(crate) async fn apply_metadata(
        self: &Arc<Self>,
        metadata: v1::ClusterMetadata,
    ) -> Result<()> {
        let _applying = self.applying.lock().await;
        if metadata.version < self.view.borrow().version {
            return Ok(());
        }
        if let Some(access) = &metadata.access {
            self.config.security.access.update(access);
        }
        self.move_throttle
            .set_rate(metadata.move_rate_bytes_per_sec);
        let current: HashMap<String, Arc<HostedTopic>> = self
            .topics
            .read()
            .map_err(|_| Error::Task("topic map lock poisoned".into()))?
            .clone();
        let mut next = HashMap::with_capacity(metadata.topics.len());
        let mut unhosted = HashMap::new();
        for topic in &metadata.topics {
            match self.host(topic, current.get(&topic.name)).await {
                Ok(hosted) => {
                    next.insert(topic.name.clone(), Arc::new(hosted));
                }
                Err(e) => {
                    // Keep what was hosted before; a topic that fails to open is not deleted.
                    tracing::error!(topic = %topic.name, error = %e, "cannot host topic");
                    unhosted.insert(topic.name.clone(), e.to_string());
                    if let Some(previous) = current.get(&topic.name) {
                        next.insert(topic.name.clone(), previous.clone());
                    }
                }
            }
        }
        // Only topics the metadata no longer names lose their data, and replicas
        // moved off this broker.
        let deleted: Vec<Arc<HostedTopic>> = current
            .iter()
            .filter(|(name, _)| !metadata.topics.iter().any(|t| &t.name == *name))
            .map(|(_, t)| t.clone())
            .collect();
        let released = release::released(&current, &next);
        // Roles are set before the topics become visible, so no request sees a
        // partition whose metadata names this broker leader while its replica does not
        // know it yet; the role tasks start after.
        let mut changed = Vec::new();
        for topic in next.values() {
            changed.extend(self.apply_roles(topic, &metadata.brokers));
        }
        *self
            .topics
            .write()
            .map_err(|_| Error::Task("topic map lock poisoned".into()))? = next;
        if let Ok(mut slot) = self.unhosted.write() {
            *slot = unhosted;
        }
        let metadata = Arc::new(metadata);
        self.view.send_replace(metadata.clone());
        for (topic, index, partition, role) in changed {
            replication::start_role(self, &topic, index, &partition, &role).await;
        }
        for topic in deleted {
            self.remove_data(&topic).await?;
        }
        for replica in released {
            self.release(replica, &metadata.brokers).await?;
        }
        Ok(())
    }

    /// Builds the hosted form of `topic`, reusing partitions already open.
    async fn host(
        &self,
        topic: &v1::TopicMetadata,
        existing: Option<&Arc<HostedTopic>>,
    ) -> Result<HostedTopic> {
        let record = TopicRecord::from_metadata(topic);
        let log_config = record.log_config()?;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (index, metadata) in topic.partitions.iter().enumerate() {
            let mine = metadata.replicas.contains(&self.config.broker_id.0);
            // Only the same incarnation of the topic may reuse an open replica.
            let same = existing.is_some_and(|e| e.metadata.created_ms == topic.created_ms);
            let reuse = existing
                .filter(|_| same)
                .and_then(|e| e.partitions.get(index).cloned().flatten());
            let partition = match (mine, reuse) {
                (false, _) => None,
                (true, Some(open)) => {
                    // Settings may have been altered: an open log takes the new ones.
                    open.log().alter(&log_config)?;
                    Some(open)
                }
                (true, None) => {
                    let dir = partition_dir(&self.config.data_dir, &topic.name, index as u32);
                    let config = log_config.clone();
                    let incarnation = topic.created_ms;
                    let log = blocking(move || {
                        claim_for_incarnation(&dir, incarnation)?;
                        Ok(Log::open(&dir, config)?)
                    })
                    .await?;
                    Some(Arc::new(Partition::new(
                        log,
                        &topic.name,
                        index as u32,
                        self.config.broker_id.0,
                        self.disk.clone(),
                    )))
                }
            };
            partitions.push(partition);
        }
        Ok(HostedTopic {
            record,
            metadata: topic.clone(),
            partitions,
        })
    }

    /// Gives each hosted replica of `topic` its role from the metadata (`brokers` is
    /// the same metadata's broker list); returns those whose leader or epoch changed,
    /// whose fetcher or ISR task must restart.
    fn apply_roles(
        &self,
        topic: &HostedTopic,
        brokers: &[v1::BrokerMetadata],
    ) -> Vec<(String, u32, Arc<Partition>, Role)> {
        let mut changed = Vec::new();
        for (index, metadata) in topic.metadata.partitions.iter().enumerate() {
            let Some(partition) = topic.partitions.get(index).cloned().flatten() else {
                continue;
            };
            let role = role_of(metadata, brokers);
            match partition.set_role(role.clone()) {
                Ok(previous)
                    if previous.leader != role.leader
                        || previous.leader_epoch != role.leader_epoch =>
                {
                    changed.push((topic.record.name.clone(), index as u32, partition, role));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %topic.record.name, partition = index, error = %e, "cannot apply role")
                }
            }
        }
        changed
    }

    /// Applies each topic's retention to its partitions; returns segments deleted.
    pub(crate) async fn apply_retention(&self) -> Result<usize> {
        let mut deleted = 0;
        for topic in self.all_topics() {
            let policy = topic.record.retention();
            for partition in topic.partitions.iter().flatten() {
                let log = partition.log().clone();
                deleted += blocking(move || Ok(log.apply_retention(policy)?)).await?;
            }
        }
        Ok(deleted)
    }

    fn all_logs(&self) -> Vec<Arc<Log>> {
        self.all_topics()
            .iter()
            .flat_map(|t| t.partitions.iter().flatten().map(|p| p.log().clone()))
            .collect()
    }

    /// Directories of partition logs that failed after an fsync error.
    pub(crate) fn failed_logs(&self) -> Vec<PathBuf> {
        self.all_logs()
            .iter()
            .filter(|log| log.is_failed())
            .map(|log| log.dir().to_path_buf())
            .collect()
    }

    /// Runs due interval fsyncs on every partition.
    pub(crate) async fn flush_due(&self) -> Result<()> {
        let logs: Vec<Arc<Log>> = self
            .all_logs()
            .into_iter()
            .filter(|log| matches!(log.config().fsync, FsyncPolicy::Interval(_)))
            .collect();
        if logs.is_empty() {
            return Ok(());
        }
        blocking(move || {
            for log in logs {
                log.flush_if_due()?;
            }
            Ok(())
        })
        .await
    }

    /// Flushes every partition (clean shutdown).
    pub(crate) async fn flush_all(&self) -> Result<()> {
        let logs = self.all_logs();
        blocking(move || {
            for log in logs {
                log.flush()?;
            }
            Ok(())
        })
        .await
    }
}

/// A replica's role as the metadata of its partition gives it.
fn role_of(metadata: &v1::PartitionMetadata, brokers: &[v1::BrokerMetadata]) -> Role {
    Role {
        leader: metadata.leader,
        leader_epoch: metadata.leader_epoch,
        replicas: metadata.replicas.clone(),
        in_sync_replicas: metadata.in_sync_replicas.clone(),
        leader_address: metadata.leader.and_then(|id| {
            brokers
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.address.clone())
        }),
        adding: metadata.adding_replicas.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_of_an_older_incarnation_is_removed_and_the_same_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let partition = dir.path().join("t-0");
        claim_for_incarnation(&partition, 100).unwrap();
        std::fs::write(partition.join("00000000000000000000.log"), b"old").unwrap();
        claim_for_incarnation(&partition, 100).unwrap();
        assert!(
            partition.join("00000000000000000000.log").exists(),
            "same incarnation keeps its data"
        );
        claim_for_incarnation(&partition, 200).unwrap();
        assert!(
            !partition.join("00000000000000000000.log").exists(),
            "a recreated topic starts empty"
        );
        assert_eq!(
            std::fs::read_to_string(partition.join(INCARNATION_FILE)).unwrap(),
            "200"
        );
    }
}
