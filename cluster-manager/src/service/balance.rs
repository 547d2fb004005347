//! PlanBalance: the balance planner run on this node's copy of the metadata. It moves
//! nothing; it shows what balancing (and decommissioning) would move.

use std::collections::BTreeSet;

use pubsub_proto::v1;
use tonic::Status;

use crate::balance::{self, Broker, PartitionReplicas, StuckReason};
use crate::placement::Candidate;
use crate::state::ClusterState;

/// The plan for `request` over `state`.
pub(crate) fn plan(
    state: &ClusterState,
    request: &v1::PlanBalanceRequest,
) -> Result<v1::PlanBalanceResponse, Status> {
    let draining: BTreeSet<u32> = request.draining.iter().copied().collect();
    if let Some(unknown) = draining.iter().find(|id| !state.brokers().contains_key(id)) {
        return Err(Status::invalid_argument(format!(
            "broker {unknown} is not registered; `pubsub cluster status` lists the brokers"
        )));
    }
    let brokers: Vec<Broker<'_>> = state
        .brokers()
        .values()
        .map(|b| Broker {
            candidate: Candidate {
                id: b.id(),
                rack: b.rack(),
            },
            draining: draining.contains(&b.id()),
        })
        .collect();
    let partitions: Vec<PartitionReplicas> = state
        .partitions()
        .map(|(topic, partition, p)| PartitionReplicas {
            topic: topic.to_string(),
            partition,
            replicas: p.replicas().to_vec(),
        })
        .collect();
    let max_moves = match request.max_moves {
        0 => usize::MAX,
        limit => limit as usize,
    };
    let plan = balance::plan(&brokers, &partitions, max_moves);
    Ok(v1::PlanBalanceResponse {
        moves: plan
            .moves
            .into_iter()
            .map(|m| v1::ReplicaMove {
                topic: m.topic,
                partition: m.partition,
                from: m.from,
                to: m.to,
            })
            .collect(),
        stuck: plan
            .stuck
            .into_iter()
            .map(|s| v1::StuckPartition {
                topic: s.topic,
                partition: s.partition,
                reason: reason(s.reason),
            })
            .collect(),
    })
}

fn reason(reason: StuckReason) -> String {
    match reason {
        StuckReason::TooFewBrokers {
            eligible,
            replication_factor,
        } => format!(
            "{eligible} brokers would remain for {replication_factor} replicas: add a broker first"
        ),
        StuckReason::RackSpread => {
            "every remaining broker would put two replicas in one rack: add a broker in another rack"
                .to_string()
        }
    }
}
