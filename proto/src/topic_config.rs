//! A topic's settings ([`v1::TopicConfig`]): the one set of key names, the defaults,
//! and the one set of rules, shared by the CLI, the brokers and the cluster manager.
//!
//! A request leaves keys unset to take the defaults. The cluster manager resolves a
//! config once, at create ([`v1::TopicConfig::resolve`]), and stores every value, so
//! every replica of a partition runs with the same settings whatever the broker. The
//! bounds are those a broker's storage enforces (`pubsub_storage::LogConfig::validate`),
//! restated here because this crate does not depend on storage; a broker test checks
//! that the two agree. A config within them can be hosted by any broker.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::v1;

/// Smallest segment: a segment must hold a batch header and its index entries.
pub const SEGMENT_BYTES_MIN: i64 = 4096;
/// Largest segment: positions in the offset index are 32-bit.
pub const SEGMENT_BYTES_MAX: i64 = 2 << 30;
/// Smallest batch limit: a record batch header is 61 bytes.
pub const MAX_MESSAGE_BYTES_MIN: i32 = 61;
/// `retention_ms` and `retention_bytes` value meaning "no limit".
pub const UNLIMITED: i64 = -1;
/// Longest fsync policy text (`interval:<ms>`): bounds what Raft stores.
pub const FSYNC_BYTES_MAX: usize = 64;

/// Default `retention_ms`: 7 days, as Kafka.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;
/// Default `retention_bytes`: unlimited.
pub const RETENTION_BYTES_DEFAULT: i64 = UNLIMITED;
/// Default `segment_bytes`: 1 GiB, few files per partition.
pub const SEGMENT_BYTES_DEFAULT: i64 = 1 << 30;
/// Default `segment_ms`: 7 days, so a quiet partition's records can age out.
pub const SEGMENT_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;
/// Default `max_message_bytes`: 1 MiB, as Kafka.
pub const MAX_MESSAGE_BYTES_DEFAULT: i32 = 1 << 20;
/// Default `fsync`: an acknowledged record is on disk (group commit keeps it cheap).
pub const FSYNC_DEFAULT: &str = "always";

/// Default `min_insync_replicas` for `replication_factor` replicas: 2 from 3 replicas
/// up (one broker may fail without losing an acknowledged record), else 1.
pub fn min_insync_replicas_default(replication_factor: u32) -> i32 {
    if replication_factor >= 3 { 2 } else { 1 }
}

/// A setting's name, spelled as the `TopicConfig` field everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKey {
    /// Delete closed segments older than this many ms; -1 keeps forever.
    RetentionMs,
    /// Delete the oldest closed segments while a partition is larger; -1 is unlimited.
    RetentionBytes,
    /// Roll a segment at this size.
    SegmentBytes,
    /// Roll a segment at this age in ms.
    SegmentMs,
    /// Largest record batch accepted, in bytes.
    MaxMessageBytes,
    /// `always`, `never` or `interval:<ms>`.
    Fsync,
    /// acks=all produces fail while fewer replicas are in sync.
    MinInsyncReplicas,
    /// Keep records until every subscription consumed them (at most retention_ms).
    RetainUntilConsumed,
}

impl ConfigKey {
    /// Every key, in the order `describe` prints them.
    pub const ALL: [ConfigKey; 8] = [
        ConfigKey::RetentionMs,
        ConfigKey::RetentionBytes,
        ConfigKey::SegmentBytes,
        ConfigKey::SegmentMs,
        ConfigKey::MaxMessageBytes,
        ConfigKey::Fsync,
        ConfigKey::MinInsyncReplicas,
        ConfigKey::RetainUntilConsumed,
    ];

