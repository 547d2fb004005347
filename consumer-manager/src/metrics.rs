//! The consumer manager's Prometheus series, labelled by subscription: records
//! delivered, redelivered, acknowledged and dead-lettered (counted per call, not per
//! record), and, set now and then, each subscription's lag and unacknowledged records.

use metrics::Counter;
use pubsub_proto::v1;

/// Says what each series means, and starts the event counters at zero.
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "pubsub_subscription_delivered_records_total",
        "Records delivered to subscribers, redeliveries included"
    );
    describe_counter!(
        "pubsub_subscription_redelivered_records_total",
        "Records delivered again (nacked, or their ack deadline passed)"
    );
    describe_counter!(
        "pubsub_subscription_acked_records_total",
        "Records acknowledged by subscribers"
    );
    describe_counter!(
        "pubsub_subscription_dead_lettered_records_total",
        "Records written to a dead-letter topic"
    );
    describe_gauge!(
        "pubsub_subscription_lag_records",
        "Records of the topic not yet committed by the subscription"
    );
    describe_gauge!(
        "pubsub_subscription_unacked_records",
        "Records delivered and not yet acknowledged"
    );
    describe_gauge!(
        "pubsub_consumer_manager_journal_partitions",
        "Partitions of the subscription journal this consumer manager is granted (with several sharing the subscriptions)"
    );
    for name in [
        "pubsub_subscription_delivered_records_total",
        "pubsub_subscription_redelivered_records_total",
        "pubsub_subscription_acked_records_total",
        "pubsub_subscription_dead_lettered_records_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

/// A subscription's delivery counters, looked up once (when the subscription is
/// loaded) so a delivery or an ack pays only atomic adds.
pub(crate) struct SubscriptionCounters {
    delivered: Counter,
    redelivered: Counter,
    acked: Counter,
    dead_lettered: Counter,
}

impl SubscriptionCounters {
    /// The counters of `subscription`.
    pub(crate) fn new(subscription: &str) -> SubscriptionCounters {
        let label = |name: &'static str| metrics::counter!(name, "subscription" => subscription.to_string());
        SubscriptionCounters {
            delivered: label("pubsub_subscription_delivered_records_total"),
            redelivered: label("pubsub_subscription_redelivered_records_total"),
            acked: label("pubsub_subscription_acked_records_total"),
            dead_lettered: label("pubsub_subscription_dead_lettered_records_total"),
        }
    }

    /// A delivery went out: its records, and those of them delivered before.
    pub(crate) fn delivered(&self, records: &[v1::DeliveredRecord]) {
        let again = records.iter().filter(|r| r.delivery_attempt > 1).count();
        self.delivered_count(records.len(), again);
    }

    /// `records` went out, `again` of them delivered before.
    pub(crate) fn delivered_count(&self, records: usize, again: usize) {
        self.delivered.increment(records as u64);
        self.redelivered.increment(again as u64);
    }

    /// Records were acknowledged.
    pub(crate) fn acked(&self, records: usize) {
        self.acked.increment(records as u64);
    }

    /// Records went to the dead-letter topic.
    pub(crate) fn dead_lettered(&self, records: u64) {
        self.dead_lettered.increment(records);
    }
}

/// A subscription's lag (records not yet committed, summed over partitions whose end
/// is known) and records delivered but not yet acknowledged.
pub(crate) fn positions(info: &v1::SubscriptionInfo) {
    let lag: u64 = info.partitions.iter().filter_map(|p| p.lag).sum();
    let outstanding: u64 = info.partitions.iter().map(|p| p.outstanding).sum();
    let labels = [
        ("subscription", info.name.clone()),
        ("topic", info.topic.clone()),
    ];
    metrics::gauge!("pubsub_subscription_lag_records", &labels).set(lag as f64);
    metrics::gauge!("pubsub_subscription_unacked_records", &labels).set(outstanding as f64);
}
