//! Leadership in the state machine: elections when brokers are fenced (lease expiry,
//! shutdown, re-registration), preferred leader election, and the ISR changes leaders
//! ask for. Leaders come from the in-sync replicas only, unless a topic allows unclean
//! election.

use std::collections::BTreeSet;

use super::{ClusterState, Partition, lease_expired};
use crate::command::{CommandError, Response, SilentBroker};

impl ClusterState {
    /// Partitions whose preferred (first) replica is live and in sync but does not
    /// lead: what [`Command::ElectPreferredLeaders`] would move.
    pub fn preferred_leader_imbalance(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| self.preferred_ready(p))
            .count()
    }

    fn preferred_ready(&self, partition: &Partition) -> bool {
        let Some(&preferred) = partition.replicas.first() else {
            return false;
        };
        partition.leader != Some(preferred)
            && partition.isr.contains(&preferred)
            && self.brokers.get(&preferred).is_some_and(|b| !b.fenced)
    }

    pub(super) fn elect_preferred_leaders(&mut self) -> Response {
        let ready: Vec<(String, usize)> = self
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().enumerate().map(move |(i, p)| (t, i, p)))
            .filter(|(_, _, p)| self.preferred_ready(p))
            .map(|(t, i, _)| (t.name.clone(), i))
            .collect();
        for (topic, index) in &ready {
            if let Some(partition) = self
                .topics
                .get_mut(topic)
                .and_then(|t| t.partitions.get_mut(*index))
            {
                partition.leader = partition.replicas.first().copied();
                partition.leader_epoch = partition.leader_epoch.saturating_add(1);
                partition.check_invariants();
            }
        }
        Response::PreferredLeadersElected {
            leader_changes: ready.len() as u32,
        }
    }

    pub(super) fn expire_leases(&mut self, now_ms: u64, lease_ms: u64) -> Response {
        let fenced: Vec<u32> = self
            .brokers
            .values_mut()
            .filter(|b| !b.fenced && lease_expired(b, now_ms, lease_ms))
            .map(|b| {
                b.fenced = true;
                b.id
            })
            .collect();
        self.after_fencing(fenced)
    }

    /// Fences each listed broker that is live and has not renewed since the leader
    /// judged it silent.
    pub(super) fn fence_silent(&mut self, silent: &[SilentBroker]) -> Response {
        let mut fenced = Vec::new();
        for s in silent {
            let broker = self.brokers.get_mut(&s.broker);
            if let Some(b) = broker.filter(|b| !b.fenced && b.renewals == s.renewals) {
                b.fenced = true;
                fenced.push(b.id);
            }
        }
        self.after_fencing(fenced)
    }

    /// Moves the leaderships of newly `fenced` brokers, and says what changed.
    fn after_fencing(&mut self, fenced: Vec<u32>) -> Response {
        let leader_changes = if fenced.is_empty() {
            0
        } else {
            self.reconcile_all()
        };
        Response::LeasesExpired {
            fenced,
            leader_changes,
        }
    }

    /// Brings every partition in line with the live broker set; returns how many
    /// partitions changed leader.
    pub(super) fn reconcile_all(&mut self) -> u32 {
        let live: BTreeSet<u32> = self.live_brokers().map(|b| b.id).collect();
        let mut changes = 0;
        for topic in self.topics.values_mut() {
            for partition in &mut topic.partitions {
                if reconcile(partition, &live, topic.unclean_leader_election) {
                    changes += 1;
                }
            }
        }
        changes
    }

    pub(super) fn update_isr(
        &mut self,
        broker: u32,
        topic: String,
        partition: u32,
        leader_epoch: i32,
        isr: Vec<u32>,
    ) -> Result<Response, CommandError> {
        let live: BTreeSet<u32> = self.live_brokers().map(|b| b.id).collect();
        match self.brokers.get(&broker) {
            None => return Err(CommandError::BrokerNotFound { broker }),
            Some(b) if b.fenced => return Err(CommandError::BrokerFenced { broker }),
            Some(_) => {}
        }
        let Some(t) = self.topics.get_mut(&topic) else {
            return Err(CommandError::TopicNotFound { name: topic });
        };
        let partitions = t.partitions.len() as u32;
        let Some(p) = t.partitions.get_mut(partition as usize) else {
            return Err(CommandError::PartitionNotFound {
                topic,
                partition,
                partitions,
            });
        };
        if leader_epoch != p.leader_epoch {
            return Err(CommandError::StaleLeaderEpoch {
                topic,
                partition,
                given: leader_epoch,
                current: p.leader_epoch,
            });
        }
        if p.leader != Some(broker) {
            return Err(CommandError::NotPartitionLeader {
                topic,
                partition,
                broker,
                leader: p.leader,
            });
        }
        let invalid = |reason: String| CommandError::InvalidIsr {
            topic: topic.clone(),
            partition,
            reason,
        };
        let wanted: BTreeSet<u32> = isr.iter().copied().collect();
        if wanted.len() != isr.len() {
            return Err(invalid("a broker is listed twice".into()));
        }
        if !wanted.contains(&broker) {
            return Err(invalid(format!("the leader {broker} must be in sync")));
        }
        if let Some(stranger) = wanted.iter().find(|b| !p.replicas.contains(b)) {
            return Err(invalid(format!("broker {stranger} is not a replica")));
        }
        if let Some(dead) = wanted.iter().find(|b| !live.contains(b)) {
            return Err(invalid(format!("broker {dead} is fenced or unknown")));
        }
        p.isr = p
            .replicas
            .iter()
            .copied()
            .filter(|b| wanted.contains(b))
            .collect();
        p.check_invariants();
        Ok(Response::IsrUpdated)
    }
}

/// Drops dead brokers from the in-sync replicas (keeping at least one, so the replica
/// with every acknowledged record can lead again when it returns) and makes sure the
/// leader is alive, electing a new one when it is not. Returns whether the leader changed.
///
/// A new leader comes from the live in-sync replicas, in replica order. Only if there is
/// none and the topic allows unclean election does a live replica outside the ISR take
/// over, becoming the whole ISR (records only the old ISR had are lost).
fn reconcile(partition: &mut Partition, live: &BTreeSet<u32>, unclean: bool) -> bool {
    let keep = partition
        .leader
        .filter(|l| partition.isr.contains(l))
        .or_else(|| partition.isr.first().copied());
    let mut isr: Vec<u32> = partition
        .isr
        .iter()
        .copied()
        .filter(|b| live.contains(b))
        .collect();
    if isr.is_empty() {
        isr.extend(keep);
    }
    partition.isr = isr;
    let leader_alive = partition.leader.is_some_and(|l| live.contains(&l));
    let mut changed = false;
    if !leader_alive {
        let clean = partition
            .replicas
            .iter()
            .copied()
            .find(|b| partition.isr.contains(b) && live.contains(b));
        let elected = match clean {
            Some(leader) => Some(leader),
            None if unclean => {
                let leader = partition
                    .replicas
                    .iter()
                    .copied()
                    .find(|b| live.contains(b));
                if let Some(leader) = leader {
                    partition.isr = vec![leader];
                }
                leader
            }
            None => None,
        };
        if elected != partition.leader {
            let previous = partition.leader_epoch;
            partition.leader = elected;
            partition.leader_epoch = previous
                .checked_add(1)
                .expect("a leader epoch grows by one per election and never nears i32::MAX");
            changed = true;
        }
    }
    partition.check_invariants();
    changed
}