    /// The key as the field name.
    pub fn name(self) -> &'static str {
        match self {
            ConfigKey::RetentionMs => "retention_ms",
            ConfigKey::RetentionBytes => "retention_bytes",
            ConfigKey::SegmentBytes => "segment_bytes",
            ConfigKey::SegmentMs => "segment_ms",
            ConfigKey::MaxMessageBytes => "max_message_bytes",
            ConfigKey::Fsync => "fsync",
            ConfigKey::MinInsyncReplicas => "min_insync_replicas",
            ConfigKey::RetainUntilConsumed => "retain_until_consumed",
        }
    }

    /// Whether an alter may change it. Segment layout is fixed at create (open
    /// segments and indexes are sized by it), and so is keep-until-consumed.
    pub fn alterable(self) -> bool {
        matches!(
            self,
            ConfigKey::RetentionMs
                | ConfigKey::RetentionBytes
                | ConfigKey::MaxMessageBytes
                | ConfigKey::Fsync
                | ConfigKey::MinInsyncReplicas
        )
    }

    /// The names of `keys`, comma-separated, for help and errors.
    pub fn list(keys: impl IntoIterator<Item = ConfigKey>) -> String {
        keys.into_iter()
            .map(ConfigKey::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ConfigKey {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        ConfigKey::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| ConfigError::UnknownKey {
                key: text.to_string(),
            })
    }
}

/// Why a topic config was refused. Messages name the key and the allowed range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No such key.
    #[error(
        "unknown config key {key:?}: expected one of {}",
        ConfigKey::list(ConfigKey::ALL)
    )]
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// A value out of its range.
    #[error("{key} {reason}")]
    Invalid {
        /// The key.
        key: ConfigKey,
        /// The allowed range and the value given.
        reason: String,
    },
    /// An alter named a key fixed at create.
    #[error(
        "{key} cannot be altered; alterable keys: {}",
        ConfigKey::list(ConfigKey::ALL.into_iter().filter(|k| k.alterable()))
    )]
    NotAlterable {
        /// The key.
        key: ConfigKey,
    },
    /// A key given twice in one request.
    #[error("{key} is set twice")]
    SetTwice {
        /// The key.
        key: ConfigKey,
    },
    /// A setting typed without `=`.
    #[error("expected key=value, got {text:?}")]
    Malformed {
        /// The text given.
        text: String,
    },
    /// A size or duration that does not parse.
    #[error("{key}: {source}")]
    Value {
        /// The key.
        key: ConfigKey,
        /// Why the value does not parse.
        source: crate::units::ValueError,
    },
    /// A value that is not of the key's kind.
    #[error("{key}: {value:?} is not {expected}")]
    Unparsed {
        /// The key.
        key: ConfigKey,
        /// The value given.
        value: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// A value past what the key's field holds.
    #[error("{key}: {value:?} is too large")]
    TooLarge {
        /// The key.
        key: ConfigKey,
        /// The value given.
        value: String,
    },
}

impl ConfigError {
    /// The key the error is about, if known.
    pub fn key(&self) -> Option<ConfigKey> {
        match self {
            ConfigError::UnknownKey { .. } | ConfigError::Malformed { .. } => None,
            ConfigError::Invalid { key, .. }
            | ConfigError::NotAlterable { key }
            | ConfigError::SetTwice { key }
            | ConfigError::Value { key, .. }
            | ConfigError::Unparsed { key, .. }
            | ConfigError::TooLarge { key, .. } => Some(*key),
        }
    }
}

fn invalid(key: ConfigKey, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// Checks a "positive or -1" limit.
fn check_limit(key: ConfigKey, value: Option<i64>) -> Result<(), ConfigError> {
    match value {
        Some(v) if v != UNLIMITED && v <= 0 => Err(invalid(
            key,
            format!("must be positive or -1 (unlimited), got {v}"),
        )),
        _ => Ok(()),
    }
}

/// Checks a value against `min..=max`.
fn check_range(key: ConfigKey, value: Option<i64>, min: i64, max: i64) -> Result<(), ConfigError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(invalid(
            key,
            format!("must be between {min} and {max}, got {v}"),
        )),
        _ => Ok(()),
    }
}

/// Checks the fsync policy spelling: `always`, `never` or `interval:<ms>` with ms > 0.
fn check_fsync(value: Option<&str>) -> Result<(), ConfigError> {
    let Some(fsync) = value else { return Ok(()) };
    let ok = fsync.len() <= FSYNC_BYTES_MAX
        && match fsync {
            "always" | "never" => true,
            other => other
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .is_some_and(|ms| ms > 0),
        };
    if ok {
        return Ok(());
    }
    let shown: String = fsync.chars().take(FSYNC_BYTES_MAX).collect();
    Err(invalid(
        ConfigKey::Fsync,
        format!("must be always, never or interval:<ms> (ms > 0), got {shown:?}"),
    ))
}

