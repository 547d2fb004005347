//! The Admin service: create, alter, delete, list and describe topics.

use pubsub_proto::auth::{Operation, Target, authorize, caller};
use std::sync::Arc;

use pubsub_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use crate::broker::{Broker, HostedTopic};

/// Admin service over the broker's topic set.
pub(crate) struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    /// Serves admin requests from `broker`.
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        AdminService { broker }
    }

    fn describe(&self, topic: &HostedTopic) -> v1::TopicDescription {
        v1::TopicDescription {
            name: topic.record.name.clone(),
            replication_factor: topic.record.replication_factor,
            config: Some(topic.record.settings.clone()),
            default_keys: topic.metadata.default_keys.clone(),
            partitions: topic
                .metadata
                .partitions
                .iter()
                .enumerate()
                .map(|(index, metadata)| {
                    let local = topic.partitions.get(index).cloned().flatten();
                    v1::PartitionDescription {
                        partition: metadata.partition,
                        leader: metadata.leader,
                        leader_epoch: metadata.leader_epoch,
                        replicas: metadata.replicas.clone(),
                        in_sync_replicas: metadata.in_sync_replicas.clone(),
                        log_start_offset: local.as_ref().map(|p| p.log().log_start_offset()),
                        high_watermark: local.as_ref().map(|p| p.high_watermark()),
                        log_end_offset: local.as_ref().map(|p| p.log().log_end_offset()),
                    }
                })
                .collect(),
            created_ms: topic.metadata.created_ms,
        }
    }

    /// The brokers named in a topic's replica lists, with their addresses.
    fn brokers_of(&self, topic: &HostedTopic) -> Vec<v1::BrokerInfo> {
        let view = self.broker.view();
        view.brokers
            .iter()
            .filter(|b| {
                topic
                    .metadata
                    .partitions
                    .iter()
                    .any(|p| p.replicas.contains(&b.id))
            })
            .map(|b| v1::BrokerInfo {
                id: b.id,
                address: b.address.clone(),
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().name),
        )?;
        let topic = self.broker.create_topic(request.into_inner()).await?;
        Ok(Response::new(v1::CreateTopicResponse {
            topic: Some(self.describe(&topic)),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::AlterTopicConfigResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().name),
        )?;
        let topic = self.broker.alter_topic_config(request.into_inner()).await?;
        Ok(Response::new(v1::AlterTopicConfigResponse {
            topic: Some(self.describe(&topic)),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name, partitions = request.get_ref().partitions))]
    async fn create_partitions(
        &self,
        request: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::CreatePartitionsResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().name),
        )?;
        let topic = self.broker.create_partitions(request.into_inner()).await?;
        Ok(Response::new(v1::CreatePartitionsResponse {
            topic: Some(self.describe(&topic)),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().name),
        )?;
        self.broker.delete_topic(&request.get_ref().name).await?;
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let caller = caller(&request);
        let mut topics: Vec<v1::TopicSummary> = self
            .broker
            .all_topics()
            .iter()
            .filter(|t| caller.may(Operation::Describe, Target::Topic(&t.record.name)))
            .map(|t| v1::TopicSummary {
                name: t.record.name.clone(),
                partitions: t.record.partitions,
                replication_factor: t.record.replication_factor,
                created_ms: t.metadata.created_ms,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        // A broker that may have been fenced would name leaders that may have moved;
        // clients ask another broker instead, where there is one.
        if self.broker.view().brokers.len() > 1 {
            let broker = self.broker.config().broker_id.0;
            self.broker.lease().check_not_fenced(broker)?;
        }
        authorize(
            &request,
            Operation::Describe,
            Target::Topic(&request.get_ref().name),
        )?;
        let topic = self.broker.topic(&request.get_ref().name)?;
        Ok(Response::new(v1::DescribeTopicResponse {
            topic: Some(self.describe(&topic)),
            brokers: self.brokers_of(&topic),
        }))
    }
}
