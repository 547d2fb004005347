//! Acknowledgements: Ack, Nack and Kafka-style Commit, and a stream's acks. The
//! decisions are `command::apply`'s; here the caller is checked, the command applied
//! under the subscription's lock, and its writes made durable by group commit before
//! the caller is answered, so nothing acknowledged is delivered again.

use std::sync::Arc;
use std::time::Instant;

use pubsub_proto::v1;

use crate::command::{Command, apply, no_such_partition};
use crate::error::{Error, Result};
use crate::manager::{Caller, Manager, member_id_of};
use crate::subscription::{Subscription, check_generation};

impl Manager {
    /// Acknowledges records of a subscription for a caller (generation checked).
    pub async fn ack(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        ids: &[(u32, u64)],
    ) -> Result<()> {
        let subscription = self.checked_caller(name, caller, generation)?;
        self.ack_ids(&subscription, ids, true).await
    }

    /// The subscription `name`, once the caller's generation is checked and its
    /// presence renewed.
    fn checked_caller(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
    ) -> Result<Arc<Subscription>> {
        let subscription = self.subscription(name)?;
        let member_id = member_id_of(&subscription, caller);
        {
            let mut state = subscription.lock()?;
            check_generation(&subscription, &state, &member_id, generation)?;
            if let Some(member) = state.members.get_mut(&member_id) {
                member.last_seen = Instant::now();
            }
        }
        Ok(subscription)
    }

    /// Acknowledges records and waits until the new positions are durable (see
    /// [`Command::Ack`] for `strict`). The flush is waited for even when nothing was
    /// newly acknowledged: another call may have applied the same ack and not yet
    /// made it durable.
    pub async fn ack_ids(
        &self,
        subscription: &Arc<Subscription>,
        ids: &[(u32, u64)],
        strict: bool,
    ) -> Result<()> {
        self.apply_acks(subscription, ids, strict)?;
        self.store().flush().await
    }

    /// Acknowledges records in memory and in sled, not yet durable: the caller
    /// flushes before it answers anyone (a stream, which answers no ack, flushes
    /// behind its reads; see `stream`). Waiting deliveries are woken, since credits
    /// are free again.
    pub(crate) fn apply_acks(
        &self,
        subscription: &Subscription,
        ids: &[(u32, u64)],
        strict: bool,
    ) -> Result<()> {
        let command = Command::Ack {
            ids: ids.to_vec(),
            strict,
        };
        let acked = self.write_unflushed(subscription, |state, writes| {
            let applied = apply(subscription, state, command)?;
            writes.applied(&state.cursors, &applied)?;
            Ok(applied.acked)
        })?;
        subscription.counters.acked(acked);
        subscription.changed.notify_waiters();
        Ok(())
    }

    /// Gives records back for immediate redelivery: only the caller's own leases, all
    /// or nothing (a nack that changes nothing says so, or the caller would believe
    /// the record is on its way again). Nothing durable changes.
    pub async fn nack(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        ids: &[(u32, u64)],
    ) -> Result<()> {
        let subscription = self.checked_caller(name, caller, generation)?;
        {
            let member_id = member_id_of(&subscription, caller);
            let mut state = subscription.lock()?;
            let holder = state.members.get(&member_id).map(|m| m.holder);
            let command = Command::Nack {
                holder,
                ids: ids.to_vec(),
            };
            apply(&subscription, &mut state, command)?;
        }
        subscription.changed.notify_waiters();
        Ok(())
    }

    /// Kafka-style commit of one partition up to `offset` (at most its high
    /// watermark, asked of its leader before the lock is taken).
    pub async fn commit(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        partition: u32,
        offset: u64,
    ) -> Result<()> {
        let subscription = self.subscription(name)?;
        if partition >= subscription.partitions() {
            return Err(no_such_partition(&subscription, partition));
        }
        let latest = v1::list_offsets_request::Spec::Latest(true);
        let high_watermark = self
            .source()
            .offset(&subscription.topic, partition, latest)
            .await?;
        if offset > high_watermark {
            return Err(Error::CommitPastEnd {
                partition,
                offset,
                end: high_watermark,
            });
        }
        let member_id = member_id_of(&subscription, caller);
        self.write(&subscription, |state, writes| {
            // A reader that picks its partitions itself (no member id) may commit
            // while no member holds them, as Kafka allows.
            if !(member_id.is_empty() && state.members.is_empty()) {
                check_generation(&subscription, state, &member_id, generation)?;
            }
            let applied = apply(&subscription, state, Command::Commit { partition, offset })?;
            writes.applied(&state.cursors, &applied)
        })
        .await
    }
}
