//! Which subscriptions this consumer manager serves, when several share a cluster.
//!
//! Subscriptions are spread over consumer managers by the partition of the
//! subscription-state journal their name hashes to (`pubsub_proto::ids::
//! subscription_shard`), as Kafka spreads group coordinators over the partitions of
//! `__consumer_offsets`. The cluster managers decide who owns each partition (their
//! Raft state, `ConsumerManagerHeartbeat`); this node heartbeats every third of its
//! lease, reporting the partitions it serves, and learns its grant and every owner.
//!
//! - A change of grant (partitions won, lost, released, or granted again with a new
//!   epoch after this node was fenced) makes the supervisor load the manager again for
//!   the new grant: the served partitions are rebuilt from the journal, so a partition
//!   that another node wrote to meanwhile is read as it left it.
//! - Safety rests on the lease, as for brokers: this node stops serving once its lease
//!   may have run out (15/16 of it after the last answered heartbeat was *sent*), and
//!   the cluster managers hand its partitions to another only after a whole lease of
//!   silence. A journal write whose answer comes after that point is not acknowledged
//!   to the subscriber (`Ownership::still_valid`), so nothing the next owner did not
//!   read is ever answered as durable.
//! - Requests for a subscription of a partition this node does not serve are refused
//!   with UNAVAILABLE naming the owner (`pubsub-owner-address`); the SDK follows it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::time::Duration;

use pubsub_proto::ids::{SUBSCRIPTION_STATE_PARTITIONS, subscription_shard};
use pubsub_proto::net::{ChannelPool, Link};
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lock::recover;

/// The lease assumed until the cluster managers name theirs.
const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// Longest wait for another consumer manager's listing.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one heartbeat's answer, as a share of the lease.
const ATTEMPT_SHARE: u32 = 3;

/// Journal partitions granted to this node, each with the epoch of its grant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Grant {
    shards: BTreeMap<u32, u64>,
}

impl Grant {
    /// Whether the grant covers the subscription `name`.
    pub(crate) fn covers(&self, name: &str) -> bool {
        self.shards.contains_key(&shard_of(name))
    }

    /// The journal partitions granted.
    pub(crate) fn partitions(&self) -> BTreeSet<u32> {
        self.shards.keys().copied().collect()
    }

    /// The journal partitions granted, with the epoch of each grant.
    pub(crate) fn epochs(&self) -> BTreeMap<u32, u64> {
        self.shards.clone()
    }

    /// What changes from this grant to `next`: the partitions won (each with its
    /// epoch) and those lost. A partition granted again under another epoch (this node
    /// was fenced meanwhile, and another may have written it) is both: let go of, then
    /// read again.
    pub(crate) fn changes_to(&self, next: &Grant) -> (BTreeMap<u32, u64>, Vec<u32>) {
        let won = next
            .shards
            .iter()
            .filter(|&(shard, epoch)| self.shards.get(shard) != Some(epoch))
            .map(|(&shard, &epoch)| (shard, epoch))
            .collect();
        let lost = self
            .shards
            .iter()
            .filter(|&(shard, epoch)| next.shards.get(shard) != Some(epoch))
            .map(|(&shard, _)| shard)
            .collect();
        (won, lost)
    }

    /// This grant without partitions `lost`.
    pub(crate) fn without(&self, lost: &[u32]) -> Grant {
        let mut shards = self.shards.clone();
        shards.retain(|shard, _| !lost.contains(shard));
        Grant { shards }
    }

    /// This grant with partitions `won` (at their epochs).
    pub(crate) fn with(&self, won: &BTreeMap<u32, u64>) -> Grant {
        let mut shards = self.shards.clone();
        shards.extend(won);
        Grant { shards }
    }
}

/// The journal partition (and so the owner) of subscription `name`.
pub(crate) fn shard_of(name: &str) -> u32 {
    subscription_shard(name.as_bytes(), SUBSCRIPTION_STATE_PARTITIONS)
}

/// This node's part in sharing subscriptions: its address, its grant and lease, and
/// who owns the other partitions.
#[derive(Debug)]
pub struct Ownership {
    address: String,
    cluster_managers: Vec<String>,
    pool: ChannelPool,
    grant: watch::Sender<Grant>,
    /// Whether a cluster manager has answered a heartbeat yet.
    heard: watch::Sender<bool>,
    /// Until when this node may serve its grant, by its monotonic clock.
    valid_until: RwLock<Option<Instant>>,
    /// Each partition's owner address, as last heard ("" for none).
    owners: RwLock<Vec<String>>,
}

