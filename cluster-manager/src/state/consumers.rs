//! Consumer managers and who owns each partition of the subscription-state journal.
//!
//! A subscription is served by the consumer manager that owns the journal partition
//! its name hashes to (as Kafka's group coordinator is the leader of the partition of
//! `__consumer_offsets` its group hashes to). Consumer managers register with their
//! first heartbeat; the Raft leader fences one silent for a lease (by its monotonic
//! clock, as for brokers: `lease.rs`), and its partitions go to the others.
//!
//! Ownership changes are decided here, in the applied state, so every node agrees:
//! - a partition without a live owner goes to the live consumer manager that owns the
//!   fewest (ties: the lowest address), with its epoch one higher;
//! - when the owners are uneven (one holds more than its share while another holds
//!   less), the overloaded one is asked to release partitions (`releasing`); it stops
//!   serving them and its next heartbeat, no longer listing them as held, frees them
//!   for the less loaded. A live owner never loses a partition it has not let go of,
//!   so two nodes serve the same partition only if one outlived its lease unaware,
//!   which it cannot do for long: it stops serving once its lease may have run out.

use std::collections::BTreeMap;

use pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS;
use serde::{Deserialize, Serialize};

use crate::command::{CommandError, Response};

/// Most consumer managers registered at once (bounds the state).
pub(crate) const CONSUMER_MANAGERS_MAX: usize = 1_024;

/// Consumer managers and the owners of the journal's partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerManagers {
    /// Live consumer managers by address.
    nodes: BTreeMap<String, ConsumerManagerNode>,
    /// One entry per journal partition (empty until the first heartbeat).
    shards: Vec<Shard>,
}

/// A live consumer manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ConsumerManagerNode {
    /// Heartbeats applied (wrapping): the leader judges its lease by when this changed.
    renewals: u64,
    /// Leader clock at its last heartbeat, ms since the Unix epoch (for display).
    last_heartbeat_ms: u64,
}

/// One journal partition's owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The owning consumer manager's address, if any.
    pub owner: Option<String>,
    /// Grows by one with every grant.
    pub epoch: u64,
    /// The owner was asked to let go of it.
    pub releasing: bool,
}

/// A consumer manager the leader saw renew nothing for a lease, with the renewal
/// count it saw (a heartbeat applied first saves it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentConsumerManager {
    /// Its address.
    pub address: String,
    /// Its renewal count when judged.
    pub renewals: u64,
}

impl ConsumerManagers {
    /// Renews (or starts) the lease of the consumer manager at `address`, which serves
    /// the partitions `held`; frees those it was asked to release and no longer
    /// holds, and regrants and rebalances.
    pub(crate) fn heartbeat(
        &mut self,
        address: &str,
        held: &[u32],
        now_ms: u64,
    ) -> Result<Response, CommandError> {
        if !self.nodes.contains_key(address) && self.nodes.len() >= CONSUMER_MANAGERS_MAX {
            return Err(CommandError::LimitExceeded {
                what: "consumer managers".into(),
                limit: CONSUMER_MANAGERS_MAX as u64,
            });
        }
        let node = self.nodes.entry(address.to_string()).or_default();
        node.renewals = node.renewals.wrapping_add(1);
        node.last_heartbeat_ms = node.last_heartbeat_ms.max(now_ms);
        self.ensure_shards();
        for (index, shard) in self.shards.iter_mut().enumerate() {
            let let_go = !held.contains(&(index as u32));
            if shard.releasing && shard.owner.as_deref() == Some(address) && let_go {
                shard.owner = None;
                shard.releasing = false;
            }
        }
        self.reassign();
        Ok(Response::ConsumerManagerRenewed)
    }

