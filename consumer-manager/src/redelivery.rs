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
use crate::source::{ReadOutcome, header_pairs};
use crate::subscription::Subscription;

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
        let max_deliveries = subscription.options.max_deliveries;
        let mut dead: Vec<ConsumerRecord> = Vec::new();
        let mut attempts: Vec<(u32, u64, u32)> = Vec::new();
        // Fetched and due for delivery, if the claim still stands once fetched.
        let mut found: Vec<(u32, u64, u32, ConsumerRecord)> = Vec::new();
        // Could not be fetched now: offered again.
        let mut unfound: Vec<(u32, u64)> = Vec::new();
        // The log holds no such offset (a later one came instead): acknowledged.
        let mut vanished: Vec<(u32, u64)> = Vec::new();
        let mut below_start: Vec<(u32, u64)> = Vec::new();
        for (partition, mut wanted) in by_partition {
            wanted.sort_unstable();
            let mut index = 0;
            while index < wanted.len() {
                let from = wanted[index].0;
                match self
                    .source()
                    .read(
                        &subscription.topic,
                        partition,
                        from,
                        Duration::ZERO,
                        FETCH_BYTES_MAX as u32,
                    )
                    .await
                {
                    Ok(ReadOutcome::Records(fetched))
                        if !fetched.records.is_empty()
                            && subscription.reads_incarnation(fetched.topic_created_ms) =>
                    {
                        let mut records = fetched.records.into_iter().peekable();
                        while index < wanted.len() {
                            let (offset, attempt) = wanted[index];
                            while records.peek().is_some_and(|r| r.offset < offset) {
                                records.next();
                            }
                            let Some(record) = records.next_if(|r| r.offset == offset) else {
                                if records.peek().is_none() {
                                    // Past this fetch: the next one starts here.
                                    break;
                                }
                                vanished.push((partition, offset));
                                index += 1;
                                continue;
                            };
                            if max_deliveries.is_some_and(|max| attempt > max) {
                                attempts.push((partition, offset, attempt));
                                dead.push(record);
                            } else {
                                found.push((partition, offset, attempt, record));
                            }
                            index += 1;
                        }
                    }
                    Ok(ReadOutcome::BelowStart { log_start }) => {
                        below_start.push((partition, log_start));
                        unfound.extend(
                            wanted[index..]
                                .iter()
                                .filter(|&&(o, _)| o >= log_start)
                                .map(|&(o, _)| (partition, o)),
                        );
                        break;
                    }
                    // Nothing of this incarnation to deliver now (a batch that cannot
                    // be decoded, a position past the end): new reads deal with it.
                    Ok(ReadOutcome::Records(_) | ReadOutcome::AboveEnd { .. }) | Err(_) => {
                        unfound.extend(wanted[index..].iter().map(|&(o, _)| (partition, o)));
                        break;
                    }
                }
            }
        }
        if !dead.is_empty()
            && let Err(e) = self.dead_letter(subscription, &dead, &attempts).await
        {
            // Offered again later; the rest of the delivery goes on.
            tracing::warn!(subscription = %subscription.name, error = %e, "cannot write dead letters; will retry");
            unfound.extend(dead.iter().map(|r| (r.partition.0, r.offset)));
        }
        self.write_unflushed(subscription, |state, writes| {
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
        })
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
