//! Describing subscriptions: positions and lag per partition (high watermarks asked
//! of the leaders before the lock is taken), members and what each reads, and
//! presence across a topic's subscriptions.

use std::sync::Arc;

use pubsub_proto::v1;

use crate::cursor::Cursor;
use crate::error::Result;
use crate::manager::Manager;
use crate::subscription::{State, Subscription};

impl Manager {
    /// A subscription's description with per-partition lag (high watermarks asked of
    /// the leaders now) and members.
    pub async fn describe(&self, subscription: &Arc<Subscription>) -> v1::SubscriptionInfo {
        let mut high_watermarks = Vec::with_capacity(subscription.partitions() as usize);
        for p in 0..subscription.partitions() {
            high_watermarks.push(
                self.source()
                    .offset(
                        &subscription.topic,
                        p,
                        v1::list_offsets_request::Spec::Latest(true),
                    )
                    .await
                    .ok(),
            );
        }
        let Ok(state) = subscription.lock() else {
            return v1::SubscriptionInfo::default();
        };
        let partitions = state
            .cursors
            .iter()
            .enumerate()
            .map(|(p, cursor)| {
                let end = high_watermarks.get(p).copied().flatten();
                v1::PartitionLag {
                    partition: p as u32,
                    committed_offset: cursor.committed(),
                    end_offset: end,
                    lag: end.map(|e| e.saturating_sub(cursor.committed())),
                    outstanding: cursor.outstanding(),
                    stopped: cursor.stopped().map(|s| v1::PartitionStopped {
                        offset: s.offset,
                        reason: s.reason.clone(),
                    }),
                }
            })
            .collect();
        v1::SubscriptionInfo {
            name: subscription.name.clone(),
            topic: subscription.topic.clone(),
            options: Some(subscription.options.to_proto()),
            partitions,
            generation: state.generation,
            members: members(subscription, &state, &high_watermarks),
            dead_lettered: state.dead_lettered,
        }
    }

    /// Members connected to a topic's subscriptions (or one subscription).
    pub fn presence(&self, topic: &str, name: &str) -> Result<Vec<v1::MemberInfo>> {
        let mut all = Vec::new();
        for subscription in self.all() {
            if (!topic.is_empty() && subscription.topic != topic)
                || (!name.is_empty() && subscription.name != name)
            {
                continue;
            }
            let state = subscription.lock()?;
            let high_watermarks = state.high_watermarks.clone();
            all.extend(members(&subscription, &state, &high_watermarks));
        }
        all.sort_by(|a, b| (&a.subscription, &a.member_id).cmp(&(&b.subscription, &b.member_id)));
        Ok(all)
    }
}

/// Member descriptions of a subscription; `high_watermarks` give the lag.
fn members(
    subscription: &Subscription,
    state: &State,
    high_watermarks: &[Option<u64>],
) -> Vec<v1::MemberInfo> {
    state
        .members
        .iter()
        .map(|(id, member)| {
            let partitions: Vec<u32> = if subscription.options.group {
                state.assignment.get(id).cloned().unwrap_or_default()
            } else {
                state
                    .cursors
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.holders().any(|h| h == member.holder))
                    .map(|(p, _)| p as u32)
                    .collect()
            };
            let lag_of = |p: &u32| {
                let committed = state.cursors.get(*p as usize).map_or(0, Cursor::committed);
                high_watermarks
                    .get(*p as usize)
                    .copied()
                    .flatten()
                    .map_or(0, |hw| hw.saturating_sub(committed))
            };
            let lag = if subscription.options.group {
                partitions.iter().map(lag_of).sum()
            } else {
                (0..subscription.partitions()).map(|p| lag_of(&p)).sum()
            };
            v1::MemberInfo {
                member_id: id.clone(),
                subscription: subscription.name.clone(),
                client_address: member.address.clone(),
                connected_since_ms: member.since_ms,
                partitions,
                lag,
                mode: member.mode.as_str().to_string(),
            }
        })
        .collect()
}
