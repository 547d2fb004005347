//! Subscriptions belong to one incarnation of their topic: deleting the topic ends
//! them, and a topic created again under the same name is a new topic to them.
//!
//! The brokers identify an incarnation by the topic's `created_ms` (cluster-manager
//! clock). A subscription records the one it was made on; every fetch and a periodic
//! check of each subscribed topic compare it with what the brokers show. A newer
//! incarnation, or the topic missing in several checks in a row, deletes the
//! subscription with its groups and dead-letter replay positions: its members' streams
//! end with NOT_FOUND, and its committed offsets are never applied to the new topic.
//! A position past a partition's end (records lost under the same incarnation) is
//! reset by the subscription's start option, never used. Partitions added to the
//! topic are added to its subscriptions by the same check (groups rebalance).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::subscription::{Deletion, Subscription};

/// How often the topic of every subscription is checked.
pub(crate) const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Checks in a row that must find a topic missing before its subscriptions go: one
/// answer from a broker behind on metadata must not delete anything.
const MISSING_CHECKS: u32 = 3;

/// How the incarnation a broker shows compares with a subscription's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Incarnation {
    /// The same, or the broker does not say (0).
    Same,
    /// The subscription does not know its own yet (stored before incarnations were
    /// recorded): it takes this one.
    Adopt(u64),
    /// The topic was deleted and created again since the subscription was made.
    Recreated,
    /// Older than the subscription's: a broker behind on metadata, evidence of nothing.
    Stale,
}

/// Compares a subscription's recorded incarnation with one a broker shows.
pub(crate) fn compare(recorded: u64, seen: u64) -> Incarnation {
    match (recorded, seen) {
        (_, 0) => Incarnation::Same,
        (0, seen) => Incarnation::Adopt(seen),
        (recorded, seen) if recorded == seen => Incarnation::Same,
        (recorded, seen) if seen > recorded => Incarnation::Recreated,
        _ => Incarnation::Stale,
    }
}

/// Subscribed topics found missing, with how many checks in a row found them so.
#[derive(Debug, Default)]
pub struct TopicWatch {
    missing: HashMap<String, u32>,
}

impl TopicWatch {
    /// Counts one check: of the `subscribed` topics, those not `listed` are missing
    /// once more (those listed start over). Returns the topics now missing in
    /// [`MISSING_CHECKS`] checks in a row, which count as deleted.
    pub fn gone<'a>(
        &mut self,
        subscribed: &BTreeSet<&'a str>,
        listed: impl Fn(&str) -> bool,
    ) -> BTreeSet<&'a str> {
        self.missing
            .retain(|topic, _| subscribed.contains(topic.as_str()) && !listed(topic));
        let mut gone = BTreeSet::new();
        for &topic in subscribed.iter().filter(|t| !listed(t)) {
            let misses = self.missing.entry(topic.to_string()).or_default();
            *misses += 1;
            if *misses >= MISSING_CHECKS {
                self.missing.remove(topic);
                gone.insert(topic);
            }
        }
        gone
    }
}

impl Subscription {
    /// Whether records of incarnation `seen` may be delivered to this subscription
    /// (no I/O: a redelivery that sees another incarnation just waits).
    pub fn reads_incarnation(&self, seen: u64) -> bool {
        matches!(
            compare(self.lock_any().topic_created_ms, seen),
            Incarnation::Same | Incarnation::Adopt(_)
        )
    }
}