impl Ownership {
    /// Ownership for the node clients reach at `address`, granted by
    /// `cluster_managers`.
    pub fn new(address: String, cluster_managers: Vec<String>, link: Link) -> Ownership {
        Ownership {
            address,
            cluster_managers,
            pool: ChannelPool::new(link),
            grant: watch::Sender::new(Grant::default()),
            heard: watch::Sender::new(false),
            valid_until: RwLock::new(None),
            owners: RwLock::new(Vec::new()),
        }
    }

    /// This node's address, as the cluster managers know it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The grant as it stands (empty once the lease may have run out).
    pub(crate) fn grant(&self) -> watch::Receiver<Grant> {
        self.grant.subscribe()
    }

    /// Resolves once a cluster manager has answered a heartbeat (the grant is
    /// known): the first load waits for it, so a node does not start out serving
    /// nothing.
    pub(crate) async fn heard(&self) {
        let _ = self.heard.subscribe().wait_for(|&heard| heard).await;
    }

    /// Whether this node's lease still holds: checked after a journal write, before
    /// it is acknowledged.
    pub(crate) fn still_valid(&self) -> bool {
        recover(self.valid_until.read()).is_some_and(|until| Instant::now() < until)
    }

    /// The owner of subscription `name`'s partition, if another node owns it.
    pub(crate) fn owner_of(&self, name: &str) -> Option<String> {
        let owners = recover(self.owners.read());
        let owner = owners.get(shard_of(name) as usize)?;
        (!owner.is_empty() && *owner != self.address).then(|| owner.clone())
    }

    /// Whether the cluster managers granted subscription `name`'s partition to this
    /// node (it may still be reading it).
    pub(crate) fn granted_here(&self, name: &str) -> bool {
        self.grant.borrow().covers(name)
    }

    /// The other owners' addresses (for answers that span every subscription).
    pub(crate) fn other_owners(&self) -> BTreeSet<String> {
        let owners = recover(self.owners.read());
        let others = owners
            .iter()
            .filter(|o| !o.is_empty() && **o != self.address);
        others.cloned().collect()
    }

    /// Every other owner's own listing (asked with this node's credentials); an
    /// error naming the first that did not answer.
    pub(crate) async fn peer_listings(&self) -> Result<Vec<v1::ListSubscriptionsResponse>, String> {
        let mut listings = Vec::new();
        for address in self.other_owners() {
            let channel = self.pool.channel(&address).map_err(|e| e.to_string())?;
            let mut client = v1::consumer_manager_client::ConsumerManagerClient::new(channel)
                .max_decoding_message_size(pubsub_proto::MAX_MESSAGE_BYTES);
            let request = v1::ListSubscriptionsRequest::default();
            let call = client.list_subscriptions(request);
            match tokio::time::timeout(PEER_TIMEOUT, call).await {
                Ok(Ok(answer)) => listings.push(answer.into_inner()),
                Ok(Err(status)) => return Err(format!("{address}: {}", status.message())),
                Err(_) => return Err(format!("{address}: no answer within {PEER_TIMEOUT:?}")),
            }
        }
        Ok(listings)
    }

    /// Heartbeats for as long as the task runs, reporting `held()` (the partitions the
    /// serving manager was loaded for), and publishes the grant each answer gives; an
    /// empty one once the lease may have run out.
    pub(crate) async fn keep(&self, held: impl Fn() -> BTreeSet<u32>) {
        let mut lease = DEFAULT_LEASE;
        let mut warned = false;
        loop {
            let sent = Instant::now();
            match self.heartbeat(held(), lease / ATTEMPT_SHARE).await {
                Ok(answer) => {
                    lease = Duration::from_millis(answer.lease_ms.max(1));
                    *recover(self.valid_until.write()) = Some(sent + lease * 15 / 16);
                    self.learn(&answer);
                    self.heard.send_replace(true);
                    warned = false;
                }
                Err(why) if !warned => {
                    tracing::warn!(error = %why, "cannot renew this consumer manager's lease");
                    warned = true;
                }
                Err(_) => {}
            }
            let next = sent + lease / 3;
            let until = *recover(self.valid_until.read());
            match until {
                Some(until) if until < next => {
                    tokio::time::sleep_until(until).await;
                    self.lapse_if_due();
                    tokio::time::sleep_until(next).await;
                }
                _ => tokio::time::sleep_until(next).await,
            }
            self.lapse_if_due();
        }
    }

