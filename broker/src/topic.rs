//! A topic's settings: resolved from a CreateTopic request and the broker's defaults,
//! validated once, stored in metadata, and turned into each partition's log config.

use std::time::Duration;

use pubsub_proto::v1;
use pubsub_storage::{FsyncPolicy, LogConfig, RetentionPolicy};
use serde::{Deserialize, Serialize};

use crate::config::TopicDefaults;
use crate::error::{Error, Result};

/// Effective settings of a topic, every value filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Retention by age in ms; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Retention by partition size; `None` is unlimited.
    pub retention_bytes: Option<u64>,
    /// Segment size in bytes.
    pub segment_bytes: u64,
    /// Segment age before a roll, ms.
    pub segment_ms: u64,
    /// Largest batch in bytes.
    pub max_message_bytes: u32,
    /// Fsync policy as text (`always`, `never`, `interval:<ms>`).
    pub fsync: String,
    /// acks=all needs at least this many in-sync replicas; `None`: 2 when the
    /// replication factor is 3 or more, else 1 (resolved by [`Self::min_insync`]).
    pub min_insync_replicas: Option<u32>,
    /// Keep segments until every subscription consumed them (the consumer manager
    /// deletes them then), at most `retention_ms`.
    #[serde(default)]
    pub retain_until_consumed: bool,
}

/// A topic as metadata stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRecord {
    /// Validated name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Effective settings.
    pub settings: TopicSettings,
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Reads an optional "-1 means unlimited" field.
fn limit(value: Option<i64>, default: Option<u64>, field: &str) -> Result<Option<u64>> {
    match value {
        None => Ok(default),
        Some(-1) => Ok(None),
        Some(v) if v > 0 => Ok(Some(v as u64)),
        Some(v) => Err(invalid(format!(
            "{field} must be positive or -1 (unlimited), got {v}"
        ))),
    }
}

fn positive(value: Option<i64>, default: u64, field: &str) -> Result<u64> {
    match value {
        None => Ok(default),
        Some(v) if v > 0 => Ok(v as u64),
        Some(v) => Err(invalid(format!("{field} must be positive, got {v}"))),
    }
}

impl TopicSettings {
    /// Resolves a request's config against the defaults and validates the result.
    pub fn resolve(config: Option<&v1::TopicConfig>, defaults: &TopicDefaults) -> Result<Self> {
        let empty = v1::TopicConfig::default();
        let config = config.unwrap_or(&empty);
        let default_retention = defaults.retention.map(|d| d.as_millis() as u64);
        let fsync = match &config.fsync {
            Some(text) => text.parse::<FsyncPolicy>().map_err(invalid)?,
            None => defaults.fsync,
        };
        let max_message_bytes = match config.max_message_bytes {
            None => defaults.max_message_bytes as u32,
            Some(v) if v > 0 => v as u32,
            Some(v) => {
                return Err(invalid(format!(
                    "max_message_bytes must be positive, got {v}"
                )));
            }
        };
        let settings = TopicSettings {
            retention_ms: limit(config.retention_ms, default_retention, "retention_ms")?,
            retention_bytes: limit(
                config.retention_bytes,
                defaults.retention_bytes,
                "retention_bytes",
            )?,
            segment_bytes: positive(
                config.segment_bytes,
                defaults.segment_bytes,
                "segment_bytes",
            )?,
            segment_ms: positive(
                config.segment_ms,
                defaults.segment_age.as_millis() as u64,
                "segment_ms",
            )?,
            max_message_bytes,
            fsync: fsync.to_string(),
            min_insync_replicas: match config.min_insync_replicas {
                None => None,
                Some(n) if n > 0 => Some(n as u32),
                Some(n) => {
                    return Err(invalid(format!(
                        "min_insync_replicas must be positive, got {n}"
                    )));
                }
            },
            retain_until_consumed: config.retain_until_consumed.unwrap_or(false),
        };
        settings.log_config()?;
        Ok(settings)
    }

    /// The storage configuration of each partition of the topic.
    pub fn log_config(&self) -> Result<LogConfig> {
        let fsync = self.fsync.parse::<FsyncPolicy>().map_err(invalid)?;
        let config = LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(self.segment_ms),
            max_batch_bytes: self.max_message_bytes as usize,
            fsync,
            ..LogConfig::default()
        };
        config.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    /// In-sync replicas an acks=all produce needs, for `replication_factor` replicas.
    pub fn min_insync(&self, replication_factor: u32) -> u32 {
        self.min_insync_replicas
            .unwrap_or(if replication_factor >= 3 { 2 } else { 1 })
            .min(replication_factor.max(1))
    }

    /// The topic's retention policy.
    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            retention: self.retention_ms.map(Duration::from_millis),
            retention_bytes: self.retention_bytes,
        }
    }

    /// The settings as the wire shows them (-1 for unlimited).
    pub fn to_proto(&self) -> v1::TopicConfig {
        let unlimited = |v: Option<u64>| Some(v.map_or(-1, |v| v as i64));
        v1::TopicConfig {
            retention_ms: unlimited(self.retention_ms),
            retention_bytes: unlimited(self.retention_bytes),
            segment_bytes: Some(self.segment_bytes as i64),
            max_message_bytes: Some(self.max_message_bytes as i32),
            fsync: Some(self.fsync.clone()),
            min_insync_replicas: self.min_insync_replicas.map(|n| n as i32),
            segment_ms: Some(self.segment_ms as i64),
            retain_until_consumed: Some(self.retain_until_consumed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_defaults_and_minus_one_is_unlimited() {
        let defaults = TopicDefaults::default();
        let settings = TopicSettings::resolve(None, &defaults).unwrap();
        assert_eq!(settings.retention_ms, Some(7 * 24 * 3600 * 1000));
        assert_eq!(settings.fsync, "always");
        let config = v1::TopicConfig {
            retention_ms: Some(-1),
            fsync: Some("never".into()),
            ..Default::default()
        };
        let settings = TopicSettings::resolve(Some(&config), &defaults).unwrap();
        assert_eq!(settings.retention_ms, None);
        assert_eq!(settings.to_proto().retention_ms, Some(-1));
    }

    #[test]
    fn bad_values_are_invalid_arguments_naming_the_field() {
        let defaults = TopicDefaults::default();
        for config in [
            v1::TopicConfig {
                retention_ms: Some(0),
                ..Default::default()
            },
            v1::TopicConfig {
                segment_bytes: Some(10),
                ..Default::default()
            },
            v1::TopicConfig {
                fsync: Some("sometimes".into()),
                ..Default::default()
            },
            v1::TopicConfig {
                max_message_bytes: Some(-5),
                ..Default::default()
            },
        ] {
            let err = TopicSettings::resolve(Some(&config), &defaults).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
    }
}
