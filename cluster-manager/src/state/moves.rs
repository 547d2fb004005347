//! Replica moves in the state machine, as Kafka's reassignment (KIP-455) does them:
//! a move first adds the new brokers to the replica list, where they fetch from the
//! leader like any follower; once every target replica is in sync, one command makes
//! the target the replica list (and moves leadership if the leader leaves). Until then
//! the partition keeps every replica it had, so a move never lowers its redundancy,
//! and a move cut short (a receiving broker died) is rolled back to where it started.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClusterState, Moving, Partition, Topic};
use crate::command::{CommandError, Response};

impl ClusterState {
    pub(super) fn start_move(
        &mut self,
        topic: &str,
        partition: u32,
        from: Vec<u32>,
        to: Vec<u32>,
    ) -> Result<Response, CommandError> {
        let conflict = |reason: String| CommandError::MoveConflict {
            topic: topic.to_string(),
            partition,
            reason,
        };
        for broker in &to {
            match self.brokers.get(broker) {
                None => return Err(CommandError::BrokerNotFound { broker: *broker }),
                Some(b) if !from.contains(broker) && b.fenced => {
                    return Err(conflict(format!("broker {broker} is fenced")));
                }
                Some(b) if !from.contains(broker) && b.draining => {
                    return Err(conflict(format!("broker {broker} is being decommissioned")));
                }
                Some(_) => {}
            }
        }
        let p = find_partition(&mut self.topics, topic, partition)?;
        if p.moving.is_some() {
            return Err(conflict("another move is under way".into()));
        }
        if p.replicas != from {
            return Err(conflict(format!(
                "the replicas are {:?}, not {from:?}: plan again",
                p.replicas
            )));
        }
        let leaving: Vec<u32> = from.iter().copied().filter(|b| !to.contains(b)).collect();
        let copies = !leaving.is_empty();
        p.replicas = to.iter().chain(&leaving).copied().collect();
        p.isr = in_order(&p.replicas, &p.isr);
        if copies {
            p.moving = Some(Moving { from, to });
        }
        p.check_invariants();
        Ok(Response::MoveStarted { copies })
    }

    pub(super) fn complete_move(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<Response, CommandError> {
        self.end_move(topic, partition, |moving, isr| {
            match moving.to.iter().find(|b| !isr.contains(b)) {
                Some(behind) => Err(format!("broker {behind} is not in sync yet")),
                None => Ok(moving.to.clone()),
            }
        })
        .map(|leader_changed| Response::MoveCompleted { leader_changed })
    }

    pub(super) fn cancel_move(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<Response, CommandError> {
        self.end_move(topic, partition, |moving, isr| {
            match moving.from.iter().any(|b| isr.contains(b)) {
                true => Ok(moving.from.clone()),
                false => Err("no replica it started from is in sync; it can only complete".into()),
            }
        })
        .map(|_| Response::MoveCancelled)
    }

    /// Ends the partition's move with the replica list `end` picks from the move and
    /// the in-sync replicas (or refuses with its reason); the in-sync replicas shrink
    /// to that list and a leader outside it hands over. Returns whether the leader
    /// changed.
    fn end_move(
        &mut self,
        topic: &str,
        partition: u32,
        end: impl FnOnce(&Moving, &[u32]) -> Result<Vec<u32>, String>,
    ) -> Result<bool, CommandError> {
        let live = self.live_ids();
        let p = find_partition(&mut self.topics, topic, partition)?;
        let conflict = |reason: String| CommandError::MoveConflict {
            topic: topic.to_string(),
            partition,
            reason,
        };
        let Some(moving) = p.moving.take() else {
            return Err(conflict("no move is under way".into()));
        };
        let replicas = match end(&moving, &p.isr) {
            Ok(replicas) => replicas,
            Err(reason) => {
                p.moving = Some(moving);
                return Err(conflict(reason));
            }
        };
        p.isr = in_order(&replicas, &p.isr);
        p.replicas = replicas;
        Ok(keep_leader_within(p, &live))
    }

    pub(super) fn set_draining(
        &mut self,
        broker: u32,
        draining: bool,
    ) -> Result<Response, CommandError> {
        let Some(b) = self.brokers.get_mut(&broker) else {
            return Err(CommandError::BrokerNotFound { broker });
        };
        b.draining = draining;
        Ok(Response::BalancingChanged)
    }

    /// Partitions with a move under way, as (topic, partition id, partition).
    pub fn moving_partitions(&self) -> impl Iterator<Item = (&str, u32, &Partition)> {
        self.partitions().filter(|(_, _, p)| p.moving.is_some())
    }

    fn live_ids(&self) -> BTreeSet<u32> {
        self.live_brokers().map(|b| b.id).collect()
    }
}

fn find_partition<'a>(
    topics: &'a mut BTreeMap<String, Topic>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut Partition, CommandError> {
    let Some(t) = topics.get_mut(topic) else {
        return Err(CommandError::TopicNotFound {
            name: topic.to_string(),
        });
    };
    let partitions = t.partitions.len() as u32;
    t.partitions
        .get_mut(partition as usize)
        .ok_or_else(|| CommandError::PartitionNotFound {
            topic: topic.to_string(),
            partition,
            partitions,
        })
}

/// The members of `set` in the order of `order`.
fn in_order(order: &[u32], set: &[u32]) -> Vec<u32> {
    order.iter().copied().filter(|b| set.contains(b)).collect()
}

/// After the replica list changed: if the leader is no longer a replica, the first
/// live in-sync replica takes over with a new epoch. Returns whether the leader changed.
fn keep_leader_within(p: &mut Partition, live: &BTreeSet<u32>) -> bool {
    if p.leader.is_some_and(|l| p.replicas.contains(&l)) {
        p.check_invariants();
        return false;
    }
    let elected = p
        .replicas
        .iter()
        .copied()
        .find(|b| p.isr.contains(b) && live.contains(b));
    let changed = elected != p.leader;
    if changed {
        p.leader = elected;
        p.leader_epoch = p.leader_epoch.saturating_add(1);
    }
    p.check_invariants();
    changed
}

#[cfg(test)]
mod tests;
