//! Topic changes of the state machine: create, add partitions, alter settings; new
//! partitions are placed over the live brokers by `placement::place`.

use pubsub_proto::v1::TopicConfig;

use super::{ClusterState, Partition, Topic};
use crate::command::{
    CommandError, PARTITIONS_TOTAL_MAX, REPLICATION_FACTOR_DEFAULT, Response, validate_topic_name,
};
use crate::placement::{Candidate, place};

impl ClusterState {
    pub(super) fn create_topic(
        &mut self,
        name: String,
        partitions: u32,
        replication_factor: u32,
        settings: TopicConfig,
        unclean_leader_election: bool,
        now_ms: u64,
    ) -> Result<Response, CommandError> {
        validate_topic_name(&name)?;
        if let Some(existing) = self.topics.get(&name) {
            let resolved = settings.resolve(existing.replication_factor);
            let same = existing.partitions.len() == partitions as usize
                && (replication_factor == 0 || replication_factor == existing.replication_factor)
                && resolved == Ok((existing.settings.clone(), existing.default_keys.clone()))
                && existing.unclean_leader_election == unclean_leader_election;
            return if same {
                Ok(Response::TopicCreated { created: false })
            } else {
                Err(CommandError::TopicExists { name })
            };
        }
        let existing_partitions: u64 = self
            .topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum();
        if existing_partitions + u64::from(partitions) > PARTITIONS_TOTAL_MAX {
            return Err(CommandError::LimitExceeded {
                what: "total partition".into(),
                limit: PARTITIONS_TOTAL_MAX,
            });
        }
        let live = self.candidates();
        let replication_factor = match replication_factor {
            0 => REPLICATION_FACTOR_DEFAULT.min(live.len() as u32).max(1),
            r => r,
        };
        // Defaults are applied once, here: every replica runs with these values.
        let (settings, default_keys) = settings.resolve(replication_factor)?;
        let placement = place(&live, partitions, replication_factor, existing_partitions)?;
        let partitions = new_partitions(placement);
        self.topics.insert(
            name.clone(),
            Topic {
                name,
                replication_factor,
                settings,
                default_keys,
                unclean_leader_election,
                created_ms: now_ms,
                partitions,
            },
        );
        Ok(Response::TopicCreated { created: true })
    }

    /// The live brokers, as placement sees them.
    fn candidates(&self) -> Vec<Candidate<'_>> {
        self.live_brokers()
            .filter(|b| !b.draining)
            .map(|b| Candidate {
                id: b.id,
                rack: b.rack.as_deref(),
            })
            .collect()
    }

    pub(super) fn create_partitions(
        &mut self,
        name: String,
        partitions: u32,
    ) -> Result<Response, CommandError> {
        let total: u64 = self
            .topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum();
        let live = self.candidates();
        let Some(topic) = self.topics.get(&name) else {
            return Err(CommandError::TopicNotFound { name });
        };
        let current = topic.partitions.len() as u32;
        if partitions <= current {
            return Err(CommandError::PartitionsNotRaised {
                name,
                current,
                requested: partitions,
            });
        }
        let added = partitions - current;
        if total + u64::from(added) > PARTITIONS_TOTAL_MAX {
            return Err(CommandError::LimitExceeded {
                what: "total partition".into(),
                limit: PARTITIONS_TOTAL_MAX,
            });
        }
        // Placed from where the cluster's placement stands, as a new topic would be.
        let placement = place(&live, added, topic.replication_factor, total)?;
        let new = new_partitions(placement);
        if let Some(topic) = self.topics.get_mut(&name) {
            topic.partitions.extend(new);
        }
        Ok(Response::PartitionsCreated { added })
    }

    pub(super) fn alter_topic_config(
        &mut self,
        name: String,
        changes: TopicConfig,
    ) -> Result<Response, CommandError> {
        let Some(topic) = self.topics.get_mut(&name) else {
            return Err(CommandError::TopicNotFound { name });
        };
        let (settings, explicit) = topic.settings.altered(&changes, topic.replication_factor)?;
        topic.default_keys = topic
            .default_keys()
            .difference(&explicit)
            .copied()
            .collect();
        topic.settings = settings;
        Ok(Response::TopicConfigAltered)
    }
}

/// Fresh partitions over placed replica lists: each led by its preferred (first)
/// replica, all replicas in sync (there is nothing to catch up on).
fn new_partitions(placement: Vec<Vec<u32>>) -> Vec<Partition> {
    let partitions: Vec<Partition> = placement
        .into_iter()
        .map(|replicas| Partition {
            leader: replicas.first().copied(),
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
            moving: None,
            size_bytes: 0,
        })
        .collect();
    partitions.iter().for_each(Partition::check_invariants);
    partitions
}

#[cfg(test)]
mod tests;
