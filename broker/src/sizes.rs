//! The log sizes a broker reports in its heartbeats, so the cluster manager can even
//! out the bytes brokers hold, not only their replica counts.
//!
//! Only partition leaders report (a follower may lag, and one number per partition
//! keeps the report small), and only when a size is new to this leadership or moved by
//! a tenth (at least [`REPORT_CHANGE_MIN`]) since the last report the cluster manager
//! took: each report is a Raft entry, so a steady stream of appends must not become a
//! steady stream of entries. A partition no longer led is forgotten, so leading it
//! again reports it afresh.

use std::collections::{HashMap, HashSet};

use pubsub_proto::v1;

use crate::broker::Broker;

/// Smallest change in a partition's size worth a report.
const REPORT_CHANGE_MIN: u64 = 1 << 20;
/// Most sizes in one heartbeat (the cluster manager takes up to 4,096): the rest go in
/// the next ones.
const SIZES_PER_HEARTBEAT: usize = 1024;

/// A partition named by topic and index.
type Key = (String, u32);

/// The sizes the cluster manager last accepted from this broker.
#[derive(Default)]
pub(crate) struct SizeReports {
    reported: HashMap<Key, u64>,
}

impl SizeReports {
    /// The sizes to send now, out of the current sizes of the partitions this broker
    /// leads; forgets partitions it no longer leads.
    pub(crate) fn due(&mut self, led: Vec<(Key, u64)>) -> Vec<v1::PartitionSize> {
        let keys: HashSet<&Key> = led.iter().map(|(key, _)| key).collect();
        self.reported.retain(|key, _| keys.contains(key));
        led.iter()
            .filter(|(key, bytes)| notable(self.reported.get(key).copied(), *bytes))
            .take(SIZES_PER_HEARTBEAT)
            .map(|((topic, partition), bytes)| v1::PartitionSize {
                topic: topic.clone(),
                partition: *partition,
                bytes: *bytes,
            })
            .collect()
    }

    /// Records sizes the cluster manager accepted.
    pub(crate) fn sent(&mut self, sizes: Vec<v1::PartitionSize>) {
        for size in sizes {
            self.reported
                .insert((size.topic, size.partition), size.bytes);
        }
    }
}

/// Whether a size differs enough from the last reported one (if any) to report it.
fn notable(last: Option<u64>, now: u64) -> bool {
    last.is_none_or(|last| now.abs_diff(last) >= (last / 10).max(REPORT_CHANGE_MIN))
}

/// The log size of every partition this broker leads.
pub(crate) fn led_sizes(broker: &Broker) -> Vec<(Key, u64)> {
    let mut led = Vec::new();
    for topic in broker.all_topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if let Some(partition) = partition.as_ref().filter(|p| p.is_leader()) {
                let key = (topic.record.name.clone(), index as u32);
                led.push((key, partition.log().size_bytes()));
            }
        }
    }
    led
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(sizes: &[(&str, u64)]) -> Vec<(Key, u64)> {
        sizes
            .iter()
            .map(|&(topic, bytes)| ((topic.to_string(), 0), bytes))
            .collect()
    }

    #[test]
    fn sizes_are_sent_when_new_or_changed_by_a_tenth() {
        let mut reports = SizeReports::default();
        let first = reports.due(led(&[("a", 0), ("b", 100 << 20)]));
        assert_eq!(first.len(), 2, "every newly led partition reports once");
        reports.sent(first);
        assert!(reports.due(led(&[("a", 1), ("b", 105 << 20)])).is_empty());
        let grown = reports.due(led(&[("a", 2 << 20), ("b", 111 << 20)]));
        let names: Vec<&str> = grown.iter().map(|s| s.topic.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_size_not_accepted_is_sent_again() {
        let mut reports = SizeReports::default();
        assert_eq!(reports.due(led(&[("a", 7)])).len(), 1);
        assert_eq!(
            reports.due(led(&[("a", 7)])).len(),
            1,
            "never sent: still due"
        );
    }

    #[test]
    fn leading_again_reports_afresh() {
        let mut reports = SizeReports::default();
        let first = reports.due(led(&[("a", 7)]));
        reports.sent(first);
        assert!(reports.due(led(&[])).is_empty());
        assert_eq!(reports.due(led(&[("a", 7)])).len(), 1);
    }

    #[test]
    fn one_heartbeat_carries_a_bounded_number() {
        let mut reports = SizeReports::default();
        let many: Vec<(Key, u64)> = (0..3000).map(|p| (("t".to_string(), p), 1)).collect();
        let first = reports.due(many.clone());
        assert_eq!(first.len(), SIZES_PER_HEARTBEAT);
        reports.sent(first);
        assert_eq!(reports.due(many).len(), SIZES_PER_HEARTBEAT);
    }
}
