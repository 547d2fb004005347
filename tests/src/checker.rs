//! A checker over the history of a fault test, reporting the anomaly classes Jepsen's
//! analyses of Kafka-like logs name, so every durability test counts the same things.
//!
//! The history holds every send with its outcome (acknowledged at an offset, failed for
//! sure, or unknown) and every read, in the order each reader saw them. Values are
//! `<key>-<number>`, the number zero-padded and growing with each send of the key, so
//! send order is known from the values alone. Pure: no I/O, no clock.
//! [`subscription`] does the same for a subscriber's deliveries and answered acks.

pub mod subscription;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// How a send ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Acked(u64),
    /// Refused for sure: the record must never be read.
    Failed,
    /// Timed out or cut off: it may or may not have been stored.
    Unknown,
}

/// One send of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    /// The partition it was sent to.
    pub partition: u32,
    /// The value, `<key>-<number>`.
    pub value: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// One record a reader saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The partition it came from.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its value.
    pub value: String,
}

/// The counts of each anomaly class; all zero in a correct run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// Sends acknowledged.
    pub acked: usize,
    /// Acknowledged records no reader saw at their offset (lost, or unseen after heal).
    pub lost: usize,
    /// Values read at two different offsets.
    pub duplicated: usize,
    /// Offsets read with two different values.
    pub inconsistent_offsets: usize,
    /// Acknowledged offsets of one key that do not grow with its send order.
    pub nonmonotonic_sends: usize,
    /// Places where a reader's offsets within a partition did not grow.
    pub nonmonotonic_polls: usize,
    /// Values read whose send failed for sure.
    pub aborted_reads: usize,
    /// Values of one key stored at offsets out of their send order.
    pub reordered: usize,
}

impl Anomalies {
    /// Whether the run shows none.
    pub fn is_clean(&self) -> bool {
        *self
            == Anomalies {
                acked: self.acked,
                ..Anomalies::default()
            }
    }
}

impl fmt::Display for Anomalies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked {}, lost {}, duplicated {}, reordered {}, inconsistent offsets {}, \
             non-monotonic sends {}, non-monotonic polls {}, aborted reads {}",
            self.acked,
            self.lost,
            self.duplicated,
            self.reordered,
            self.inconsistent_offsets,
            self.nonmonotonic_sends,
            self.nonmonotonic_polls,
            self.aborted_reads
        )
    }
}

/// The key and send number of a value `<key>-<number>` (number 0 if there is none).
fn key_and_number(value: &str) -> (&str, u64) {
    match value.rsplit_once('-') {
        Some((key, number)) => (key, number.parse().unwrap_or(0)),
        None => (value, 0),
    }
}

/// Checks `sends` against `readers`, each the records one reader saw, in order.
pub fn check(sends: &[Send], readers: &[Vec<Read>]) -> Anomalies {
    let mut found = Anomalies::default();
    // What was stored where, from every read.
    let mut at_offset: HashMap<(u32, u64), &str> = HashMap::new();
    let mut offsets_of: HashMap<&str, HashSet<(u32, u64)>> = HashMap::new();
    for reader in readers {
        let mut last: HashMap<u32, u64> = HashMap::new();
        for read in reader {
            if last
                .insert(read.partition, read.offset)
                .is_some_and(|previous| previous >= read.offset)
            {
                found.nonmonotonic_polls += 1;
            }
            match at_offset.insert((read.partition, read.offset), &read.value) {
                Some(seen) if seen != read.value => found.inconsistent_offsets += 1,
                _ => {}
            }
            offsets_of
                .entry(&read.value)
                .or_default()
                .insert((read.partition, read.offset));
        }
    }
    found.duplicated = offsets_of.values().filter(|o| o.len() > 1).count();
    // Stored order of each key: its values by (partition, offset).
    let mut stored: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    for (&place, &value) in &at_offset {
        stored.insert(place, value);
    }
    let mut last_number: HashMap<(u32, &str), u64> = HashMap::new();
    for (&(partition, _), value) in &stored {
        let (key, number) = key_and_number(value);
        if last_number
            .insert((partition, key), number)
            .is_some_and(|previous| previous > number)
        {
            found.reordered += 1;
        }
    }
    check_sends(sends, &at_offset, &offsets_of, &mut found);
    found
}

