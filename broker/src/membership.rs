//! The broker's membership in the cluster: it registers with the cluster manager,
//! renews its lease with heartbeats, and applies every metadata snapshot the cluster
//! manager streams to it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pubsub_proto::v1;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::partition::blocking;
use crate::sizes::{SizeReports, led_sizes};

/// Pause before reconnecting a broken metadata watch.
const WATCH_RETRY: Duration = Duration::from_millis(300);
/// Pause between attempts to open topics that failed to open.
const UNHOSTED_RETRY: Duration = Duration::from_secs(2);
/// Heartbeats per lease: three chances before the lease runs out. Each attempt on one
/// cluster-manager node is also bounded by lease / HEARTBEATS_PER_LEASE, so a node
/// that accepts the call but never answers (paused, or cut off behind a live TCP
/// connection) costs one chance, not the lease: the next node is tried at once.
const HEARTBEATS_PER_LEASE: u32 = 3;

/// Pause before registering again after a refusal that passes (the id's lease).
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// Registers the broker and applies the first metadata snapshot; returns the lease.
///
/// Retries until a cluster manager answers: a broker without metadata cannot serve.
pub(crate) async fn join(broker: &Arc<Broker>) -> Result<Duration> {
    let lease = register(broker).await?;
    let first = first_snapshot(broker).await?;
    // Every replica the metadata assigns here keeps its data, even one that failed
    // to open.
    let me = broker.config().broker_id.0;
    let kept: HashMap<String, Vec<bool>> = first
        .topics
        .iter()
        .map(|t| {
            let mine = t.partitions.iter().map(|p| p.replicas.contains(&me));
            (t.name.clone(), mine.collect())
        })
        .collect();
    broker.apply_metadata(first).await?;
    broker.mark_joined();
    let data_dir = broker.config().data_dir.clone();
    blocking(move || remove_orphans(&data_dir, &kept)).await?;
    tracing::info!(
        broker_id = broker.config().broker_id.0,
        "joined the cluster"
    );
    Ok(lease)
}

/// Keeps the lease renewed and the metadata current until the task is aborted.
pub(crate) async fn maintain(broker: Arc<Broker>, lease: Duration) {
    let heartbeats = tokio::spawn(heartbeat_loop(broker.clone(), lease));
    let retries = tokio::spawn(retry_unhosted(broker.clone()));
    watch_loop(broker).await;
    retries.abort();
    heartbeats.abort();
}

async fn register(broker: &Broker) -> Result<Duration> {
    let config = broker.config();
    let request = v1::RegisterBrokerRequest {
        broker_id: config.broker_id.0,
        address: config.advertised_address.clone(),
        rack: config.rack.clone(),
        kafka_address: config.kafka.as_ref().map(|k| k.advertised_address.clone()),
    };
    loop {
        let sent = tokio::time::Instant::now();
        let attempt = broker
            .link()
            .call(|mut stub| {
                let request = request.clone();
                async move { stub.register_broker(request).await }
            })
            .await;
        match attempt {
            Ok(response) => {
                let lease = Duration::from_millis(response.lease_ms.max(300));
                broker.lease().renewed(sent, lease);
                return Ok(lease);
            }
            Err(status) if status.code() == Code::Unavailable => {
                tracing::warn!(error = %status.message(), "no cluster manager reachable yet; retrying registration");
            }
            // This id is still registered at another address (this broker's previous
            // life, when it restarted on a new address) until that lease runs out.
            Err(status) if status.code() == Code::FailedPrecondition => {
                tracing::warn!(error = %status.message(), "registration refused for now; retrying");
                tokio::time::sleep(REGISTER_RETRY).await;
            }
            Err(status) => return Err(Error::ClusterManager(status)),
        }
    }
}

async fn heartbeat_loop(broker: Arc<Broker>, mut lease: Duration) {
    let mut sizes = SizeReports::default();
    let mut fenced_self = false;
    let mut next = tokio::time::Instant::now() + lease / HEARTBEATS_PER_LEASE;
    loop {
        // Spaced from one send to the next, not from an answer to the next send: a
        // slow answer must not stretch the gap the lease has to cover.
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + lease / HEARTBEATS_PER_LEASE;
        // After an fsync error a log may have lost acknowledged writes from the page
        // cache: stop renewing the lease, so the cluster manager fences this broker and
        // moves its leaderships to in-sync replicas. A restart recovers from disk.
        if broker.is_leaving() {
            // Fenced on purpose: registering again would take the leaderships back.
            return;
        }
        let failed = broker.failed_logs();
        if !failed.is_empty() {
            if !fenced_self {
                tracing::error!(logs = ?failed, "a partition log failed after an fsync error; stopping heartbeats so this broker is fenced; restart it to recover from disk");
                fenced_self = true;
            }
            continue;
        }
        let attempt = lease / HEARTBEATS_PER_LEASE;
        let request = v1::HeartbeatRequest {
            broker_id: broker.config().broker_id.0,
            partition_sizes: sizes.due(led_sizes(&broker)),
        };
        let sent = tokio::time::Instant::now();
        let answer = broker
            .link()
            .call(|mut stub| {
                let request = request.clone();
                async move {
                    tokio::time::timeout(attempt, stub.heartbeat(request))
                        .await
                        .unwrap_or_else(|_| {
                            Err(tonic::Status::deadline_exceeded(format!(
                                "no heartbeat answer within {attempt:?}"
                            )))
                        })
                }
            })
            .await;
        match answer {
            Ok(response) => {
                lease = Duration::from_millis(response.lease_ms.max(300));
                broker.lease().renewed(sent, lease);
                sizes.sent(request.partition_sizes);
            }
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                tracing::warn!(error = %status.message(), "lease lost; registering again");
                match register(&broker).await {
                    Ok(renewed) => lease = renewed,
                    Err(e) => tracing::error!(error = %e, "cannot register again"),
                }
            }
            Err(status) => tracing::warn!(error = %status.message(), "heartbeat failed"),
        }
    }
}

