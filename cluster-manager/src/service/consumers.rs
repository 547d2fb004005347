//! ConsumerManagerHeartbeat: a consumer manager renews its lease and learns who owns
//! each partition of the subscription-state journal (`state/consumers.rs`).

use pubsub_proto::v1;
use tonic::Status;

use crate::command::Command;
use crate::manager::Manager;
use crate::state::ClusterState;

/// Applies the heartbeat through Raft, then answers with the owners as this node
/// holds them once it applied it.
pub(crate) async fn heartbeat(
    manager: &Manager,
    request: v1::ConsumerManagerHeartbeatRequest,
    lease_ms: u64,
) -> Result<v1::ConsumerManagerHeartbeatResponse, Status> {
    let written = manager
        .write(Command::ConsumerManagerHeartbeat {
            address: request.address,
            held: request.held,
            now_ms: 0,
        })
        .await?;
    manager.wait_applied(written.log_index).await?;
    let view = manager.view();
    Ok(v1::ConsumerManagerHeartbeatResponse {
        lease_ms,
        shards: owners(&view.state),
    })
}

/// Every journal partition's owner, as the wire names them.
pub(crate) fn owners(state: &ClusterState) -> Vec<v1::JournalShardOwner> {
    let shards = state.consumer_managers().shards().iter().enumerate();
    shards
        .map(|(index, shard)| v1::JournalShardOwner {
            shard: index as u32,
            address: shard.owner.clone().unwrap_or_default(),
            epoch: shard.epoch,
            releasing: shard.releasing,
        })
        .collect()
}
