//! Topic writes arriving at the broker's Admin service: validated here, forwarded to
//! the cluster manager, and answered once this broker has applied the resulting
//! metadata, so a client can produce right after a create.

use std::sync::Arc;
use std::time::Duration;

use pubsub_proto::ids::{PARTITIONS_MAX, TopicName};
use pubsub_proto::v1;

use super::{Broker, HostedTopic};
use crate::error::{Error, Result};

/// How long an admin write waits for its metadata to reach this broker.
const METADATA_WAIT: Duration = Duration::from_secs(15);

impl Broker {
    /// Waits until this broker has applied metadata at least as new as `version`.
    async fn await_version(&self, version: u64) -> Result<()> {
        if self.applied(version, METADATA_WAIT).await {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "the cluster manager accepted the change (metadata version {version}) but this broker has not seen it within {METADATA_WAIT:?}"
            )))
        }
    }

    /// Validates a topic, has the cluster manager create it, and waits until this
    /// broker has applied it.
    pub(crate) async fn create_topic(
        &self,
        request: v1::CreateTopicRequest,
    ) -> Result<Arc<HostedTopic>> {
        let name =
            TopicName::new(request.name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if request.partitions == 0 || request.partitions > PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                request.partitions
            )));
        }
        // Every setting is checked before anything is written; the cluster manager
        // checks again once it knows the replication factor, and resolves.
        let known = Some(request.replication_factor).filter(|r| *r > 0);
        request.config.clone().unwrap_or_default().validate(known)?;
        let forwarded = v1::ClusterCreateTopicRequest {
            name: name.to_string(),
            partitions: request.partitions,
            replication_factor: request.replication_factor,
            config: request.config,
            unclean_leader_election: false,
        };
        let response = self
            .link
            .call(|mut stub| {
                let request = forwarded.clone();
                async move { stub.create_topic(request).await }
            })
            .await
            .map_err(Error::ClusterManager)?;
        if !response.created {
            return Err(Error::TopicExists(name.to_string()));
        }
        self.await_version(response.metadata_version).await?;
        self.topic(name.as_str())
    }

    /// Has the cluster manager change a topic's settings, and waits until this broker
    /// has applied them.
    pub(crate) async fn alter_topic_config(
        &self,
        request: v1::AlterTopicConfigRequest,
    ) -> Result<Arc<HostedTopic>> {
        let name =
            TopicName::new(request.name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let forwarded = v1::AlterTopicConfigRequest {
            name: name.to_string(),
            config: request.config,
        };
        let response = self
            .link
            .call(|mut stub| {
                let request = forwarded.clone();
                async move { stub.alter_topic_config(request).await }
            })
            .await
            .map_err(Error::ClusterManager)?;
        self.await_version(response.metadata_version).await?;
        self.topic(name.as_str())
    }

    /// Has the cluster manager add partitions to a topic, and waits until this broker
    /// has applied that.
    pub(crate) async fn create_partitions(
        &self,
        request: v1::CreatePartitionsRequest,
    ) -> Result<Arc<HostedTopic>> {
        let name =
            TopicName::new(request.name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let forwarded = v1::CreatePartitionsRequest {
            name: name.to_string(),
            partitions: request.partitions,
        };
        let response = self
            .link
            .call(|mut stub| {
                let request = forwarded.clone();
                async move { stub.create_partitions(request).await }
            })
            .await
            .map_err(Error::ClusterManager)?;
        self.await_version(response.metadata_version).await?;
        self.topic(name.as_str())
    }

    /// Has the cluster manager delete a topic, and waits until its data is gone here.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = v1::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.link
            .call(|mut stub| {
                let request = request.clone();
                async move { stub.delete_topic(request).await }
            })
            .await
            .map_err(Error::ClusterManager)?;
        let mut view = self.view.subscribe();
        let gone = view.wait_for(|v| v.topics.iter().all(|t| t.name != name));
        tokio::time::timeout(METADATA_WAIT, gone)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "topic {name:?} was deleted but this broker has not seen it yet"
                ))
            })?
            .map_err(|_| Error::Task("metadata view closed".into()))?;
        // The data is removed right after the view changes, under the same lock.
        let _applied = self.applying.lock().await;
        Ok(())
    }
}