impl Manager {
    /// One check of every subscribed topic (one ListTopics call): a newer
    /// incarnation, or the topic missing in [`MISSING_CHECKS`] checks in a row,
    /// deletes its subscriptions.
    pub async fn check_topics(&self, watch: &mut TopicWatch) {
        let subscriptions = self.all();
        if subscriptions.is_empty() {
            return;
        }
        let topics = match self.source().incarnations().await {
            Ok(topics) => topics,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list topics to check subscriptions");
                return;
            }
        };
        let subscribed: BTreeSet<&str> = subscriptions.iter().map(|s| s.topic.as_str()).collect();
        let gone = watch.gone(&subscribed, |topic| topics.contains_key(topic));
        for subscription in &subscriptions {
            let topic = subscription.topic.as_str();
            if gone.contains(topic) {
                let why = Deletion::TopicDeleted {
                    topic: topic.to_string(),
                };
                self.end_subscription(subscription, &why).await;
                continue;
            }
            let Some(&(seen, partitions)) = topics.get(topic) else {
                continue;
            };
            let checked = match self.observe_incarnation(subscription, seen).await {
                Ok(true) if partitions > subscription.partitions() => {
                    self.grow(subscription, partitions).await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match checked {
                Ok(()) => {}
                Err(e) if e.is_gone() => {}
                Err(e) => {
                    tracing::warn!(subscription = %subscription.name, error = %e, "cannot check the subscription's topic")
                }
            }
        }
    }

    /// Reads `partitions` partitions of its topic from now on (more than before); a
    /// group rebalances so that its members take the new ones.
    pub(crate) async fn grow(
        &self,
        subscription: &Arc<Subscription>,
        partitions: u32,
    ) -> Result<()> {
        let group = subscription.options.group;
        let grown = self
            .write(subscription, |state, writes| {
                let before = subscription.partitions();
                if partitions <= before {
                    return Ok(None);
                }
                subscription.grow_to(state, partitions);
                for partition in before..partitions {
                    writes.reset(partition, &state.cursors[partition as usize])?;
                }
                if group {
                    state.rebalance(partitions);
                }
                writes.record();
                Ok(Some(before))
            })
            .await?;
        if let Some(before) = grown {
            tracing::info!(subscription = %subscription.name, before, partitions, "partitions added to the subscription");
            subscription.changed.notify_waiters();
        }
        Ok(())
    }

    /// Acts on the incarnation of its topic a broker showed: adopts it if the
    /// subscription knew none, deletes the subscription (NOT_FOUND) if the topic was
    /// created again. Returns whether records of that incarnation may be delivered.
    pub(crate) async fn observe_incarnation(
        &self,
        subscription: &Arc<Subscription>,
        seen: u64,
    ) -> Result<bool> {
        let recorded = subscription.lock()?.topic_created_ms;
        match compare(recorded, seen) {
            Incarnation::Same => Ok(true),
            Incarnation::Stale => Ok(false),
            Incarnation::Adopt(seen) => {
                self.write(subscription, |state, writes| {
                    state.topic_created_ms = seen;
                    writes.record();
                    Ok(())
                })
                .await?;
                Ok(true)
            }
            Incarnation::Recreated => {
                let why = Deletion::TopicRecreated {
                    topic: subscription.topic.clone(),
                };
                self.end_older_than(&subscription.topic, seen, &why).await;
                Err(Error::SubscriptionDeleted {
                    name: subscription.name.clone(),
                    why,
                })
            }
        }
    }

    /// Deletes every subscription of `topic` made on an incarnation older than
    /// `seen`: what one of them learned holds for all.
    async fn end_older_than(&self, topic: &str, seen: u64, why: &Deletion) {
        for subscription in self.all() {
            let older = subscription.topic == topic
                && compare(subscription.lock_any().topic_created_ms, seen)
                    == Incarnation::Recreated;
            if older {
                self.end_subscription(&subscription, why).await;
            }
        }
    }

    /// Removes `existing` (not yet flushed; the caller holds `admin`) if it belongs to
    /// an older incarnation of its topic than `seen`, the one now under its name:
    /// subscribing again then makes a new subscription instead of returning it.
    pub(crate) fn remove_if_outlived(
        &self,
        existing: &Arc<Subscription>,
        seen: u64,
    ) -> Result<bool> {
        let recorded = existing.lock()?.topic_created_ms;
        if compare(recorded, seen) != Incarnation::Recreated {
            return Ok(false);
        }
        let why = Deletion::TopicRecreated {
            topic: existing.topic.clone(),
        };
        self.remove(existing, &why)?;
        tracing::info!(subscription = %existing.name, topic = %existing.topic, reason = %why, "subscription deleted with its topic");
        Ok(true)
    }

    /// Deletes a subscription whose topic is gone, as Unsubscribe does: its members
    /// are removed (their streams end with NOT_FOUND) and nothing of it is kept.
    pub(crate) async fn end_subscription(&self, subscription: &Arc<Subscription>, why: &Deletion) {
        let result = async {
            self.remove_now(subscription, why)?;
            self.store().flush().await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(subscription = %subscription.name, topic = %subscription.topic, reason = %why, "subscription deleted with its topic")
            }
            Err(e) => {
                tracing::error!(subscription = %subscription.name, topic = %subscription.topic, error = %e, "cannot delete the subscription of a deleted topic")
            }
        }
    }