/// The classes judged from the sends: lost, aborted reads, non-monotonic sends.
fn check_sends(
    sends: &[Send],
    at_offset: &HashMap<(u32, u64), &str>,
    offsets_of: &HashMap<&str, HashSet<(u32, u64)>>,
    found: &mut Anomalies,
) {
    let mut acked_by_key: BTreeMap<(u32, &str), BTreeMap<u64, u64>> = BTreeMap::new();
    for send in sends {
        match send.outcome {
            Outcome::Acked(offset) => {
                found.acked += 1;
                if at_offset.get(&(send.partition, offset)) != Some(&send.value.as_str()) {
                    found.lost += 1;
                }
                let (key, number) = key_and_number(&send.value);
                acked_by_key
                    .entry((send.partition, key))
                    .or_default()
                    .insert(number, offset);
            }
            Outcome::Failed if offsets_of.contains_key(send.value.as_str()) => {
                found.aborted_reads += 1;
            }
            Outcome::Failed | Outcome::Unknown => {}
        }
    }
    for by_number in acked_by_key.values() {
        let offsets: Vec<u64> = by_number.values().copied().collect();
        found.nonmonotonic_sends += offsets.windows(2).filter(|w| w[0] >= w[1]).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(partition: u32, value: &str, offset: u64) -> Send {
        Send {
            partition,
            value: value.into(),
            outcome: Outcome::Acked(offset),
        }
    }

    fn read(partition: u32, offset: u64, value: &str) -> Read {
        Read {
            partition,
            offset,
            value: value.into(),
        }
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let sends = [acked(0, "k-1", 0), acked(0, "k-2", 1), acked(1, "j-1", 0)];
        let reads = vec![vec![
            read(0, 0, "k-1"),
            read(1, 0, "j-1"),
            read(0, 1, "k-2"),
        ]];
        let found = check(&sends, &reads);
        assert!(found.is_clean(), "{found}");
        assert_eq!(found.acked, 3);
    }

    #[test]
    fn each_anomaly_class_is_counted() {
        let sends = [
            acked(0, "k-1", 0),
            acked(0, "k-2", 1),
            acked(0, "k-3", 1),
            acked(0, "k-4", 9),
            Send {
                partition: 0,
                value: "k-5".into(),
                outcome: Outcome::Failed,
            },
        ];
        let reads = vec![
            vec![
                read(0, 1, "k-2"),
                read(0, 0, "k-1"),
                read(0, 2, "k-5"),
                read(0, 3, "k-2"),
            ],
            vec![read(0, 1, "k-3")],
        ];
        let found = check(&sends, &reads);
        assert_eq!(found.nonmonotonic_polls, 1, "offset 0 after 1");
        assert_eq!(
            found.inconsistent_offsets, 1,
            "offset 1 read as k-2 and k-3"
        );
        assert_eq!(found.duplicated, 1, "k-2 at offsets 1 and 3");
        assert_eq!(found.aborted_reads, 1, "k-5 failed but was read");
        assert_eq!(found.nonmonotonic_sends, 1, "k-2 and k-3 both acked at 1");
        assert_eq!(
            found.lost, 2,
            "k-4 never read, and one of k-2/k-3 at offset 1"
        );
        assert_eq!(found.reordered, 1, "k-2 stored after k-5");
        assert!(!found.is_clean());
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_be_read() {
        let unknown = |value: &str| Send {
            partition: 0,
            value: value.into(),
            outcome: Outcome::Unknown,
        };
        let sends = [unknown("k-1"), unknown("k-2")];
        let found = check(&sends, &[vec![read(0, 0, "k-1")]]);
        assert!(found.is_clean(), "{found}");
    }
}
