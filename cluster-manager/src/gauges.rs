//! The cluster manager's Prometheus series: its Raft group as this node sees it, and
//! the cluster's health from the metadata (brokers alive and fenced, partitions
//! without a leader or missing in-sync replicas, leader elections). Set once a second
//! from the applied state, so every node of the group reports the same cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::manager::Manager;

/// How often the series are set.
const TICK: Duration = Duration::from_secs(1);

/// Sets the series every [`TICK`] for as long as the task runs.
pub(crate) async fn publish(manager: Arc<Manager>) {
    describe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        raft(&manager).await;
        cluster(&manager);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "pubsub_raft_term",
        "Raft term this cluster-manager node is in"
    );
    describe_gauge!(
        "pubsub_raft_leader_id",
        "Raft leader this node follows (-1: none known)"
    );
    describe_gauge!(
        "pubsub_raft_is_leader",
        "1 on the cluster-manager node that leads the Raft group"
    );
    describe_gauge!(
        "pubsub_raft_commit_index",
        "Raft log index known committed on this node"
    );
    describe_gauge!(
        "pubsub_raft_applied_index",
        "Raft log index applied to this node's metadata"
    );
    describe_gauge!(
        "pubsub_brokers",
        "Registered brokers, by state (alive or fenced)"
    );
    describe_gauge!("pubsub_partitions", "Partitions of every topic");
    describe_gauge!("pubsub_partitions_offline", "Partitions without a leader");
    describe_gauge!(
        "pubsub_partitions_under_replicated",
        "Partitions with fewer in-sync replicas than replicas, or no leader"
    );
    describe_counter!(
        "pubsub_leader_elections_total",
        "Partition leader changes (the sum of leader epochs)"
    );
}

async fn raft(manager: &Manager) {
    let metrics = manager.metrics();
    let leader = metrics.current_leader;
    metrics::gauge!("pubsub_raft_term").set(metrics.current_term as f64);
    metrics::gauge!("pubsub_raft_leader_id").set(leader.map_or(-1.0, |l| l as f64));
    metrics::gauge!("pubsub_raft_is_leader").set(f64::from(u8::from(leader == Some(manager.id()))));
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    metrics::gauge!("pubsub_raft_applied_index").set(applied as f64);
    let committed = manager
        .raft()
        .with_raft_state(|state| state.committed.map_or(0, |l| l.index))
        .await;
    if let Ok(committed) = committed {
        metrics::gauge!("pubsub_raft_commit_index").set(committed as f64);
    }
}

fn cluster(manager: &Manager) {
    let view = manager.view();
    let state = &view.state;
    let fenced = state.brokers().values().filter(|b| b.fenced()).count();
    let alive = state.brokers().len() - fenced;
    metrics::gauge!("pubsub_brokers", "state" => "alive").set(alive as f64);
    metrics::gauge!("pubsub_brokers", "state" => "fenced").set(fenced as f64);
    let (mut total, mut offline, mut under_replicated, mut elections) = (0u64, 0u64, 0u64, 0u64);
    for (_, _, partition) in state.partitions() {
        total += 1;
        offline += u64::from(partition.leader().is_none());
        under_replicated += u64::from(partition.under_replicated());
        // Every leader change bumps the epoch by one, from 0 at creation.
        elections += u64::try_from(partition.leader_epoch()).unwrap_or(0);
    }
    metrics::gauge!("pubsub_partitions").set(total as f64);
    metrics::gauge!("pubsub_partitions_offline").set(offline as f64);
    metrics::gauge!("pubsub_partitions_under_replicated").set(under_replicated as f64);
    metrics::counter!("pubsub_leader_elections_total").absolute(elections);
}
