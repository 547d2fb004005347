//! The one parser of topic settings as people type them: `key=value`, keys spelled as
//! the `TopicConfig` fields (`ConfigKey`), values with units (`1GiB`, `7d`) or plain
//! numbers, `-1` where the server allows no limit. The CLI's `--config` goes through
//! it; ranges are checked by `TopicConfig::validate`, so there is one set of rules.

use std::str::FromStr;

use super::{ConfigError, ConfigKey};
use crate::units::{ValueError, parse_ms, parse_size_limit};
use crate::v1::TopicConfig;

/// One parsed topic setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSetting {
    /// Delete closed segments older than this many ms; -1 keeps forever.
    RetentionMs(i64),
    /// Delete the oldest closed segments while a partition is larger; -1 is unlimited.
    RetentionBytes(i64),
    /// Roll a segment at this size.
    SegmentBytes(i64),
    /// Roll a segment at this age in ms.
    SegmentMs(i64),
    /// Largest record batch accepted, in bytes.
    MaxMessageBytes(i32),
    /// `always`, `never` or `interval:<ms>` (the server checks the spelling).
    Fsync(String),
    /// acks=all produces fail while fewer replicas are in sync.
    MinInsyncReplicas(i32),
    /// Keep records until every subscription consumed them (at most retention_ms).
    RetainUntilConsumed(bool),
}

impl FromStr for ConfigSetting {
    type Err = ConfigError;

    /// Parses `key=value`. Sizes take units (`1GiB`), times take units (`7d`) or plain
    /// milliseconds, and both take `-1` where the server allows no limit.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(ConfigError::Malformed {
                text: text.to_string(),
            });
        };
        let key: ConfigKey = key.parse()?;
        let with_key = |source: ValueError| ConfigError::Value { key, source };
        let unparsed = |expected: &'static str| ConfigError::Unparsed {
            key,
            value: value.to_string(),
            expected,
        };
        let int32 = |v: i64| {
            i32::try_from(v).map_err(|_| ConfigError::TooLarge {
                key,
                value: value.to_string(),
            })
        };
        let setting = match key {
            ConfigKey::RetentionMs => {
                ConfigSetting::RetentionMs(parse_ms(value).map_err(with_key)?)
            }
            ConfigKey::RetentionBytes => {
                ConfigSetting::RetentionBytes(parse_size_limit(value).map_err(with_key)?)
            }
            ConfigKey::SegmentBytes => {
                ConfigSetting::SegmentBytes(parse_size_limit(value).map_err(with_key)?)
            }
            ConfigKey::SegmentMs => ConfigSetting::SegmentMs(parse_ms(value).map_err(with_key)?),
            ConfigKey::MaxMessageBytes => {
                ConfigSetting::MaxMessageBytes(int32(parse_size_limit(value).map_err(with_key)?)?)
            }
            ConfigKey::Fsync => ConfigSetting::Fsync(value.trim().to_string()),
            ConfigKey::MinInsyncReplicas => {
                let count = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| unparsed("a whole number"))?;
                ConfigSetting::MinInsyncReplicas(int32(count)?)
            }
            ConfigKey::RetainUntilConsumed => ConfigSetting::RetainUntilConsumed(
                value
                    .trim()
                    .parse()
                    .map_err(|_| unparsed("true or false"))?,
            ),
        };
        Ok(setting)
    }
}

impl ConfigSetting {
    /// The `TopicConfig` field this setting fills.
    pub fn key(&self) -> ConfigKey {
        match self {
            ConfigSetting::RetentionMs(_) => ConfigKey::RetentionMs,
            ConfigSetting::RetentionBytes(_) => ConfigKey::RetentionBytes,
            ConfigSetting::SegmentBytes(_) => ConfigKey::SegmentBytes,
            ConfigSetting::SegmentMs(_) => ConfigKey::SegmentMs,
            ConfigSetting::MaxMessageBytes(_) => ConfigKey::MaxMessageBytes,
            ConfigSetting::Fsync(_) => ConfigKey::Fsync,
            ConfigSetting::MinInsyncReplicas(_) => ConfigKey::MinInsyncReplicas,
            ConfigSetting::RetainUntilConsumed(_) => ConfigKey::RetainUntilConsumed,
        }
    }
}

