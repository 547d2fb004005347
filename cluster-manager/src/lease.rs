//! Lease expiry: the Raft leader's background task that fences silent brokers and
//! consumer managers.
//!
//! Leases are judged by the leader's monotonic clock, never by wall-clock times: every
//! check interval the leader looks at each live broker's renewal count (registrations
//! and heartbeats applied, in the Raft state) and notes when, by its own `Instant`,
//! it last saw the count change. A broker it has seen renew nothing for a whole lease
//! is proposed in `FenceSilent`, with the count it saw; applying that fences it only if
//! the count is unchanged (a heartbeat that lands first saves it) and moves its
//! partition leadership (see `state/leadership.rs`). So a step of the leader's wall
//! clock (NTP, a VM restore, a person) fences no one and spares no one, and two
//! nodes' clocks never need to agree. Proposing only when someone is silent keeps idle
//! clusters from writing a log entry per second.
//!
//! A node that just became leader starts every broker's lease afresh and waits one
//! lease before expiring anything: during the election no heartbeat could be
//! committed, so brokers deserve a full lease to reach the new leader.
//!
//! The same task runs preferred leader election: every [`PREFERRED_LEADER_CHECK`], if a
//! partition's preferred (first) replica is live and in sync but does not lead, it
//! proposes `ElectPreferredLeaders`, so a broker back from a restart leads its share
//! again once it has caught up (Kafka's auto leader rebalance).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::command::{Command, SilentBroker, SilentConsumerManager};
use crate::manager::{LeaderRequest, Manager};
use crate::state::ClusterState;

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
    let mut renewals = Renewals::default();
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
        renewals.observe(metrics.current_term, &manager.view().state, Instant::now());
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
        let silent = renewals.silent(Instant::now(), lease);
        if !silent.is_empty() {
            let command = Command::FenceSilent { brokers: silent };
            propose(&manager, command, "broker leases expired").await;
        }
        let silent = renewals.silent_consumer_managers(Instant::now(), lease);
        if !silent.is_empty() {
            let command = Command::FenceSilentConsumerManagers { nodes: silent };
            propose(&manager, command, "consumer manager leases expired").await;
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

/// When this leader last saw each live broker and consumer manager renew its lease,
/// by its own monotonic clock.
#[derive(Debug, Default)]
struct Renewals {
    brokers: Sightings<u32>,
    consumer_managers: Sightings<String>,
}

impl Renewals {
    /// Notes, as of `now`, every live broker and consumer manager whose renewal count
    /// changed (or that is new to this term); forgets fenced ones.
    fn observe(&mut self, term: u64, state: &ClusterState, now: Instant) {
        let brokers = state.live_brokers().map(|b| (b.id(), b.renewals()));
        self.brokers.observe(term, brokers, now);
        let consumers = state.consumer_managers().live();
        let consumers = consumers.map(|(address, renewals)| (address.to_string(), renewals));
        self.consumer_managers.observe(term, consumers, now);
    }

    /// Live brokers seen renewing nothing for longer than `lease` before `now`.
    fn silent(&self, now: Instant, lease: Duration) -> Vec<SilentBroker> {
        let silent = self.brokers.silent(now, lease);
        silent
            .map(|(broker, renewals)| SilentBroker { broker, renewals })
            .collect()
    }

    /// Live consumer managers seen renewing nothing for longer than `lease`.
    fn silent_consumer_managers(
        &self,
        now: Instant,
        lease: Duration,
    ) -> Vec<SilentConsumerManager> {
        let silent = self.consumer_managers.silent(now, lease);
        silent
            .map(|(address, renewals)| SilentConsumerManager { address, renewals })
            .collect()
    }
}

/// Per live node (by key): the renewal count seen, and when it was first seen.
#[derive(Debug)]
struct Sightings<K> {
    /// The term these sightings belong to: a new term starts everyone afresh.
    term: Option<u64>,
    seen: BTreeMap<K, (u64, Instant)>,
}

impl<K> Default for Sightings<K> {
    fn default() -> Self {
        Sightings {
            term: None,
            seen: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Sightings<K> {
    /// Notes the renewal counts of the `live` nodes as of `now`; forgets the others.
    fn observe(&mut self, term: u64, live: impl Iterator<Item = (K, u64)>, now: Instant) {
        if self.term != Some(term) {
            self.term = Some(term);
            self.seen.clear();
        }
        let live: BTreeMap<K, u64> = live.collect();
        self.seen.retain(|key, _| live.contains_key(key));
        for (key, renewals) in live {
            match self.seen.get(&key) {
                Some(&(seen, _)) if seen == renewals => {}
                _ => {
                    self.seen.insert(key, (renewals, now));
                }
            }
        }
    }

    /// Nodes seen renewing nothing for longer than `lease` before `now`, with the
    /// count seen.
    fn silent(&self, now: Instant, lease: Duration) -> impl Iterator<Item = (K, u64)> + '_ {
        self.seen
            .iter()
            .filter(move |(_, (_, since))| now.saturating_duration_since(*since) > lease)
            .map(|(key, &(renewals, _))| (key.clone(), renewals))
    }
}

#[cfg(test)]
mod tests;
