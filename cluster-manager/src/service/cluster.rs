//! The `ClusterManager` service: broker registration and heartbeats, ISR updates, topic
//! administration, metadata watches, Raft status and membership.
//!
//! Writes go through [`Manager::write`] (Raft, via the leader); their answers are read
//! from this node's state once it has applied the write, so a client sees its own write
//! whichever node it asked. Reads are answered from this node's state as it is.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use pubsub_proto::auth::{Operation, Target, authorize, caller};
use pubsub_proto::v1::{self, cluster_manager_server::ClusterManager};
use tonic::{Request, Response, Status};

use crate::command::{
    Command, CommandError, PartitionSize, Response as Applied, validate_topic_name,
};
use crate::error::Error;
use crate::manager::Manager;
use crate::wire;

/// The `ClusterManager` service of one node.
pub struct ClusterManagerService {
    manager: Arc<Manager>,
}

impl ClusterManagerService {
    /// Serves metadata from `manager`'s node.
    pub fn new(manager: Arc<Manager>) -> Self {
        ClusterManagerService { manager }
    }

    /// Topic `name` as this node has it once it applied log entry `index`.
    async fn topic_after(&self, index: u64, name: String) -> Result<v1::TopicMetadata, Status> {
        self.manager.wait_applied(index).await?;
        let view = self.manager.view();
        match view.state.topic(&name) {
            Some(topic) => Ok(wire::topic(topic)),
            None => Err(Error::Command(CommandError::TopicNotFound { name }).into()),
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.manager.lease().as_millis()).unwrap_or(u64::MAX)
    }

    fn members(&self) -> Vec<v1::RaftMember> {
        let metrics = self.manager.metrics();
        let matched = metrics.replication.as_ref();
        self.manager
            .members()
            .into_iter()
            .map(|(id, address, voter)| v1::RaftMember {
                id,
                address,
                voter,
                matched_index: matched
                    .and_then(|m| m.get(&id).copied().flatten())
                    .map(|l| l.index),
            })
            .collect()
    }
}

/// Whether the caller proved it is broker `id`: its mutual-TLS certificate is named
/// `broker-<id>`. A certificate named for another broker may not register this one;
/// one named otherwise (or none) proves nothing, and the id's lease guards it.
fn proven_broker(caller: &pubsub_proto::auth::Caller, id: u32) -> Result<bool, Status> {
    let Some(name) = caller.certified_name() else {
        return Ok(false);
    };
    match name.strip_prefix("broker-").map(str::parse::<u32>) {
        Some(Ok(named)) if named == id => Ok(true),
        Some(Ok(named)) => Err(Status::permission_denied(format!(
            "the certificate of broker {named} may not register broker {id}"
        ))),
        _ => Ok(false),
    }
}