    /// Serves nothing once the lease may have run out.
    fn lapse_if_due(&self) {
        if self.still_valid() {
            return;
        }
        let lapsed = self.grant.send_if_modified(|grant| {
            let had = !grant.shards.is_empty();
            grant.shards.clear();
            had
        });
        if lapsed {
            metrics::gauge!("pubsub_consumer_manager_journal_partitions").set(0.0);
            tracing::warn!(
                "this consumer manager's lease may have run out; it serves no subscription until renewed"
            );
        }
    }

    /// Records the owners and this node's grant from a heartbeat's answer.
    fn learn(&self, answer: &v1::ConsumerManagerHeartbeatResponse) {
        let mut owners = vec![String::new(); SUBSCRIPTION_STATE_PARTITIONS as usize];
        let mut grant = Grant::default();
        for shard in &answer.shards {
            if let Some(owner) = owners.get_mut(shard.shard as usize) {
                owner.clone_from(&shard.address);
            }
            if shard.address == self.address && !shard.releasing {
                grant.shards.insert(shard.shard, shard.epoch);
            }
        }
        *recover(self.owners.write()) = owners;
        self.grant.send_if_modified(|current| {
            let changed = *current != grant;
            if changed {
                tracing::info!(partitions = ?grant.partitions(), "journal partitions granted to this consumer manager");
                let granted = grant.shards.len() as f64;
                metrics::gauge!("pubsub_consumer_manager_journal_partitions").set(granted);
                *current = grant;
            }
            changed
        });
    }

    /// One heartbeat, to each cluster manager in turn until one answers.
    async fn heartbeat(
        &self,
        held: BTreeSet<u32>,
        attempt: Duration,
    ) -> Result<v1::ConsumerManagerHeartbeatResponse, String> {
        let request = v1::ConsumerManagerHeartbeatRequest {
            address: self.address.clone(),
            held: held.into_iter().collect(),
        };
        let mut last = "no cluster manager is configured".to_string();
        for address in &self.cluster_managers {
            let channel = match self.pool.channel(address) {
                Ok(channel) => channel,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut client = ClusterManagerClient::new(channel);
            let call = client.consumer_manager_heartbeat(request.clone());
            match tokio::time::timeout(attempt, call).await {
                Ok(Ok(answer)) => return Ok(answer.into_inner()),
                Ok(Err(status)) => last = format!("{address}: {}", status.message()),
                Err(_) => last = format!("{address}: no answer within {attempt:?}"),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant(shards: &[(u32, u64)]) -> Grant {
        Grant::default().with(&shards.iter().copied().collect())
    }

    #[test]
    fn a_change_of_grant_is_partitions_won_and_lost() {
        let before = grant(&[(0, 1), (1, 1), (2, 1)]);
        let after = grant(&[(1, 1), (2, 3), (5, 2)]);
        let (won, lost) = before.changes_to(&after);
        // Partition 2 granted again under a new epoch is let go of and read again.
        assert_eq!(won, [(2, 3), (5, 2)].into_iter().collect());
        assert_eq!(lost, [0, 2]);
        assert_eq!(before.without(&lost).with(&won), after);
        assert_eq!(after.changes_to(&after), (BTreeMap::new(), Vec::new()));
    }

    proptest! {
        /// Letting go of what was lost and adding what was won always gives the grant
        /// asked for, and nothing kept is touched.
        #[test]
        fn letting_go_then_taking_over_reaches_the_next_grant(
            before in proptest::collection::btree_map(0u32..16, 1u64..4, 0..16),
            after in proptest::collection::btree_map(0u32..16, 1u64..4, 0..16),
        ) {
            let (before, after) = (Grant { shards: before }, Grant { shards: after });
            let (won, lost) = before.changes_to(&after);
            prop_assert_eq!(before.without(&lost).with(&won), after.clone());
            for (shard, epoch) in &before.shards {
                let kept = after.shards.get(shard) == Some(epoch);
                prop_assert_eq!(kept, !lost.contains(shard) && !won.contains_key(shard));
            }
        }
    }
}
