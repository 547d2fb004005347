//! Giving up data: replicas moved off this broker and topics deleted from the cluster.
//!
//! A replica leaves this broker when a move completes without it. The cluster manager
//! completes a move only once every new replica is in sync, so by then this copy is
//! redundant: its task stops, writes still waiting on it are answered with the new
//! leader, and its directory is removed. A broker that was down when its replica
//! moved removes the directory when it joins again (`membership::remove_orphans`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pubsub_proto::v1;

use super::{Broker, HostedTopic, partition_dir, role_of};
use crate::error::Result;
use crate::partition::{Partition, blocking};

/// A replica this broker hosted that the new metadata no longer assigns to it.
pub(super) struct Released {
    topic: String,
    index: u32,
    partition: Arc<Partition>,
    metadata: v1::PartitionMetadata,
}

/// The replicas hosted in `current` that `next` (the same topic incarnations) drops.
pub(super) fn released(
    current: &HashMap<String, Arc<HostedTopic>>,
    next: &HashMap<String, Arc<HostedTopic>>,
) -> Vec<Released> {
    let mut released = Vec::new();
    for (name, before) in current {
        let Some(after) = next
            .get(name)
            .filter(|t| t.metadata.created_ms == before.metadata.created_ms)
        else {
            continue;
        };
        for (index, hosted) in before.partitions.iter().enumerate() {
            let (Some(partition), None, Some(metadata)) = (
                hosted,
                after.partitions.get(index).cloned().flatten(),
                after.metadata.partitions.get(index),
            ) else {
                continue;
            };
            released.push(Released {
                topic: name.clone(),
                index: index as u32,
                partition: partition.clone(),
                metadata: metadata.clone(),
            });
        }
    }
    released
}

impl Broker {
    /// Stops a released replica and removes its data.
    pub(super) async fn release(
        &self,
        replica: Released,
        brokers: &[v1::BrokerMetadata],
    ) -> Result<()> {
        let Released {
            topic,
            index,
            partition,
            metadata,
        } = replica;
        // The new leader and epoch answer whatever still waits on this replica.
        if let Err(e) = partition.set_role(role_of(&metadata, brokers)) {
            tracing::warn!(topic, partition = index, error = %e, "cannot hand a released replica over");
        }
        partition.set_task(None);
        let dir = partition_dir(&self.config.data_dir, &topic, index);
        blocking(move || remove_dir(&dir)).await?;
        tracing::info!(
            topic,
            partition = index,
            "replica moved to other brokers; removed its data"
        );
        Ok(())
    }

    /// Removes the data of every partition of a deleted topic.
    pub(super) async fn remove_data(&self, topic: &HostedTopic) -> Result<()> {
        let dirs: Vec<PathBuf> = (0..topic.record.partitions)
            .map(|p| partition_dir(&self.config.data_dir, &topic.record.name, p))
            .collect();
        blocking(move || dirs.iter().try_for_each(|dir| remove_dir(dir))).await?;
        tracing::info!(topic = %topic.record.name, "deleted topic data");
        Ok(())
    }
}

/// Removes a partition directory; one already gone is fine.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(pubsub_storage::Error::Io {
            path: dir.to_path_buf(),
            source: e,
        }
        .into()),
    }
}