/// The stream type of `WatchMetadata`.
pub(crate) type MetadataStream =
    Pin<Box<dyn Stream<Item = Result<v1::ClusterMetadata, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterManager for ClusterManagerService {
    #[tracing::instrument(skip_all, fields(broker_id = request.get_ref().broker_id))]
    async fn register_broker(
        &self,
        request: Request<v1::RegisterBrokerRequest>,
    ) -> Result<Response<v1::RegisterBrokerResponse>, Status> {
        let proven = proven_broker(&caller(&request), request.get_ref().broker_id)?;
        let request = request.into_inner();
        let address = request.address.clone();
        let written = self
            .manager
            .write(Command::RegisterBroker {
                broker: request.broker_id,
                address: request.address,
                rack: request.rack,
                kafka_address: request.kafka_address,
                now_ms: 0,
                lease_ms: self.lease_ms(),
                proven,
            })
            .await
            .inspect_err(|e| {
                if let Error::Command(CommandError::BrokerIdInUse { broker, holder }) = e {
                    tracing::warn!(broker, holder = %holder, from = %address, "refused a registration that would take over a live broker's id");
                }
            })?;
        tracing::info!(response = ?written.response, "broker registered");
        Ok(Response::new(v1::RegisterBrokerResponse {
            lease_ms: self.lease_ms(),
            metadata_version: written.log_index,
        }))
    }

    #[tracing::instrument(skip_all, fields(broker_id = request.get_ref().broker_id))]
    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let broker = request.broker_id;
        let sizes = request
            .partition_sizes
            .into_iter()
            .map(|size| PartitionSize {
                topic: size.topic,
                partition: size.partition,
                bytes: size.bytes,
            })
            .collect();
        let written = self
            .manager
            .write(Command::Heartbeat {
                broker,
                now_ms: 0,
                sizes,
            })
            .await?;
        self.manager.wait_applied(written.log_index).await?;
        let view = self.manager.view();
        let assignments = view
            .state
            .assignments(broker)
            .into_iter()
            .map(|(topic, index, partition)| v1::BrokerAssignment {
                topic: topic.to_string(),
                partition: Some(wire::partition(index, partition)),
            })
            .collect();
        Ok(Response::new(v1::HeartbeatResponse {
            lease_ms: self.lease_ms(),
            metadata_version: view.applied_index,
            assignments,
        }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn update_isr(
        &self,
        request: Request<v1::UpdateIsrRequest>,
    ) -> Result<Response<v1::UpdateIsrResponse>, Status> {
        let request = request.into_inner();
        let written = self
            .manager
            .write(Command::UpdateIsr {
                broker: request.broker_id,
                topic: request.topic.clone(),
                partition: request.partition,
                leader_epoch: request.leader_epoch,
                isr: request.in_sync_replicas,
            })
            .await?;
        self.manager.wait_applied(written.log_index).await?;
        let view = self.manager.view();
        let partition = view
            .state
            .topic(&request.topic)
            .and_then(|t| t.partitions().get(request.partition as usize))
            .map(|p| wire::partition(request.partition, p));
        Ok(Response::new(v1::UpdateIsrResponse {
            partition,
            metadata_version: view.applied_index,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<v1::ClusterCreateTopicRequest>,
    ) -> Result<Response<v1::ClusterCreateTopicResponse>, Status> {
        let topic = Target::Topic(&request.get_ref().name);
        authorize(&request, Operation::Admin, topic)?;
        let request = request.into_inner();
        let written = self
            .manager
            .write(Command::CreateTopic {
                name: request.name.clone(),
                partitions: request.partitions,
                replication_factor: request.replication_factor,
                settings: request.config.unwrap_or_default(),
                unclean_leader_election: request.unclean_leader_election,
                now_ms: 0,
            })
            .await?;
        let created = matches!(written.response, Applied::TopicCreated { created: true });
        if created {
            tracing::info!(partitions = request.partitions, "topic created");
        }
        self.manager.wait_applied(written.log_index).await?;
        let view = self.manager.view();
        // Deleted again between the write and this read: report it as gone.
        let Some(topic) = view.state.topic(&request.name) else {
            return Err(Error::Command(CommandError::TopicNotFound { name: request.name }).into());
        };
        Ok(Response::new(v1::ClusterCreateTopicResponse {
            topic: Some(wire::topic(topic)),
            created,
            // The version that holds the change, which watchers are sent; not this
            // node's applied index, which heartbeats after it move silently (a broker
            // waiting for that one would wait for the next real change).
            metadata_version: written.log_index,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::ClusterAlterTopicConfigResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().name),
        )?;
        let request = request.into_inner();
        refuse_internal(&request.name, "reconfigured")?;
        let written = self
            .manager
            .write(Command::AlterTopicConfig {
                name: request.name.clone(),
                changes: request.config.unwrap_or_default(),
            })
            .await?;
        tracing::info!("topic config altered");
        let topic = self.topic_after(written.log_index, request.name).await?;
        Ok(Response::new(v1::ClusterAlterTopicConfigResponse {
            topic: Some(topic),
            metadata_version: written.log_index,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name, partitions = request.get_ref().partitions))]
    async fn create_partitions(
        &self,
        request: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::ClusterCreatePartitionsResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().name),
        )?;
        let request = request.into_inner();
        refuse_internal(&request.name, "given more partitions")?;
        let written = self
            .manager
            .write(Command::CreatePartitions {
                name: request.name.clone(),
                partitions: request.partitions,
            })
            .await?;
        tracing::info!(response = ?written.response, "partitions created");
        let topic = self.topic_after(written.log_index, request.name).await?;
        Ok(Response::new(v1::ClusterCreatePartitionsResponse {
            topic: Some(topic),
            metadata_version: written.log_index,
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
        let name = request.into_inner().name;
        refuse_internal(&name, "deleted")?;
        self.manager.write(Command::DeleteTopic { name }).await?;
        tracing::info!("topic deleted");
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_topics(
        &self,
        request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let caller = caller(&request);
        let view = self.manager.view();
        let topics = view
            .state
            .topics()
            .values()
            .filter(|t| caller.may(Operation::Describe, Target::Topic(t.name())))
            .map(|t| v1::TopicSummary {
                name: t.name().to_string(),
                partitions: t.partitions().len() as u32,
                replication_factor: t.replication_factor(),
                created_ms: t.created_ms(),
            })
            .collect();
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::ClusterDescribeTopicResponse>, Status> {
        validate_topic_name(&request.get_ref().name).map_err(Error::Command)?;
        authorize(
            &request,
            Operation::Describe,
            Target::Topic(&request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        let view = self.manager.view();
        let Some(topic) = view.state.topic(&name) else {
            return Err(Error::Command(CommandError::TopicNotFound { name }).into());
        };
        let named: BTreeSet<u32> = topic
            .partitions()
            .iter()
            .flat_map(|p| p.replicas().iter().copied())
            .collect();
        let brokers = named
            .iter()
            .filter_map(|id| view.state.brokers().get(id))
            .map(wire::broker)
            .collect();
        Ok(Response::new(v1::ClusterDescribeTopicResponse {
            topic: Some(wire::topic(topic)),
            brokers,
            metadata_version: view.applied_index,
        }))
    }

    type WatchMetadataStream = MetadataStream;

    #[tracing::instrument(skip_all)]
    async fn watch_metadata(
        &self,
        _request: Request<v1::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        Ok(Response::new(super::watch(
            self.manager.clone(),
            |view, manager| wire::cluster_metadata(view, manager.leader_id()),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn plan_balance(
        &self,
        request: Request<v1::PlanBalanceRequest>,
    ) -> Result<Response<v1::PlanBalanceResponse>, Status> {
        authorize(&request, Operation::Describe, Target::Cluster)?;
        let view = self.manager.view();
        super::balance::plan(&view.state, request.get_ref()).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(address = %request.get_ref().address))]
    async fn consumer_manager_heartbeat(
        &self,
        request: Request<v1::ConsumerManagerHeartbeatRequest>,
    ) -> Result<Response<v1::ConsumerManagerHeartbeatResponse>, Status> {
        let lease_ms = self.lease_ms();
        super::consumers::heartbeat(&self.manager, request.into_inner(), lease_ms)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(broker_id = request.get_ref().broker_id))]
    async fn decommission_broker(
        &self,
        request: Request<v1::DecommissionBrokerRequest>,
    ) -> Result<Response<v1::DecommissionBrokerResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        super::balance::decommission(&self.manager, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn set_balancing(
        &self,
        request: Request<v1::SetBalancingRequest>,
    ) -> Result<Response<v1::SetBalancingResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let request = request.into_inner();
        let command = Command::SetBalancing {
            auto: request.auto,
            move_rate_bytes: request.move_rate_bytes_per_sec,
        };
        let written = self.manager.write(command).await?;
        self.manager.wait_applied(written.log_index).await?;
        let view = self.manager.view();
        let balancing = view.state.balancing();
        Ok(Response::new(v1::SetBalancingResponse {
            auto: balancing.auto,
            move_rate_bytes_per_sec: balancing.move_rate_bytes,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn cluster_status(
        &self,
        request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        authorize(&request, Operation::Describe, Target::Cluster)?;
        let metrics = self.manager.metrics();
        let commit_index = self
            .manager
            .raft()
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await
            .map_err(|e| Error::RaftStopped(e.to_string()))?;
        let members = self.members();
        let leader_address = metrics
            .current_leader
            .and_then(|id| members.iter().find(|m| m.id == id))
            .map(|m| m.address.clone())
            .unwrap_or_default();
        let view = self.manager.view();
        let state = &view.state;
        let brokers = state
            .brokers()
            .values()
            .map(|b| {
                let mut status = v1::BrokerStatus {
                    broker: Some(wire::broker(b)),
                    partitions_led: 0,
                    replicas: 0,
                    replica_bytes: 0,
                };
                for (_, _, p) in state.partitions() {
                    status.partitions_led += u32::from(p.leader() == Some(b.id()));
                    if p.replicas().contains(&b.id()) {
                        status.replicas += 1;
                        status.replica_bytes = status.replica_bytes.saturating_add(p.size_bytes());
                    }
                }
                status
            })
            .collect();
        let status =
            |(topic, index, p): (&str, u32, &crate::state::Partition)| v1::PartitionStatus {
                topic: topic.to_string(),
                partition: Some(wire::partition(index, p)),
            };
        let under_replicated: Vec<v1::PartitionStatus> = state
            .partitions()
            .filter(|(_, _, p)| p.under_replicated())
            .map(status)
            .collect();
        let moving = state.moving_partitions().map(status).collect();
        let offline_partitions = state
            .partitions()
            .filter(|(_, _, p)| p.leader().is_none())
            .count() as u32;
        Ok(Response::new(v1::ClusterStatusResponse {
            node_id: self.manager.id(),
            leader_id: metrics.current_leader,
            leader_address,
            term: metrics.current_term,
            commit_index,
            applied_index: metrics.last_applied.map(|l| l.index),
            last_log_index: metrics.last_log_index,
            members,
            brokers,
            under_replicated,
            offline_partitions,
            moving,
            auto_balance: state.balancing().auto,
            move_rate_bytes_per_sec: state.balancing().move_rate_bytes,
            journal_owners: super::consumers::owners(state),
        }))
    }

    #[tracing::instrument(skip_all, fields(node_id = request.get_ref().node_id))]
    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::AddMemberResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let request = request.into_inner();
        let index = self
            .manager
            .add_member(request.node_id, request.address)
            .await?;
        self.manager.wait_applied(index).await?;
        Ok(Response::new(v1::AddMemberResponse {
            members: self.members(),
        }))
    }

    #[tracing::instrument(skip_all, fields(node_id = request.get_ref().node_id))]
    async fn remove_member(
        &self,
        request: Request<v1::RemoveMemberRequest>,
    ) -> Result<Response<v1::RemoveMemberResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let index = self
            .manager
            .remove_member(request.into_inner().node_id)
            .await?;
        // A removed node (perhaps this one) may never apply it; answer regardless.
        let _ = self.manager.wait_applied(index).await;
        Ok(Response::new(v1::RemoveMemberResponse {
            members: self.members(),
        }))
    }

    #[tracing::instrument(skip_all, fields(broker_id = request.get_ref().broker_id))]
    async fn shutdown_broker(
        &self,
        request: Request<v1::ShutdownBrokerRequest>,
    ) -> Result<Response<v1::ShutdownBrokerResponse>, Status> {
        caller(&request).require_node("shut a broker down")?;
        let broker = request.into_inner().broker_id;
        let written = self
            .manager
            .write(Command::ShutdownBroker { broker })
            .await?;
        let leader_changes = match written.response {
            Applied::BrokerShutDown { leader_changes } => leader_changes,
            _ => 0,
        };
        tracing::info!(
            leader_changes,
            "broker shutting down; its leaderships moved"
        );
        self.manager.wait_applied(written.log_index).await?;
        Ok(Response::new(v1::ShutdownBrokerResponse {
            leader_changes,
            metadata_version: written.log_index,
        }))
    }
}

/// Refuses a change to an internal topic (see `pubsub_proto::ids::is_internal_topic`).
/// Checked here, not in the command's validation, so a change already in the Raft log
/// still applies the same way on every node.
fn refuse_internal(name: &str, action: &str) -> Result<(), Status> {
    if !pubsub_proto::ids::is_internal_topic(name) {
        return Ok(());
    }
    let refused = CommandError::InternalTopic {
        name: name.to_string(),
        action: action.to_string(),
    };
    Err(Error::Command(refused).into())
}