    /// Fences the consumer managers that stayed silent (renewal count unchanged since
    /// judged); their partitions go to the others.
    pub(crate) fn fence_silent(&mut self, silent: &[SilentConsumerManager]) -> Response {
        let mut fenced = Vec::new();
        for judged in silent {
            let still_silent = self
                .nodes
                .get(&judged.address)
                .is_some_and(|n| n.renewals == judged.renewals);
            if still_silent {
                self.nodes.remove(&judged.address);
                fenced.push(judged.address.clone());
            }
        }
        if !fenced.is_empty() {
            self.reassign();
        }
        Response::ConsumerManagersFenced { fenced }
    }

    /// Live consumer managers by address, with their renewal counts.
    pub fn live(&self) -> impl Iterator<Item = (&str, u64)> {
        self.nodes.iter().map(|(a, n)| (a.as_str(), n.renewals))
    }

    /// Every journal partition's owner, in partition order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    fn ensure_shards(&mut self) {
        let count = SUBSCRIPTION_STATE_PARTITIONS as usize;
        if self.shards.len() < count {
            self.shards.resize_with(count, Shard::default);
        }
    }

    /// Grants partitions without a live owner, then asks overloaded owners to release
    /// what a less loaded node should take.
    fn reassign(&mut self) {
        if self.nodes.is_empty() {
            for shard in &mut self.shards {
                shard.owner = None;
                shard.releasing = false;
            }
            return;
        }
        for index in 0..self.shards.len() {
            let orphaned = match &self.shards[index].owner {
                Some(owner) => !self.nodes.contains_key(owner),
                None => true,
            };
            if orphaned {
                let next = self.least_loaded();
                let shard = &mut self.shards[index];
                shard.owner = next;
                shard.epoch += 1;
                shard.releasing = false;
            }
        }
        self.mark_releases();
    }

    /// Partitions each live node owns and keeps (not releasing).
    fn loads(&self) -> BTreeMap<&str, usize> {
        let mut loads: BTreeMap<&str, usize> = self.nodes.keys().map(|a| (a.as_str(), 0)).collect();
        for shard in &self.shards {
            let kept = shard.owner.as_deref().filter(|_| !shard.releasing);
            if let Some(load) = kept.and_then(|owner| loads.get_mut(owner)) {
                *load += 1;
            }
        }
        loads
    }

    /// The live node owning the fewest partitions (ties: the lowest address).
    fn least_loaded(&self) -> Option<String> {
        let loads = self.loads();
        let least = loads
            .iter()
            .min_by_key(|&(address, load)| (*load, *address));
        least.map(|(address, _)| address.to_string())
    }

    /// Marks partitions of nodes above their share as releasing while another node is
    /// below it (their highest-numbered partitions first): first from nodes above the
    /// most any should own, then one each from nodes at it.
    fn mark_releases(&mut self) {
        let (floor, ceil) = share(self.shards.len(), self.nodes.len());
        let loads: Vec<(String, usize)> = self
            .loads()
            .into_iter()
            .map(|(a, l)| (a.to_string(), l))
            .collect();
        let releasing = self.shards.iter().filter(|s| s.releasing).count();
        let wanted: usize = loads.iter().map(|(_, l)| floor.saturating_sub(*l)).sum();
        let mut to_release = wanted.saturating_sub(releasing);
        for (address, load) in &loads {
            let over = load.saturating_sub(ceil).min(to_release);
            to_release -= self.release(address, over);
        }
        for (address, load) in &loads {
            if to_release > 0 && *load == ceil && ceil > floor {
                to_release -= self.release(address, 1);
            }
        }
    }

    /// Marks up to `count` of `address`'s partitions as releasing; returns how many.
    fn release(&mut self, address: &str, count: usize) -> usize {
        let mut marked = 0;
        for shard in self.shards.iter_mut().rev() {
            if marked == count {
                break;
            }
            if shard.owner.as_deref() == Some(address) && !shard.releasing {
                shard.releasing = true;
                marked += 1;
            }
        }
        marked
    }
}

/// The fewest and most partitions each of `nodes` should own out of `shards`.
fn share(shards: usize, nodes: usize) -> (usize, usize) {
    let nodes = nodes.max(1);
    (shards / nodes, shards.div_ceil(nodes))
}

#[cfg(test)]
mod tests;
