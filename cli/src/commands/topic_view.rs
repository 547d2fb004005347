//! How topics look on stdout: JSON views of the wire messages for scripts, and aligned
//! tables for people.
//!
//! The JSON field names are the proto field names, so a script written against
//! `--output json` reads the same words as the API documentation.

use pubsub_client::TopicConfig;
use pubsub_proto::ConfigKey;
use pubsub_proto::v1::{DescribeTopicResponse, TopicDescription, TopicSummary};
use serde::Serialize;

use super::output::Table;
use pubsub_proto::units::{format_ms, format_size};

/// A topic in `list`.
#[derive(Serialize)]
pub struct SummaryView<'a> {
    name: &'a str,
    partitions: u32,
    replication_factor: u32,
}

/// A topic with its settings and partitions, for `create` and `describe`.
#[derive(Serialize)]
pub struct TopicView<'a> {
    name: &'a str,
    replication_factor: u32,
    config: ConfigView<'a>,
    /// Keys of `config` that hold the default rather than a value someone set.
    default_keys: &'a [String],
    partitions: Vec<PartitionView<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    brokers: Vec<BrokerView<'a>>,
}

/// A topic's effective settings; `null` where the server sent none.
#[derive(Serialize)]
struct ConfigView<'a> {
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    segment_bytes: Option<i64>,
    segment_ms: Option<i64>,
    max_message_bytes: Option<i32>,
    fsync: Option<&'a str>,
    min_insync_replicas: Option<i32>,
    retain_until_consumed: Option<bool>,
}

#[derive(Serialize)]
struct PartitionView<'a> {
    partition: u32,
    leader: Option<u32>,
    leader_epoch: i32,
    replicas: &'a [u32],
    in_sync_replicas: &'a [u32],
    log_start_offset: Option<u64>,
    high_watermark: Option<u64>,
    log_end_offset: Option<u64>,
}

#[derive(Serialize)]
struct BrokerView<'a> {
    id: u32,
    address: &'a str,
}

/// JSON views of `list`'s topics.
pub fn summaries(topics: &[TopicSummary]) -> Vec<SummaryView<'_>> {
    topics
        .iter()
        .map(|t| SummaryView {
            name: &t.name,
            partitions: t.partitions,
            replication_factor: t.replication_factor,
        })
        .collect()
}

/// `list` as a table.
pub fn summaries_table(topics: &[TopicSummary]) -> String {
    let mut table = Table::new(&["NAME", "PARTITIONS", "REPLICATION FACTOR"]);
    for topic in topics {
        table.row(vec![
            topic.name.clone(),
            topic.partitions.to_string(),
            topic.replication_factor.to_string(),
        ]);
    }
    table.render()
}

/// The JSON view of a topic and, from `describe`, the brokers hosting it.
pub fn topic<'a>(
    topic: &'a TopicDescription,
    described: Option<&'a DescribeTopicResponse>,
) -> TopicView<'a> {
    let empty = TopicConfig::default();
    let config = topic.config.as_ref().unwrap_or(&empty);
    TopicView {
        name: &topic.name,
        replication_factor: topic.replication_factor,
        config: ConfigView {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            max_message_bytes: config.max_message_bytes,
            fsync: topic.config.as_ref().and_then(|c| c.fsync.as_deref()),
            min_insync_replicas: config.min_insync_replicas,
            retain_until_consumed: config.retain_until_consumed,
        },
        default_keys: &topic.default_keys,
        partitions: topic
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: &p.replicas,
                in_sync_replicas: &p.in_sync_replicas,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                log_end_offset: p.log_end_offset,
            })
            .collect(),
        brokers: described
            .map(|d| {
                d.brokers
                    .iter()
                    .map(|b| BrokerView {
                        id: b.id,
                        address: &b.address,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `describe` as text: a heading, the partition table and the settings table.
pub fn topic_text(described: &DescribeTopicResponse, topic: &TopicDescription) -> String {
    let mut heading = Table::new(&["topic", &topic.name]);
    heading.row(vec![
        "partitions".into(),
        topic.partitions.len().to_string(),
    ]);
    heading.row(vec![
        "replication factor".into(),
        topic.replication_factor.to_string(),
    ]);
    for broker in &described.brokers {
        heading.row(vec![
            format!("broker {}", broker.id),
            broker.address.clone(),
        ]);
    }
    let mut partitions = Table::new(&[
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LOG START OFFSET",
        "HIGH WATERMARK",
        "LOG END OFFSET",
    ]);
    for p in &topic.partitions {
        partitions.row(vec![
            p.partition.to_string(),
            or_dash(p.leader),
            id_list(&p.replicas),
            id_list(&p.in_sync_replicas),
            or_dash(p.log_start_offset),
            or_dash(p.high_watermark),
            or_dash(p.log_end_offset),
        ]);
    }
    let mut text = heading.render();
    text.push('\n');
    text.push_str(&partitions.render());
    text.push('\n');
    text.push_str(&config_table(topic.config.as_ref(), &topic.default_keys));
    text
}

/// The settings as a table: key, raw value as `--config` takes it, whether it is the
/// default or was set (at create or by `alter`), and a reading.
fn config_table(config: Option<&TopicConfig>, default_keys: &[String]) -> String {
    let empty = TopicConfig::default();
    let config = config.unwrap_or(&empty);
    let mut table = Table::new(&["CONFIG", "VALUE", "SOURCE", ""]);
    let mut row = |key: ConfigKey, raw: Option<String>, reading: String| {
        let source = if default_keys.iter().any(|k| k == key.name()) {
            "default"
        } else {
            "set"
        };
        let (raw, source, reading) = match raw {
            Some(raw) => (raw, source, reading),
            None => ("-".to_string(), "default", "server default".to_string()),
        };
        table.row(vec![
            key.name().to_string(),
            raw,
            source.to_string(),
            reading,
        ]);
    };
    let number = |value: Option<i64>, human: fn(i64) -> String| {
        (
            value.map(|v| v.to_string()),
            value.map(human).unwrap_or_default(),
        )
    };
    for key in ConfigKey::ALL {
        let (raw, reading) = match key {
            ConfigKey::RetentionMs => number(config.retention_ms, format_ms),
            ConfigKey::RetentionBytes => number(config.retention_bytes, format_size),
            ConfigKey::SegmentBytes => number(config.segment_bytes, format_size),
            ConfigKey::SegmentMs => number(config.segment_ms, format_ms),
            ConfigKey::MaxMessageBytes => {
                number(config.max_message_bytes.map(i64::from), format_size)
            }
            ConfigKey::Fsync => (config.fsync.clone(), String::new()),
            ConfigKey::MinInsyncReplicas => (
                config.min_insync_replicas.map(|n| n.to_string()),
                String::new(),
            ),
            ConfigKey::RetainUntilConsumed => {
                let until_consumed = config.retain_until_consumed.unwrap_or(false);
                let reading = if until_consumed {
                    "kept until every subscription consumed it, at most retention_ms"
                } else {
                    ""
                };
                (Some(until_consumed.to_string()), reading.to_string())
            }
        };
        row(key, raw, reading);
    }
    table.render()
}

/// Broker ids as `1,2,3`.
fn id_list(ids: &[u32]) -> String {
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    ids.join(",")
}

/// A value, or "-" where the answering broker did not know it.
fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}
