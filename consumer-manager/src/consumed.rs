//! Keep-until-consumed deletion: segments every subscription of such a topic has
//! consumed are deleted on each replica.
//!
//! The floor of a partition is the smallest committed offset over every subscription
//! of its topic, wherever it is served. A consumer manager alone knows them all;
//! where several share the subscriptions, the owner of journal partition 0 gathers
//! the others' committed offsets (their ListSubscriptions) and deletes only when the
//! answers covered every journal partition: a subscription nobody serves for a
//! moment (its owner just died) must still hold its records.

use std::collections::BTreeMap;

use pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS;

use crate::error::Result;
use crate::manager::Manager;

/// Smallest committed offset per topic and partition.
type Floors = BTreeMap<String, Vec<u64>>;

/// Lowers `topic`'s floors to the `committed` offsets given per partition.
fn lower(floors: &mut Floors, topic: &str, committed: impl Iterator<Item = (u32, u64)>) {
    let entry = floors.entry(topic.to_string()).or_default();
    for (partition, offset) in committed {
        let index = partition as usize;
        if entry.len() <= index {
            entry.resize(index + 1, u64::MAX);
        }
        entry[index] = entry[index].min(offset);
    }
}

impl Manager {
    /// One pass of keep-until-consumed deletion: for every such topic with
    /// subscriptions, each replica deletes the segments below the smallest committed
    /// offset of its partition. Returns how many segments were deleted.
    pub async fn delete_consumed(&self) -> Result<u64> {
        let Some(floors) = self.consumed_floors().await? else {
            return Ok(0);
        };
        let mut deleted = 0u64;
        for (topic, floors) in floors {
            let description = match self.source().describe(&topic).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(%topic, error = %e, "cannot describe topic for cleanup");
                    continue;
                }
            };
            let Some(described) = description.topic else {
                continue;
            };
            let keep_until_consumed = described
                .config
                .as_ref()
                .and_then(|c| c.retain_until_consumed)
                .unwrap_or(false);
            if !keep_until_consumed {
                continue;
            }
            for partition in &described.partitions {
                let Some(&floor) = floors.get(partition.partition as usize) else {
                    continue;
                };
                for replica in &partition.replicas {
                    let Some(broker) = description.brokers.iter().find(|b| b.id == *replica) else {
                        continue;
                    };
                    match self
                        .source()
                        .delete_below(&broker.address, &topic, partition.partition, floor)
                        .await
                    {
                        Ok(response) => deleted += u64::from(response.segments_deleted),
                        Err(e) => {
                            tracing::debug!(%topic, partition = partition.partition, broker = replica, error = %e, "delete below the consumed offset failed")
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// The floors of every subscribed topic; `None` when they cannot all be known
    /// (another node runs the pass, or a journal partition went unanswered).
    async fn consumed_floors(&self) -> Result<Option<Floors>> {
        let mut floors = Floors::new();
        // Read together: the partitions counted as covered hold every subscription
        // whose floor is taken here.
        let (all, grant) = self.served();
        for subscription in all {
            let state = subscription.lock()?;
            let committed = state.cursors.iter().enumerate();
            let committed = committed.map(|(p, c)| (p as u32, c.committed()));
            lower(&mut floors, &subscription.topic, committed);
        }
        let Some(grant) = grant else {
            return Ok(Some(floors));
        };
        let Some(ownership) = self.config().ownership.as_ref() else {
            return Ok(Some(floors));
        };
        let mut covered = grant.partitions();
        if !covered.contains(&0) {
            return Ok(None);
        }
        let listings = match ownership.peer_listings().await {
            Ok(listings) => listings,
            Err(why) => {
                tracing::debug!(error = %why, "keep-until-consumed pass skipped");
                return Ok(None);
            }
        };
        for listing in listings {
            covered.extend(listing.journal_partitions);
            for info in listing.subscriptions {
                let committed = info.partitions.iter();
                let committed = committed.map(|p| (p.partition, p.committed_offset));
                lower(&mut floors, &info.topic, committed);
            }
        }
        let every = covered.len() == SUBSCRIPTION_STATE_PARTITIONS as usize;
        Ok(every.then_some(floors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_the_smallest_committed_offset_per_partition() {
        let mut floors = Floors::new();
        lower(&mut floors, "t", [(0, 5), (1, 9)].into_iter());
        lower(&mut floors, "t", [(1, 3), (2, 7)].into_iter());
        lower(&mut floors, "u", [(0, 1)].into_iter());
        assert_eq!(floors["t"], [5, 3, 7]);
        assert_eq!(floors["u"], [1]);
    }
}
