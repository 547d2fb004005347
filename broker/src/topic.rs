//! A topic as this broker hosts it: its settings come resolved in the cluster metadata
//! (`pubsub_proto::topic_config` holds the keys, defaults and rules), and become each
//! partition's log config and the topic's retention policy here.

use std::time::Duration;

use pubsub_proto::v1;
use pubsub_storage::{FsyncPolicy, LogConfig, RetentionPolicy};

use crate::error::{Error, Result};

/// A topic's metadata, settings complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicRecord {
    /// Validated name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Every key set: as the cluster manager resolved them (metadata written before it
    /// resolved settings leaves keys unset; they take the defaults).
    pub settings: v1::TopicConfig,
}

/// Reads a "-1 means unlimited" value.
fn limit(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

impl TopicRecord {
    /// The record of a topic in the cluster metadata.
    pub(crate) fn from_metadata(topic: &v1::TopicMetadata) -> Self {
        let requested = topic.config.clone().unwrap_or_default();
        TopicRecord {
            name: topic.name.clone(),
            partitions: topic.partitions.len() as u32,
            replication_factor: topic.replication_factor,
            settings: requested.with_defaults(topic.replication_factor),
        }
    }

    /// The storage configuration of each partition of the topic.
    pub(crate) fn log_config(&self) -> Result<LogConfig> {
        log_config(&self.settings)
    }

    /// The topic's retention policy.
    pub(crate) fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            retention: limit(self.settings.retention_ms).map(Duration::from_millis),
            retention_bytes: limit(self.settings.retention_bytes),
        }
    }
}

/// The log config for a complete topic config; `InvalidArgument` if storage refuses it.
pub(crate) fn log_config(settings: &v1::TopicConfig) -> Result<LogConfig> {
    let invalid = |message: String| Error::InvalidArgument(message);
    let missing = |key: &str| invalid(format!("topic setting {key} is not resolved"));
    let fsync = settings
        .fsync
        .as_deref()
        .ok_or_else(|| missing("fsync"))?
        .parse::<FsyncPolicy>()
        .map_err(invalid)?;
    let positive = |value: Option<i64>, key: &str| {
        value
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| missing(key))
    };
    let max_batch_bytes = settings
        .max_message_bytes
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| missing("max_message_bytes"))?;
    let config = LogConfig {
        segment_bytes: positive(settings.segment_bytes, "segment_bytes")?,
        segment_age: Duration::from_millis(positive(settings.segment_ms, "segment_ms")?),
        max_batch_bytes,
        fsync,
        ..LogConfig::default()
    };
    config.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use pubsub_proto::topic_config::{MAX_MESSAGE_BYTES_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

    use super::*;

    #[test]
    fn the_bounds_restated_in_proto_are_storage_s() {
        assert_eq!(SEGMENT_BYTES_MAX as u64, pubsub_storage::SEGMENT_BYTES_MAX);
        assert_eq!(
            MAX_MESSAGE_BYTES_MIN as usize,
            pubsub_storage::batch::HEADER_BYTES
        );
        let at = |segment_bytes: i64, max_message_bytes: i32| v1::TopicConfig {
            segment_bytes: Some(segment_bytes),
            max_message_bytes: Some(max_message_bytes),
            ..v1::TopicConfig::defaults(1)
        };
        assert!(log_config(&at(SEGMENT_BYTES_MIN, MAX_MESSAGE_BYTES_MIN)).is_ok());
        assert!(log_config(&at(SEGMENT_BYTES_MIN - 1, MAX_MESSAGE_BYTES_MIN)).is_err());
        assert!(log_config(&at(SEGMENT_BYTES_MAX + 1, 1 << 20)).is_err());
        assert!(log_config(&at(SEGMENT_BYTES_MIN, MAX_MESSAGE_BYTES_MIN - 1)).is_err());
    }

    #[test]
    fn unlimited_retention_is_none() {
        let mut record = TopicRecord::from_metadata(&v1::TopicMetadata {
            name: "t".into(),
            replication_factor: 1,
            ..Default::default()
        });
        assert_eq!(
            record.retention().retention,
            Some(Duration::from_millis(7 * 24 * 3600 * 1000))
        );
        record.settings.retention_ms = Some(-1);
        assert_eq!(record.retention().retention, None);
    }

    proptest! {
        /// Every config the cluster manager accepts, any broker can host.
        #[test]
        fn every_valid_topic_config_yields_a_valid_log_config(
            segment_bytes in prop_oneof![SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX, 0i64..8192],
            max_message_bytes in prop_oneof![MAX_MESSAGE_BYTES_MIN..=(1 << 24), 0i32..128],
            segment_ms in prop_oneof![1i64..=i64::MAX, -2i64..=0],
            fsync_ms in 0u64..10_000,
            replication_factor in 1u32..6,
        ) {
            let requested = v1::TopicConfig {
                segment_bytes: Some(segment_bytes),
                max_message_bytes: Some(max_message_bytes),
                segment_ms: Some(segment_ms),
                fsync: Some(format!("interval:{fsync_ms}")),
                ..Default::default()
            };
            if let Ok((resolved, _)) = requested.resolve(replication_factor) {
                prop_assert!(log_config(&resolved).is_ok(), "{resolved:?}");
            }
        }
    }
}