/// Builds a `TopicConfig` from settings; a key set twice is an error.
pub fn build_config(
    settings: impl IntoIterator<Item = ConfigSetting>,
) -> Result<TopicConfig, ConfigError> {
    let mut config = TopicConfig::default();
    for setting in settings {
        let key = setting.key();
        let was_set = match setting {
            ConfigSetting::RetentionMs(v) => config.retention_ms.replace(v).is_some(),
            ConfigSetting::RetentionBytes(v) => config.retention_bytes.replace(v).is_some(),
            ConfigSetting::SegmentBytes(v) => config.segment_bytes.replace(v).is_some(),
            ConfigSetting::SegmentMs(v) => config.segment_ms.replace(v).is_some(),
            ConfigSetting::MaxMessageBytes(v) => config.max_message_bytes.replace(v).is_some(),
            ConfigSetting::Fsync(v) => config.fsync.replace(v).is_some(),
            ConfigSetting::MinInsyncReplicas(v) => config.min_insync_replicas.replace(v).is_some(),
            ConfigSetting::RetainUntilConsumed(v) => {
                config.retain_until_consumed.replace(v).is_some()
            }
        };
        if was_set {
            return Err(ConfigError::SetTwice { key });
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<ConfigSetting, &str>) {
        match (input.parse::<ConfigSetting>(), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(got), Err(want)) => assert!(got.to_string().contains(want), "{input}: {got}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_every_key() {
        check(
            "retention_ms=7d",
            Ok(ConfigSetting::RetentionMs(604_800_000)),
        );
        check("retention_ms=60000", Ok(ConfigSetting::RetentionMs(60_000)));
        check("retention_ms=-1", Ok(ConfigSetting::RetentionMs(-1)));
        check(
            "retention_bytes=10GiB",
            Ok(ConfigSetting::RetentionBytes(10 << 30)),
        );
        check(
            "retention_bytes=unlimited",
            Ok(ConfigSetting::RetentionBytes(-1)),
        );
        check(
            "segment_bytes=1073741824",
            Ok(ConfigSetting::SegmentBytes(1 << 30)),
        );
        check("segment_ms=1h", Ok(ConfigSetting::SegmentMs(3_600_000)));
        check(
            "max_message_bytes=1MiB",
            Ok(ConfigSetting::MaxMessageBytes(1 << 20)),
        );
        check(
            "fsync=interval:100",
            Ok(ConfigSetting::Fsync("interval:100".into())),
        );
        check("fsync=always", Ok(ConfigSetting::Fsync("always".into())));
        check(
            "min_insync_replicas=2",
            Ok(ConfigSetting::MinInsyncReplicas(2)),
        );
        check(
            "retain_until_consumed=true",
            Ok(ConfigSetting::RetainUntilConsumed(true)),
        );
    }

    #[test]
    fn every_key_the_server_knows_parses() {
        for key in ConfigKey::ALL {
            let value = match key {
                ConfigKey::Fsync => "never",
                ConfigKey::RetainUntilConsumed => "false",
                _ => "1",
            };
            let setting: ConfigSetting = format!("{key}={value}").parse().unwrap();
            assert_eq!(setting.key(), key);
        }
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        check(
            "retention=7d",
            Err("unknown config key \"retention\": expected one of retention_ms"),
        );
        check("retention_ms", Err("expected key=value"));
        check("retention_ms=soon", Err("retention_ms: invalid duration"));
        check("segment_bytes=lots", Err("segment_bytes: invalid size"));
        check("max_message_bytes=4GiB", Err("too large"));
        check(
            "min_insync_replicas=two",
            Err("min_insync_replicas: \"two\" is not a whole number"),
        );
    }

    #[test]
    fn builds_config_and_rejects_a_key_set_twice() {
        let config = build_config([
            ConfigSetting::RetentionMs(1_000),
            ConfigSetting::Fsync("never".into()),
        ])
        .unwrap();
        assert_eq!(config.retention_ms, Some(1_000));
        assert_eq!(config.fsync.as_deref(), Some("never"));
        assert_eq!(config.retention_bytes, None);
        let twice = build_config([ConfigSetting::RetentionMs(1), ConfigSetting::RetentionMs(2)]);
        assert_eq!(twice.unwrap_err().to_string(), "retention_ms is set twice");
    }
}
