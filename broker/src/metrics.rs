//! The broker's Prometheus series, named in one place. `pubsubd` installs the
//! exporter; without one (tests, embedding) every call here is a no-op.
//!
//! Counted per request or per batch, never per record, and labelled by topic (and
//! partition for the log gauges), so the hot paths pay one map lookup per request.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use metrics::{Counter, Histogram};

use crate::broker::Broker;

/// Says what each series means (Prometheus `# HELP`), and starts the event counters
/// at zero so dashboards and alerts find them before the first event.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "pubsub_produced_records_total",
        "Records appended by producers on this leader, per topic"
    );
    describe_counter!(
        "pubsub_produced_bytes_total",
        Unit::Bytes,
        "Batch bytes appended by producers on this leader, per topic"
    );
    describe_counter!(
        "pubsub_fetched_records_total",
        "Records returned to consumers' fetches, per topic"
    );
    describe_counter!(
        "pubsub_fetched_bytes_total",
        Unit::Bytes,
        "Batch bytes returned to consumers' fetches, per topic"
    );
    describe_histogram!(
        "pubsub_request_duration_seconds",
        Unit::Seconds,
        "Produce (until acknowledged) and fetch (long poll included) time, per RPC"
    );
    describe_counter!(
        "pubsub_isr_shrinks_total",
        "In-sync replica sets this leader shrank"
    );
    describe_counter!(
        "pubsub_isr_expands_total",
        "In-sync replica sets this leader expanded"
    );
    describe_counter!(
        "pubsub_replica_move_bytes_total",
        Unit::Bytes,
        "Bytes copied into replicas a move is adding to this broker"
    );
    describe_gauge!(
        "pubsub_log_size_bytes",
        Unit::Bytes,
        "Size of a hosted partition's log"
    );
    describe_gauge!(
        "pubsub_log_segments",
        "Segments of a hosted partition's log"
    );
    describe_gauge!(
        "pubsub_broker_under_replicated_partitions",
        "Partitions this broker leads with fewer in-sync replicas than replicas"
    );
    describe_histogram!(
        "pubsub_fsync_duration_seconds",
        Unit::Seconds,
        "Time of one fsync of a partition's active segment"
    );
    metrics::counter!("pubsub_isr_shrinks_total").absolute(0);
    metrics::counter!("pubsub_isr_expands_total").absolute(0);
    metrics::counter!("pubsub_replica_move_bytes_total").absolute(0);
}

/// A topic's produce and fetch counters, looked up once (when a partition is hosted)
/// so a request pays only atomic adds.
pub(crate) struct TopicCounters {
    produced_records: Counter,
    produced_bytes: Counter,
    fetched_records: Counter,
    fetched_bytes: Counter,
}

impl TopicCounters {
    /// The counters of `topic`.
    pub(crate) fn new(topic: &str) -> TopicCounters {
        let topic = topic.to_string();
        TopicCounters {
            produced_records: metrics::counter!("pubsub_produced_records_total", "topic" => topic.clone()),
            produced_bytes: metrics::counter!("pubsub_produced_bytes_total", "topic" => topic.clone()),
            fetched_records: metrics::counter!("pubsub_fetched_records_total", "topic" => topic.clone()),
            fetched_bytes: metrics::counter!("pubsub_fetched_bytes_total", "topic" => topic),
        }
    }

    /// Records and bytes a producer appended on this leader.
    pub(crate) fn produced(&self, records: u64, bytes: u64) {
        self.produced_records.increment(records);
        self.produced_bytes.increment(bytes);
    }

    /// Records and bytes a consumer's fetch returned (replica fetches not counted).
    pub(crate) fn fetched(&self, fetched: &[u8]) {
        let records: u64 = pubsub_storage::batch::batches(fetched)
            .filter_map(|b| b.ok())
            .map(|(header, _)| u64::from(header.record_count))
            .sum();
        self.fetched_records.increment(records);
        self.fetched_bytes.increment(fetched.len() as u64);
    }
}

/// Which request a latency is of.
#[derive(Clone, Copy)]
pub(crate) enum Rpc {
    Produce,
    Fetch,
}

static PRODUCE_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!("pubsub_request_duration_seconds", "rpc" => "produce"));
static FETCH_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!("pubsub_request_duration_seconds", "rpc" => "fetch"));

/// How long a produce (until acknowledged) or a fetch (long poll included) took.
pub(crate) fn request_done(rpc: Rpc, started: Instant) {
    let histogram = match rpc {
        Rpc::Produce => &PRODUCE_SECONDS,
        Rpc::Fetch => &FETCH_SECONDS,
    };
    histogram.record(started.elapsed().as_secs_f64());
}

/// The in-sync replicas of a partition this broker leads changed.
pub(crate) fn isr_changed(topic: &str, from: usize, to: usize) {
    let name = if to < from {
        "pubsub_isr_shrinks_total"
    } else {
        "pubsub_isr_expands_total"
    };
    metrics::counter!(name, "topic" => topic.to_string()).increment(1);
}

/// Bytes this broker copied into replicas a move is adding here (throttled or not).
pub(crate) fn move_copied(bytes: usize) {
    metrics::counter!("pubsub_replica_move_bytes_total").increment(bytes as u64);
}

/// Size and segment count of every hosted partition's log, and how many partitions
/// this broker leads that are under-replicated; set now and then.
pub(crate) fn log_gauges(broker: &Arc<Broker>) {
    let me = broker.config().broker_id.0;
    let mut under_replicated = 0u64;
    for topic in broker.all_topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let Some(partition) = partition else { continue };
            let labels = [
                ("topic", topic.record.name.clone()),
                ("partition", index.to_string()),
            ];
            let log = partition.log();
            metrics::gauge!("pubsub_log_size_bytes", &labels).set(log.size_bytes() as f64);
            metrics::gauge!("pubsub_log_segments", &labels).set(log.segment_count() as f64);
            let role = partition.role();
            if role.leader == Some(me) && role.in_sync_replicas.len() < role.replicas.len() {
                under_replicated += 1;
            }
        }
    }
    metrics::gauge!("pubsub_broker_under_replicated_partitions").set(under_replicated as f64);
}