    /// Makes the dead-letter replay positions belong to the dead-letter topic's
    /// incarnation `seen`: positions in an earlier one (the topic was deleted and
    /// created again) start over, so no new dead letter is passed over. Stored with
    /// the replay's next write.
    pub(crate) fn replay_positions_for(
        &self,
        subscription: &Subscription,
        seen: u64,
    ) -> Result<()> {
        self.write_unflushed(subscription, |state, writes| {
            match compare(state.dead_letter_created_ms, seen) {
                Incarnation::Same | Incarnation::Stale => return Ok(()),
                Incarnation::Adopt(_) => {}
                Incarnation::Recreated => {
                    tracing::warn!(subscription = %subscription.name, topic = %subscription.options.dead_letter_topic, "the dead-letter topic was created again; replaying it from the start");
                    state.replayed.clear();
                }
            }
            state.dead_letter_created_ms = seen;
            writes.record();
            Ok(())
        })
    }

    /// The offset a partition resumes at when the subscription's position lies past
    /// its log end (`log_end`): the subscription's start option decides, as Kafka's
    /// `auto.offset.reset` does. `None` (nothing to do now) when the topic cannot be
    /// described or looks stale; NOT_FOUND when it turns out to be a new incarnation,
    /// whose records are not this subscription's to read.
    pub(crate) async fn reset_target(
        &self,
        subscription: &Arc<Subscription>,
        partition: u32,
        log_end: u64,
    ) -> Result<Option<u64>> {
        let topic = &subscription.topic;
        let seen = match self.source().describe(topic).await {
            Ok(description) => description.topic.map_or(0, |t| t.created_ms),
            Err(e) => {
                tracing::debug!(%topic, partition, error = %e, "cannot describe the topic of a position past its end");
                return Ok(None);
            }
        };
        if !self.observe_incarnation(subscription, seen).await? {
            return Ok(None);
        }
        match self
            .source()
            .offset(topic, partition, subscription.options.start.spec())
            .await
        {
            Ok(offset) => Ok(Some(offset.min(log_end))),
            Err(e) => {
                tracing::debug!(%topic, partition, error = %e, "cannot find where to reset a position past the end");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_incarnation_counts_as_recreated() {
        let check = |recorded, seen, expected| assert_eq!(compare(recorded, seen), expected);
        check(10, 10, Incarnation::Same);
        check(10, 0, Incarnation::Same);
        check(0, 0, Incarnation::Same);
        check(0, 7, Incarnation::Adopt(7));
        check(10, 11, Incarnation::Recreated);
        check(10, 9, Incarnation::Stale);
    }

    #[test]
    fn a_topic_counts_as_deleted_only_after_missing_in_checks_in_a_row() {
        let mut watch = TopicWatch::default();
        let subscribed: BTreeSet<&str> = ["a", "b"].into();
        let listed = |present: &'static [&'static str]| move |t: &str| present.contains(&t);
        assert!(watch.gone(&subscribed, listed(&["b"])).is_empty());
        assert!(watch.gone(&subscribed, listed(&["b"])).is_empty());
        // Listed again: the count starts over.
        assert!(watch.gone(&subscribed, listed(&["a", "b"])).is_empty());
        for _ in 1..MISSING_CHECKS {
            assert!(watch.gone(&subscribed, listed(&["b"])).is_empty());
        }
        assert_eq!(watch.gone(&subscribed, listed(&["b"])), ["a"].into());
        assert!(watch.missing.is_empty());
    }
}
