//! The books of durability tests: the acknowledged records (partition, offset, value),
//! a read-back of the whole topic, and the count of acknowledged records lost, records
//! stored twice and records out of order.
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

/// What a read-back shows of the acknowledged records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records acknowledged.
    pub acked: usize,
    /// Acknowledged records not at their offset.
    pub lost: usize,
    /// Values stored more than once.
    pub duplicated: usize,
    /// Values stored after a later one of the same key.
    pub reordered: usize,
}

impl Tally {
    /// Compares `stored` (from [`read_back`]) with `acked`; names the first few lost.
    pub fn check(acked: &[Ack], stored: &HashMap<PartitionId, Vec<(u64, String)>>) -> Tally {
        let mut tally = Tally {
            acked: acked.len(),
            ..Tally::default()
        };
        let by_offset: HashMap<(PartitionId, u64), &String> = stored
            .iter()
            .flat_map(|(p, records)| records.iter().map(move |(o, v)| ((*p, *o), v)))
            .collect();
        for (partition, offset, value) in acked {
            if by_offset.get(&(*partition, *offset)) != Some(&value) {
                if tally.lost < 5 {
                    eprintln!("lost {value} at {partition}-{offset}");
                }
                tally.lost += 1;
            }
        }
        for records in stored.values() {
            let mut seen = HashSet::new();
            let mut last: HashMap<&str, &str> = HashMap::new();
            for (_, value) in records {
                if !seen.insert(value) {
                    tally.duplicated += 1;
                    continue;
                }
                let key = value.rsplit_once('-').map_or("", |(key, _)| key);
                if last.insert(key, value).is_some_and(|l| l > value.as_str()) {
                    tally.reordered += 1;
                }
            }
        }
        tally
    }

    /// Fails on any loss, duplicate or reordering.
    pub fn assert_intact(&self) {
        assert_eq!(self.lost, 0, "acknowledged records were lost");
        assert_eq!(
            self.duplicated, 0,
            "the idempotent producer stored a record twice"
        );
        assert_eq!(self.reordered, 0, "records were reordered");
    }

    /// Nothing lost, stored twice or reordered.
    pub fn intact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked {}, lost {}, duplicated {}, reordered {}",
            self.acked, self.lost, self.duplicated, self.reordered
        )
    }
}
