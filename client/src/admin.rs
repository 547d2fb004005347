//! Topic administration: create, alter, delete, list, describe.

use pubsub_proto::v1;

use crate::connection::Client;
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
        let response = self
            .client
            .admin_stub()
            .create_topic(v1::CreateTopicRequest {
                name: topic.name,
                partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                config: Some(topic.config),
            })
            .await?;
        response
            .into_inner()
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
        let response = self
            .client
            .admin_stub()
            .alter_topic_config(v1::AlterTopicConfigRequest {
                name: name.to_string(),
                config: Some(changes),
            })
            .await?;
        response
            .into_inner()
            .topic
            .ok_or_else(|| crate::Error::Decode("alter topic answered without a topic".into()))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.client
            .admin_stub()
            .delete_topic(v1::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<v1::TopicSummary>> {
        Ok(self
            .client
            .admin_stub()
            .list_topics(v1::ListTopicsRequest {})
            .await?
            .into_inner()
            .topics)
    }

    /// A topic's settings, partitions and offsets, and the brokers that host them.
    pub async fn describe_topic(&self, name: &str) -> Result<v1::DescribeTopicResponse> {
        Ok(self
            .client
            .admin_stub()
            .describe_topic(v1::DescribeTopicRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner())
    }
}
