//! Redelivery: records whose lease expired or that were nacked are fetched again and
//! delivered with their attempt counted; past `max_deliveries` they go to the
//! subscription's dead-letter topic and are acknowledged instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pubsub_client::ConsumerRecord;

use crate::delivery::{Claim, FETCH_BYTES_MAX, Redeliveries, skip};
use crate::error::Result;
use crate::manager::{Delivery, Manager, delivered};
use crate::persist::Writes;
use crate::source::{ReadOutcome, header_pairs};
use crate::subscription::{State, Subscription};

/// What fetching the claimed redeliveries found, for the record step.
#[derive(Default)]
struct Refetched {
    /// Past `max_deliveries`: for the dead-letter topic.
    dead: Vec<ConsumerRecord>,
    /// Delivery attempts to store: of the dead letters, then of what is delivered.
    attempts: Vec<(u32, u64, u32)>,
    /// Fetched and due for delivery, if the claim still stands once fetched.
    found: Vec<(u32, u64, u32, ConsumerRecord)>,
    /// Could not be fetched now: offered again.
    unfound: Vec<(u32, u64)>,
    /// The log holds no such offset (a later one came instead): acknowledged.
    vanished: Vec<(u32, u64)>,
    /// Partitions whose log now starts past a claimed offset, and where.
    below_start: Vec<(u32, u64)>,
}

impl Refetched {
    /// Sorts the claimed `wanted` offsets of `partition` (from `*index` on) that
    /// `records` (one fetch) holds, or shows missing; leaves `*index` at the first
    /// offset past the fetch.
    fn take(
        &mut self,
        partition: u32,
        wanted: &[(u64, u32)],
        index: &mut usize,
        records: &[ConsumerRecord],
        max_deliveries: Option<u32>,
    ) {
        let mut records = records.iter().peekable();
        while let Some(&(offset, attempt)) = wanted.get(*index) {
            while records.peek().is_some_and(|r| r.offset < offset) {
                records.next();
            }
            let Some(record) = records.next_if(|r| r.offset == offset) else {
                if records.peek().is_none() {
                    // Past this fetch: the next one starts here.
                    break;
                }
                self.vanished.push((partition, offset));
                *index += 1;
                continue;
            };
            if max_deliveries.is_some_and(|max| attempt > max) {
                self.attempts.push((partition, offset, attempt));
                self.dead.push(record.clone());
            } else {
                self.found
                    .push((partition, offset, attempt, record.clone()));
            }
            *index += 1;
        }
    }
}

impl Manager {
    /// Fetches claimed redeliveries; records past `max_deliveries` go to the dead-letter
    /// topic and are acknowledged instead of delivered.
    pub(crate) async fn redeliver(
        &self,
        subscription: &Arc<Subscription>,
        claim: &Claim,
        claims: Redeliveries,
        delivery: &mut Delivery,
    ) -> Result<()> {
        let mut by_partition: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
        for (partition, offset, attempt) in claims {
            by_partition
                .entry(partition)
                .or_default()
                .push((offset, attempt));
        }
        let mut refetched = Refetched::default();
        for (partition, mut wanted) in by_partition {
            wanted.sort_unstable();
            self.refetch(subscription, partition, &wanted, &mut refetched)
                .await;
        }
        if !refetched.dead.is_empty()
            && let Err(e) = self
                .dead_letter(subscription, &refetched.dead, &refetched.attempts)
                .await
        {
            // Offered again later; the rest of the delivery goes on.
            tracing::warn!(subscription = %subscription.name, error = %e, "cannot write dead letters; will retry");
            let dead = refetched.dead.iter().map(|r| (r.partition.0, r.offset));
            refetched.unfound.extend(dead);
        }
        self.write_unflushed(subscription, |state, writes| {
            record_redeliveries(subscription, claim, refetched, state, writes, delivery)
        })
    }

    /// Fetches the claimed offsets `wanted` (sorted) of one partition into `out`.
    async fn refetch(
        &self,
        subscription: &Subscription,
        partition: u32,
        wanted: &[(u64, u32)],
        out: &mut Refetched,
    ) {
        let max_deliveries = subscription.options.max_deliveries;
        let mut index = 0;
        while let Some(&(from, _)) = wanted.get(index) {
            let read = self.source().read(
                &subscription.topic,
                partition,
                from,
                Duration::ZERO,
                FETCH_BYTES_MAX as u32,
            );
            match read.await {
                Ok(ReadOutcome::Records(fetched))
                    if !fetched.records.is_empty()
                        && subscription.reads_incarnation(fetched.topic_created_ms) =>
                {
                    out.take(
                        partition,
                        wanted,
                        &mut index,
                        &fetched.records,
                        max_deliveries,
                    );
                }
                Ok(ReadOutcome::BelowStart { log_start }) => {
                    out.below_start.push((partition, log_start));
                    let kept = wanted[index..].iter().filter(|&&(o, _)| o >= log_start);
                    out.unfound.extend(kept.map(|&(o, _)| (partition, o)));
                    return;
                }
                // Nothing of this incarnation to deliver now (a batch that cannot
                // be decoded, a position past the end): new reads deal with it.
                Ok(ReadOutcome::Records(_) | ReadOutcome::AboveEnd { .. }) | Err(_) => {
                    let rest = wanted[index..].iter().map(|&(o, _)| (partition, o));
                    out.unfound.extend(rest);
                    return;
                }
            }
        }
    }