impl v1::TopicConfig {
    /// Whether `key` is set.
    pub fn is_set(&self, key: ConfigKey) -> bool {
        match key {
            ConfigKey::RetentionMs => self.retention_ms.is_some(),
            ConfigKey::RetentionBytes => self.retention_bytes.is_some(),
            ConfigKey::SegmentBytes => self.segment_bytes.is_some(),
            ConfigKey::SegmentMs => self.segment_ms.is_some(),
            ConfigKey::MaxMessageBytes => self.max_message_bytes.is_some(),
            ConfigKey::Fsync => self.fsync.is_some(),
            ConfigKey::MinInsyncReplicas => self.min_insync_replicas.is_some(),
            ConfigKey::RetainUntilConsumed => self.retain_until_consumed.is_some(),
        }
    }

    /// `key`'s value as text (`604800000`, `always`, `true`), if set: what `--config`
    /// and Kafka clients' config answers read.
    pub fn value_text(&self, key: ConfigKey) -> Option<String> {
        match key {
            ConfigKey::RetentionMs => self.retention_ms.map(|v| v.to_string()),
            ConfigKey::RetentionBytes => self.retention_bytes.map(|v| v.to_string()),
            ConfigKey::SegmentBytes => self.segment_bytes.map(|v| v.to_string()),
            ConfigKey::SegmentMs => self.segment_ms.map(|v| v.to_string()),
            ConfigKey::MaxMessageBytes => self.max_message_bytes.map(|v| v.to_string()),
            ConfigKey::Fsync => self.fsync.clone(),
            ConfigKey::MinInsyncReplicas => self.min_insync_replicas.map(|v| v.to_string()),
            ConfigKey::RetainUntilConsumed => self.retain_until_consumed.map(|v| v.to_string()),
        }
    }

    /// The keys that are set, in [`ConfigKey::ALL`] order.
    pub fn set_keys(&self) -> BTreeSet<ConfigKey> {
        ConfigKey::ALL
            .into_iter()
            .filter(|k| self.is_set(*k))
            .collect()
    }

    /// Sets `key` to `from`'s value of it.
    fn copy_key(&mut self, key: ConfigKey, from: &v1::TopicConfig) {
        match key {
            ConfigKey::RetentionMs => self.retention_ms = from.retention_ms,
            ConfigKey::RetentionBytes => self.retention_bytes = from.retention_bytes,
            ConfigKey::SegmentBytes => self.segment_bytes = from.segment_bytes,
            ConfigKey::SegmentMs => self.segment_ms = from.segment_ms,
            ConfigKey::MaxMessageBytes => self.max_message_bytes = from.max_message_bytes,
            ConfigKey::Fsync => self.fsync.clone_from(&from.fsync),
            ConfigKey::MinInsyncReplicas => self.min_insync_replicas = from.min_insync_replicas,
            ConfigKey::RetainUntilConsumed => {
                self.retain_until_consumed = from.retain_until_consumed
            }
        }
    }

    /// Every key at its default, for a topic of `replication_factor` replicas.
    pub fn defaults(replication_factor: u32) -> v1::TopicConfig {
        v1::TopicConfig {
            retention_ms: Some(RETENTION_MS_DEFAULT),
            retention_bytes: Some(RETENTION_BYTES_DEFAULT),
            segment_bytes: Some(SEGMENT_BYTES_DEFAULT),
            max_message_bytes: Some(MAX_MESSAGE_BYTES_DEFAULT),
            fsync: Some(FSYNC_DEFAULT.to_string()),
            segment_ms: Some(SEGMENT_MS_DEFAULT),
            min_insync_replicas: Some(min_insync_replicas_default(replication_factor)),
            retain_until_consumed: Some(false),
        }
    }

