//! Broker lease expiry: the Raft leader's background task that fences silent brokers.
//!
//! Every check interval the leader looks at its applied state and, only if some live
//! broker's last heartbeat is older than the lease, proposes `ExpireLeases { now, lease }`;
//! applying that fences the brokers and moves their partition leadership (see
//! `state.rs`). Checking first keeps idle clusters from writing a log entry per second.
//!
//! A node that just became leader waits one lease before expiring anything: during the
//! election no heartbeat could be committed, so brokers deserve a full lease to reach the
//! new leader before they are judged.
//!
//! The same task runs preferred leader election: every [`PREFERRED_LEADER_CHECK`], if a
//! partition's preferred (first) replica is live and in sync but does not lead, it
//! proposes `ElectPreferredLeaders`, so a broker back from a restart leads its share
//! again once it has caught up (Kafka's auto leader rebalance).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::command::Command;
use crate::manager::{LeaderRequest, Manager, now_ms};

/// How often the leader looks for leaderships to return to preferred replicas.
pub(crate) const PREFERRED_LEADER_CHECK: Duration = Duration::from_secs(5);

/// Proposes `command` on this node, the Raft leader, logging what came of it.
pub(crate) async fn propose(manager: &Manager, command: Command, done: &str) {
    let kind = command.kind();
    // Proposed here or not at all: another leader runs its own checks.
    match manager
        .handle_forwarded(LeaderRequest::Command(command))
        .await
    {
        Ok(reply) => tracing::info!(reply = ?reply, "{done}"),
        Err(e) => tracing::warn!(error = %e, command = kind, "could not propose"),
    }
}

/// Runs until the task is aborted.
pub(crate) async fn expire_leases(manager: Arc<Manager>, check_interval: Duration) {
    let lease = manager.lease();
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(check_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // (term, when this node was first seen leading in it)
    let mut leading_since: Option<(u64, Instant)> = None;
    let mut preferred_checked = Instant::now();
    loop {
        tick.tick().await;
        let metrics = manager.metrics();
        if metrics.current_leader != Some(manager.id()) {
            leading_since = None;
            continue;
        }
        let since = match leading_since {
            Some((term, since)) if term == metrics.current_term => since,
            _ => {
                let now = Instant::now();
                leading_since = Some((metrics.current_term, now));
                now
            }
        };
        if since.elapsed() < lease {
            continue;
        }
        let now = now_ms();
        if manager.view().state.has_expired_leases(now, lease_ms) {
            let command = Command::ExpireLeases {
                now_ms: now,
                lease_ms,
            };
            propose(&manager, command, "broker leases expired").await;
        }
        if preferred_checked.elapsed() >= PREFERRED_LEADER_CHECK {
            preferred_checked = Instant::now();
            if manager.view().state.preferred_leader_imbalance() > 0 {
                let command = Command::ElectPreferredLeaders;
                propose(
                    &manager,
                    command,
                    "leadership returned to preferred replicas",
                )
                .await;
            }
        }
    }
}