    /// Writes records to the subscription's dead-letter topic, then acknowledges them.
    async fn dead_letter(
        &self,
        subscription: &Arc<Subscription>,
        dead: &[ConsumerRecord],
        attempts: &[(u32, u64, u32)],
    ) -> Result<()> {
        let attempt_of = |partition: u32, offset: u64| {
            attempts
                .iter()
                .find(|&&(p, o, _)| p == partition && o == offset)
                .map_or(0, |&(_, _, a)| a - 1)
        };
        let records = dead
            .iter()
            .map(|record| {
                let mut headers = header_pairs(record);
                headers.push(("pubsub-dlq-topic".into(), subscription.topic.clone().into()));
                headers.push((
                    "pubsub-dlq-partition".into(),
                    record.partition.to_string().into(),
                ));
                headers.push(("pubsub-dlq-offset".into(), record.offset.to_string().into()));
                headers.push((
                    "pubsub-dlq-deliveries".into(),
                    attempt_of(record.partition.0, record.offset)
                        .to_string()
                        .into(),
                ));
                pubsub_client::ProducerRecord {
                    key: record.key.clone(),
                    value: record.value.clone(),
                    headers,
                    partition: None,
                    timestamp: Some(record.timestamp),
                }
            })
            .collect();
        self.source()
            .produce(&subscription.options.dead_letter_topic, 1, records)
            .await?;
        tracing::info!(subscription = %subscription.name, records = dead.len(), topic = %subscription.options.dead_letter_topic, "dead-lettered records");
        let ids: Vec<(u32, u64)> = dead.iter().map(|r| (r.partition.0, r.offset)).collect();
        self.write_unflushed(subscription, |state, writes| {
            state.dead_lettered += ids.len() as u64;
            subscription.counters.dead_lettered(ids.len() as u64);
            writes.record();
            Ok(())
        })?;
        // Not strict: a seek meanwhile must not leave a written dead letter unacked
        // (it would be dead-lettered again).
        self.ack_ids(subscription, &ids, false).await
    }
}

/// The record step of a redelivery, under the lock: what was fetched goes to the
/// reader only if its lease is still the reader's; what could not be fetched is
/// offered again; attempts are stored; offsets the log no longer holds count as
/// acknowledged.
fn record_redeliveries(
    subscription: &Subscription,
    claim: &Claim,
    refetched: Refetched,
    state: &mut State,
    writes: &mut Writes<'_>,
    delivery: &mut Delivery,
) -> Result<()> {
    let Refetched {
        mut attempts,
        found,
        unfound,
        vanished,
        below_start,
        ..
    } = refetched;
    // A rebalance, a seek or an expiry while fetching moved the lease on: then
    // the record is not this reader's to get.
    for (partition, offset, attempt, record) in found {
        let held = state
            .cursors
            .get(partition as usize)
            .is_some_and(|c| c.holder_of(offset) == Some(claim.holder));
        if held && claim.stands(subscription, state, partition) {
            attempts.push((partition, offset, attempt));
            delivery.records.push(delivered(record, attempt));
        }
    }
    for (partition, offset) in unfound {
        if let Some(cursor) = state.cursors.get_mut(partition as usize) {
            cursor.unclaim_if(offset, claim.holder);
        }
    }
    for &(partition, offset, attempt) in &attempts {
        writes.deliveries(partition, offset, attempt);
    }
    let mut gone: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (partition, offset) in vanished {
        gone.entry(partition).or_default().push(offset);
    }
    for (partition, offsets) in gone {
        if let Some(cursor) = state.cursors.get_mut(partition as usize) {
            let before = cursor.committed();
            for &offset in &offsets {
                cursor.ack(offset);
            }
            writes.cursor(partition, cursor, before, &offsets)?;
        }
    }
    for (partition, log_start) in below_start {
        if let Some(cursor) = state.cursors.get_mut(partition as usize) {
            let from = cursor.committed();
            cursor.skip_below(log_start);
            writes.cursor(partition, cursor, from, &[])?;
            delivery
                .skipped
                .push(skip(partition, from, log_start, "topic retention"));
        }
    }
    Ok(())
}