async fn first_snapshot(broker: &Broker) -> Result<v1::ClusterMetadata> {
    loop {
        for address in broker.link().addresses() {
            let Ok(mut stub) = broker.link().stub(address) else {
                continue;
            };
            if let Ok(response) = stub.watch_metadata(v1::WatchMetadataRequest {}).await
                && let Some(Ok(first)) = response.into_inner().next().await
            {
                return Ok(first);
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// Applies the current metadata again while some topic could not be opened (a full
/// disk, say): the metadata may not change for a long time, and the topic should come
/// back once the cause is gone.
async fn retry_unhosted(broker: Arc<Broker>) {
    loop {
        tokio::time::sleep(UNHOSTED_RETRY).await;
        if broker.has_unhosted() {
            let current = (*broker.view()).clone();
            if let Err(e) = broker.apply_metadata(current).await {
                tracing::warn!(error = %e, "cannot apply metadata again");
            }
        }
    }
}

async fn watch_loop(broker: Arc<Broker>) {
    let addresses = broker.link().addresses().to_vec();
    let mut next = 0;
    loop {
        let address = &addresses[next % addresses.len()];
        next += 1;
        let Ok(mut stub) = broker.link().stub(address) else {
            continue;
        };
        match stub.watch_metadata(v1::WatchMetadataRequest {}).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                while let Some(Ok(metadata)) = stream.next().await {
                    if let Err(e) = broker.apply_metadata(metadata).await {
                        tracing::error!(error = %e, "cannot apply metadata");
                    }
                }
                tracing::debug!(address = %address, "metadata watch ended; reconnecting");
            }
            Err(status) => {
                tracing::debug!(address = %address, error = %status.message(), "metadata watch failed")
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// Longest a controlled shutdown waits for the cluster manager and the new metadata,
/// within `pubsubd`'s 9 s shutdown limit (the drain gets the rest).
const LEAVE_WAIT: Duration = Duration::from_secs(3);

/// Kafka's controlled shutdown: before a broker stops, the cluster manager fences it,
/// moving the leadership of its partitions to in-sync followers, and the broker waits
/// (bounded) to see that metadata, so its clients are sent to the new leaders at once
/// instead of waiting out its lease. A broker alone in its cluster has no one to hand
/// over to and just stops.
pub(crate) async fn leave(broker: &Broker) {
    let me = broker.config().broker_id.0;
    let others = broker
        .view()
        .brokers
        .iter()
        .any(|b| b.id != me && !b.fenced);
    if !others || !*broker.joined_watch().borrow() {
        return;
    }
    broker.start_leaving();
    let request = v1::ShutdownBrokerRequest { broker_id: me };
    let asked = tokio::time::timeout(
        LEAVE_WAIT,
        broker
            .link()
            .call(|mut stub| async move { stub.shutdown_broker(request).await }),
    )
    .await;
    match asked {
        Ok(Ok(response)) => {
            let seen = broker.applied(response.metadata_version, LEAVE_WAIT).await;
            tracing::info!(
                leader_changes = response.leader_changes,
                seen,
                "controlled shutdown: leaderships handed over"
            );
        }
        Ok(Err(status)) => {
            tracing::warn!(error = %status.message(), "controlled shutdown refused; stopping anyway")
        }
        Err(_) => {
            tracing::warn!("no cluster manager answered the controlled shutdown; stopping anyway")
        }
    }
}

/// Removes partition directories the metadata no longer assigns here: of a topic it
/// does not name (a deletion cut short by a crash, or made while this broker was
/// down), or of a partition that moved to other brokers meanwhile. `kept` says, per
/// topic and partition, whether this broker holds a replica.
fn remove_orphans(data_dir: &Path, kept: &HashMap<String, Vec<bool>>) -> Result<()> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(pubsub_storage::Error::Io {
                path: data_dir.to_path_buf(),
                source: e,
            }
            .into());
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(partition) = partition.parse::<usize>() else {
            continue;
        };
        let orphan = match kept.get(topic) {
            None => true,
            Some(mine) => mine.get(partition) == Some(&false),
        };
        if !path.is_dir() || !orphan {
            continue;
        }
        tracing::warn!(path = %path.display(), "removing data of a replica this broker no longer holds");
        std::fs::remove_dir_all(&path).map_err(|e| pubsub_storage::Error::Io {
            path: path.clone(),
            source: e,
        })?;
    }
    Ok(())
}