    /// This config with every unset key at its default. Not validated: brokers read
    /// stored metadata with it, which may predate today's rules.
    pub fn with_defaults(&self, replication_factor: u32) -> v1::TopicConfig {
        let mut resolved = v1::TopicConfig::defaults(replication_factor);
        for key in self.set_keys() {
            resolved.copy_key(key, self);
        }
        resolved
    }

    /// In-sync replicas an acks=all produce needs on a topic of `replication_factor`
    /// replicas: the setting, or its default, never more than there are replicas.
    pub fn min_insync(&self, replication_factor: u32) -> u32 {
        let wanted = self
            .min_insync_replicas
            .unwrap_or_else(|| min_insync_replicas_default(replication_factor));
        u32::try_from(wanted)
            .unwrap_or(1)
            .clamp(1, replication_factor.max(1))
    }

    /// Checks every set value, reading unset ones as their defaults where keys depend
    /// on each other. `min_insync_replicas` is checked against `replication_factor`
    /// when it is known (a request may leave it to the server).
    pub fn validate(&self, replication_factor: Option<u32>) -> Result<(), ConfigError> {
        check_limit(ConfigKey::RetentionMs, self.retention_ms)?;
        check_limit(ConfigKey::RetentionBytes, self.retention_bytes)?;
        check_range(
            ConfigKey::SegmentBytes,
            self.segment_bytes,
            SEGMENT_BYTES_MIN,
            SEGMENT_BYTES_MAX,
        )?;
        check_range(ConfigKey::SegmentMs, self.segment_ms, 1, i64::MAX)?;
        // A batch must fit in one segment.
        let segment_bytes = self.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT);
        check_range(
            ConfigKey::MaxMessageBytes,
            self.max_message_bytes.map(i64::from),
            i64::from(MAX_MESSAGE_BYTES_MIN),
            segment_bytes.min(i64::from(i32::MAX)),
        )
        .map_err(|e| match e {
            ConfigError::Invalid { key, reason } => invalid(
                key,
                format!("{reason} (at most segment_bytes, {segment_bytes})"),
            ),
            other => other,
        })?;
        check_fsync(self.fsync.as_deref())?;
        let replicas_max = replication_factor.map_or(i64::from(u32::MAX), i64::from);
        check_range(
            ConfigKey::MinInsyncReplicas,
            self.min_insync_replicas.map(i64::from),
            1,
            replicas_max,
        )
        .map_err(|e| match (e, replication_factor) {
            (ConfigError::Invalid { key, reason }, Some(r)) => invalid(
                key,
                format!("{reason} (at most the replication factor, {r})"),
            ),
            (other, _) => other,
        })
    }

    /// The stored form of a create request: every key set (unset ones at their
    /// default), checked, with the keys that took the default.
    pub fn resolve(
        &self,
        replication_factor: u32,
    ) -> Result<(v1::TopicConfig, BTreeSet<ConfigKey>), ConfigError> {
        self.validate(Some(replication_factor))?;
        let resolved = self.with_defaults(replication_factor);
        resolved.validate(Some(replication_factor))?;
        let defaults = ConfigKey::ALL
            .into_iter()
            .filter(|k| !self.is_set(*k))
            .collect();
        Ok((resolved, defaults))
    }

    /// This (stored) config with the keys set in `changes` replaced, checked; only
    /// [`ConfigKey::alterable`] keys may change. Returns the new config and the keys
    /// now explicit (that no longer hold a default).
    pub fn altered(
        &self,
        changes: &v1::TopicConfig,
        replication_factor: u32,
    ) -> Result<(v1::TopicConfig, BTreeSet<ConfigKey>), ConfigError> {
        let changed = changes.set_keys();
        if let Some(key) = changed.iter().find(|k| !k.alterable()) {
            return Err(ConfigError::NotAlterable { key: *key });
        }
        changes.validate(Some(replication_factor))?;
        let mut altered = self.with_defaults(replication_factor);
        for key in &changed {
            altered.copy_key(*key, changes);
        }
        altered.validate(Some(replication_factor))?;
        Ok((altered, changed))
    }
}

mod parse;

pub use parse::{ConfigSetting, build_config};

#[cfg(test)]
mod tests;
