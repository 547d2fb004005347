//! Topic administration: create, alter, delete, list, describe.
//!
//! Each call goes to the server that answered last and moves on to the next known
//! one while a server cannot be reached ([`Client::on_any_admin`]): reads wherever
//! the link failed, changes only where they were never sent.

use pubsub_proto::v1;

use crate::connection::{Client, Retry};
use crate::error::Result;

/// Settings for a new topic; unset values take the server's defaults.
#[derive(Clone, Debug, Default)]
pub struct NewTopic {
    /// Topic name, `[A-Za-z0-9._-]{1,249}`.
    pub name: String,
    /// Number of partitions (1 to 10,000).
    pub partitions: u32,
    /// Replicas per partition (server default if 0).
    pub replication_factor: u32,
    /// Per-topic settings.
    pub config: v1::TopicConfig,
}

/// Admin operations over a [`Client`].
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
}

impl Admin {
    /// Admin operations on `client`'s server.
    pub fn new(client: Client) -> Self {
        Admin { client }
    }

    /// Creates a topic and returns its description.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<v1::TopicDescription> {
        let request = v1::CreateTopicRequest {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            config: Some(topic.config),
        };
        let response = self
            .client
            .on_any_admin(Retry::OnlyIfNotSent, |mut stub| {
                let request = request.clone();
                async move { stub.create_topic(request).await }
            })
            .await?;
        response
            .topic
            .ok_or_else(|| crate::Error::Decode("create topic answered without a topic".into()))
    }

    /// Changes the settings set in `changes` (the alterable keys only) and returns the
    /// topic's description with every setting.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        changes: v1::TopicConfig,
    ) -> Result<v1::TopicDescription> {
        let request = v1::AlterTopicConfigRequest {
            name: name.to_string(),
            config: Some(changes),
        };
        let response = self
            .client
            .on_any_admin(Retry::OnlyIfNotSent, |mut stub| {
                let request = request.clone();
                async move { stub.alter_topic_config(request).await }
            })
            .await?;
        response
            .topic
            .ok_or_else(|| crate::Error::Decode("alter topic answered without a topic".into()))
    }

    /// Raises a topic's partition count to `partitions` (more only) and returns the
    /// topic's description. Producers and consumers of this SDK see the new partitions
    /// when they next refresh their metadata.
    pub async fn create_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<v1::TopicDescription> {
        let request = v1::CreatePartitionsRequest {
            name: name.to_string(),
            partitions,
        };
        let response = self
            .client
            .on_any_admin(Retry::OnlyIfNotSent, |mut stub| {
                let request = request.clone();
                async move { stub.create_partitions(request).await }
            })
            .await?;
        response.topic.ok_or_else(|| {
            crate::Error::Decode("create partitions answered without a topic".into())
        })
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = v1::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.client
            .on_any_admin(Retry::OnlyIfNotSent, |mut stub| {
                let request = request.clone();
                async move { stub.delete_topic(request).await }
            })
            .await?;
        Ok(())
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<v1::TopicSummary>> {
        let response = self
            .client
            .on_any_admin(Retry::Idempotent, |mut stub| async move {
                stub.list_topics(v1::ListTopicsRequest {}).await
            })
            .await?;
        Ok(response.topics)
    }

    /// A topic's settings, partitions and offsets, and the brokers that host them
    /// (whose addresses the client remembers, to fall back on).
    pub async fn describe_topic(&self, name: &str) -> Result<v1::DescribeTopicResponse> {
        let request = v1::DescribeTopicRequest {
            name: name.to_string(),
        };
        let response = self
            .client
            .on_any_admin(Retry::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.describe_topic(request).await }
            })
            .await?;
        self.client
            .learn(response.brokers.iter().map(|b| b.address.as_str()));
        Ok(response)
    }
}
