//! PlanBalance, the balance planner run on this node's copy of the metadata (it moves
//! nothing: it shows what balancing and decommissioning would move), and
//! DecommissionBroker, which marks a broker as leaving once the plan shows that every
//! replica can leave it.

use std::collections::BTreeSet;

use pubsub_proto::v1;
use tonic::Status;

use crate::balance::{Move, Stuck, StuckReason};
use crate::command::{Command, CommandError};
use crate::error::Error;
use crate::manager::Manager;
use crate::rebalance;
use crate::state::ClusterState;

/// The plan for `request` over `state`: the brokers already draining and those the
/// request lists are emptied.
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
    let max_moves = match request.max_moves {
        0 => usize::MAX,
        limit => limit as usize,
    };
    let plan = rebalance::plan(state, &draining, max_moves);
    Ok(v1::PlanBalanceResponse {
        moves: plan.moves.into_iter().map(wire_move).collect(),
        stuck: plan.stuck.into_iter().map(wire_stuck).collect(),
    })
}

/// Marks the broker as draining (or, with `cancel`, no longer), refusing when the
/// plan shows a partition that could not leave it.
pub(crate) async fn decommission(
    manager: &Manager,
    request: v1::DecommissionBrokerRequest,
) -> Result<v1::DecommissionBrokerResponse, Status> {
    let broker = request.broker_id;
    let view = manager.view();
    if !view.state.brokers().contains_key(&broker) {
        return Err(Error::Command(CommandError::BrokerNotFound { broker }).into());
    }
    let moves = if request.cancel {
        Vec::new()
    } else {
        let plan = rebalance::plan(&view.state, &BTreeSet::from([broker]), usize::MAX);
        if let Some(first) = plan.stuck.first() {
            return Err(Status::failed_precondition(format!(
                "{} partition(s) could not leave broker {broker}, {}-{} first: {}",
                plan.stuck.len(),
                first.topic,
                first.partition,
                reason(first.reason)
            )));
        }
        rebalance::per_partition(plan.moves)
    };
    let written = manager
        .write(Command::SetDraining {
            broker,
            draining: !request.cancel,
        })
        .await?;
    manager.wait_applied(written.log_index).await?;
    tracing::info!(broker, draining = !request.cancel, "decommission changed");
    Ok(v1::DecommissionBrokerResponse {
        moves: moves.into_iter().map(wire_move).collect(),
    })
}

fn wire_move(m: Move) -> v1::ReplicaMove {
    v1::ReplicaMove {
        topic: m.topic,
        partition: m.partition,
        from: m.from,
        to: m.to,
        size_bytes: m.bytes,
    }
}

fn wire_stuck(s: Stuck) -> v1::StuckPartition {
    v1::StuckPartition {
        topic: s.topic,
        partition: s.partition,
        reason: reason(s.reason),
    }
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
