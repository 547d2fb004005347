//! The books of durability tests: the acknowledged records (partition, offset, value),
//! a read-back of the whole topic, and what `pubsub_tests::checker` finds in them
//! (acknowledged records lost, stored twice, out of order, offsets that do not grow).
//!
//! Values are `<key>-<number>` with the number zero-padded: records of one key (one
//! writer on one partition, say `p3-w1`) must be stored in the order they were sent.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use pubsub_client::{
    Client, Consumer, ConsumerConfig, Delivery, PartitionId, Producer, ProducerRecord,
    StartPosition,
};
use pubsub_tests::checker::{Anomalies, Outcome, Read, Send, check};

/// An acknowledged record: partition, offset, value.
pub type Ack = (PartitionId, u64, String);

/// Sends `value` to `partition`; returns the delivery to wait for.
pub async fn send(producer: &Producer, partition: u32, value: String) -> Delivery {
    let record = ProducerRecord {
        partition: Some(PartitionId(partition)),
        ..ProducerRecord::value(value)
    };
    producer.send(record).await.unwrap()
}

/// Every record of `topic`, by partition as (offset, value): read from the earliest
/// offset until five polls in a row bring nothing and the consumer has no lag.
pub async fn read_back(client: &Client, topic: &str) -> HashMap<PartitionId, Vec<(u64, String)>> {
    let mut consumer = Consumer::new(client.clone(), topic, ConsumerConfig::default());
    consumer.assign_all(StartPosition::Earliest).await.unwrap();
    let mut stored: HashMap<PartitionId, Vec<(u64, String)>> = HashMap::new();
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet < 5 && Instant::now() < deadline {
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        if records.is_empty() && consumer.lag() == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        for r in records {
            stored.entry(r.partition).or_default().push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    stored
}

/// What a read-back shows of the acknowledged records: the checker's anomaly classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally(Anomalies);

impl Tally {
    /// Compares `stored` (from [`read_back`]) with `acked`; names the first few lost.
    pub fn check(acked: &[Ack], stored: &HashMap<PartitionId, Vec<(u64, String)>>) -> Tally {
        Tally::check_with_refused(acked, &[], stored)
    }

    /// [`Tally::check`], where the values of `refused` were refused for sure and must
    /// never be read (aborted reads).
    pub fn check_with_refused(
        acked: &[Ack],
        refused: &[String],
        stored: &HashMap<PartitionId, Vec<(u64, String)>>,
    ) -> Tally {
        let acked_sends = acked.iter().map(|(partition, offset, value)| Send {
            partition: partition.0,
            value: value.clone(),
            outcome: Outcome::Acked(*offset),
        });
        let refused_sends = refused.iter().map(|value| Send {
            partition: 0,
            value: value.clone(),
            outcome: Outcome::Failed,
        });
        let sends: Vec<Send> = acked_sends.chain(refused_sends).collect();
        let reads: Vec<Read> = stored
            .iter()
            .flat_map(|(partition, records)| {
                records.iter().map(|(offset, value)| Read {
                    partition: partition.0,
                    offset: *offset,
                    value: value.clone(),
                })
            })
            .collect();
        let found = check(&sends, &[reads]);
        if found.lost > 0 {
            let stored: HashSet<(PartitionId, u64, &String)> = stored
                .iter()
                .flat_map(|(p, records)| records.iter().map(move |(o, v)| (*p, *o, v)))
                .collect();
            let lost = acked
                .iter()
                .filter(|(p, o, v)| !stored.contains(&(*p, *o, v)));
            for (partition, offset, value) in lost.take(5) {
                eprintln!("lost {value} at {partition}-{offset}");
            }
        }
        Tally(found)
    }

    /// Fails on any anomaly.
    pub fn assert_intact(&self) {
        assert!(self.0.is_clean(), "anomalies: {}", self.0);
    }

    /// No anomaly.
    pub fn intact(&self) -> bool {
        self.0.is_clean()
    }

    /// Acknowledged sends checked.
    pub fn acked(&self) -> usize {
        self.0.acked
    }

    /// No anomaly but lost records: what a policy that trades durability may show.
    pub fn only_lost(&self) -> bool {
        Anomalies { lost: 0, ..self.0 }.is_clean()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
