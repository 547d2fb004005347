//! Batches the consumer manager cannot decode (written by an incompatible version,
//! or corrupted in a way the CRC did not catch). A subscription never stalls on one
//! silently: it is logged with topic, partition and offset, then either written
//! whole, as raw bytes, to the subscription's dead-letter topic and passed over, or
//! it stops delivery of its partition with the reason shown in the subscription's
//! description, while the other partitions go on. A reader all of whose partitions
//! are stopped gets an error naming them, never an empty answer for ever.

use bytes::Bytes;
use pubsub_client::{ProducerRecord, Undecodable};

use crate::cursor::{Cursor, Stopped};
use crate::delivery::Found;
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::options::Options;
use crate::source::Fetched;
use crate::subscription::{State, Subscription};

/// Marks a dead letter that is a whole undecodable batch, not a record: replay leaves
/// it in the dead-letter topic for a human to look at.
pub(crate) const RAW_BATCH_HEADER: &str = "pubsub-dlq-raw-batch";

/// What a subscription does with a batch it cannot decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Write it whole to the dead-letter topic and go on past it.
    DeadLetter,
    /// Stop delivering the partition's new records there, visibly.
    Stop,
}

impl Policy {
    /// A subscription with a dead-letter policy (`max_deliveries`, as in Pub/Sub)
    /// dead-letters such a batch; any other stops the partition rather than pass over
    /// records that no one will ever see or find.
    pub(crate) fn of(options: &Options) -> Policy {
        if options.max_deliveries.is_some() {
            Policy::DeadLetter
        } else {
            Policy::Stop
        }
    }
}

/// The dead letter for an undecodable batch: the raw batch as the value, and where
/// it came from in headers (as for records: topic, partition, offset), plus why.
pub(crate) fn raw_dead_letter(topic: &str, partition: u32, batch: &Undecodable) -> ProducerRecord {
    let text = |s: String| Bytes::from(s.into_bytes());
    let mut headers = vec![
        ("pubsub-dlq-topic".to_string(), text(topic.to_string())),
        ("pubsub-dlq-partition".into(), text(partition.to_string())),
        ("pubsub-dlq-offset".into(), text(batch.offset.to_string())),
        ("pubsub-dlq-reason".into(), text(batch.reason.clone())),
        (RAW_BATCH_HEADER.into(), Bytes::from_static(b"1")),
    ];
    if let Some(next) = batch.next_offset {
        headers.push(("pubsub-dlq-next-offset".into(), text(next.to_string())));
    }
    ProducerRecord {
        key: None,
        value: Some(batch.batch.clone()),
        headers,
        partition: None,
        timestamp: None,
    }
}

/// The error for a member every partition of which is stopped, if they all are.
pub(crate) fn all_stopped(
    subscription: &Subscription,
    state: &State,
    eligible: &[u32],
) -> Option<Error> {
    let stops: Vec<(u32, &Stopped)> = eligible
        .iter()
        .map(|&p| Some((p, state.cursors.get(p as usize).and_then(Cursor::stopped)?)))
        .collect::<Option<_>>()?;
    let (partition, stopped) = stops.into_iter().min_by_key(|(p, _)| *p)?;
    Some(Error::PartitionStopped {
        topic: subscription.topic.clone(),
        partition,
        offset: stopped.offset,
        reason: stopped.reason.clone(),
    })
}

/// The fetched records, or the error naming the batch that cannot be decoded where
/// the read began (history and replay report it rather than pass over it).
pub(crate) fn decodable(topic: &str, partition: u32, fetched: Fetched) -> Result<Fetched> {
    match fetched.undecodable {
        None => Ok(fetched),
        Some(batch) => {
            tracing::error!(%topic, partition, offset = batch.offset, reason = %batch.reason, "a batch cannot be decoded");
            Err(Error::Undecodable {
                topic: topic.to_string(),
                partition,
                offset: batch.offset,
                reason: batch.reason,
            })
        }
    }
}

impl Manager {
    /// Applies the subscription's [`Policy`] to a batch met at the position of a
    /// partition's new records. `None` when the dead-letter topic cannot be written
    /// for now: the next read meets the batch again.
    pub(crate) async fn resolve_undecodable(
        &self,
        subscription: &Subscription,
        partition: u32,
        batch: Undecodable,
    ) -> Option<Found> {
        let (name, topic) = (&subscription.name, &subscription.topic);
        let dlq = &subscription.options.dead_letter_topic;
        let offset = batch.offset;
        let stop = |reason: String| Some(Found::Stop(Stopped { offset, reason }));
        let next_offset = match (Policy::of(&subscription.options), batch.next_offset) {
            (Policy::DeadLetter, Some(next)) => next,
            (policy, _) => {
                tracing::error!(subscription = %name, %topic, partition, offset, reason = %batch.reason, ?policy, "a batch cannot be decoded; delivery of the partition stops there");
                return stop(batch.reason);
            }
        };
        let letter = raw_dead_letter(topic, partition, &batch);
        match self.source().produce(dlq, 1, vec![letter]).await {
            Ok(()) => {
                tracing::error!(subscription = %name, %topic, partition, offset, next_offset, reason = %batch.reason, dead_letter_topic = %dlq, "a batch cannot be decoded; dead-lettered it whole and went on");
                Some(Found::DeadLettered {
                    offset,
                    next_offset,
                })
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(subscription = %name, %topic, partition, offset, dead_letter_topic = %dlq, error = %e, "cannot dead-letter an undecodable batch yet; will retry");
                None
            }
            Err(e) => {
                tracing::error!(subscription = %name, %topic, partition, offset, reason = %batch.reason, dead_letter_topic = %dlq, error = %e, "a batch cannot be decoded nor dead-lettered; delivery of the partition stops there");
                stop(format!(
                    "{}; writing it to the dead-letter topic {dlq:?} failed: {e}",
                    batch.reason
                ))
            }
        }
    }
}

/// Whether a failed dead-letter write may succeed if tried again.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::BrokersUnreachable { .. } => true,
        Error::Broker(e) => e.is_retriable(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;
    use crate::store::SubscriptionRecord;

    fn subscription(max_deliveries: u32) -> Subscription {
        let options = pubsub_proto::v1::SubscriptionOptions {
            max_deliveries,
            ..Default::default()
        };
        let record = SubscriptionRecord {
            options: Options::resolve("t", "s", Some(&options)).unwrap(),
            ..SubscriptionRecord::for_test(3, 1)
        };
        Subscription::new(&record, (0..3).map(|_| Cursor::at(0)).collect())
    }

    #[test]
    fn only_a_dead_letter_policy_dead_letters() {
        assert_eq!(Policy::of(&subscription(5).options), Policy::DeadLetter);
        assert_eq!(Policy::of(&subscription(0).options), Policy::Stop);
    }

    #[test]
    fn a_member_errs_only_when_every_partition_it_reads_is_stopped() {
        let subscription = subscription(0);
        let mut state = subscription.lock().unwrap();
        assert!(all_stopped(&subscription, &state, &[]).is_none());
        state.cursors[2].stop(7, "bad gzip".into());
        assert!(all_stopped(&subscription, &state, &[0, 2]).is_none());
        state.cursors[0].stop(4, "bad".into());
        let error = all_stopped(&subscription, &state, &[2, 0]).unwrap();
        assert!(
            error
                .to_string()
                .contains("\"t\" partition 0: delivery stopped at offset 4"),
            "{error}"
        );
    }

    #[test]
    fn a_raw_dead_letter_carries_the_batch_and_where_it_came_from() {
        let batch = Undecodable {
            offset: 3,
            next_offset: Some(6),
            batch: Bytes::from_static(b"raw"),
            reason: "invalid gzip header".into(),
        };
        let letter = raw_dead_letter("t", 1, &batch);
        assert_eq!(letter.value.as_deref(), Some(&b"raw"[..]));
        let header = |key: &str| {
            letter
                .headers
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("pubsub-dlq-offset").as_deref(), Some(&b"3"[..]));
        assert_eq!(header("pubsub-dlq-partition").as_deref(), Some(&b"1"[..]));
        assert_eq!(header("pubsub-dlq-next-offset").as_deref(), Some(&b"6"[..]));
        assert!(header(RAW_BATCH_HEADER).is_some());
    }
}
