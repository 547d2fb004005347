//! `create --config key=value` and the dedicated retention flags, turned into the wire
//! `TopicConfig`.
//!
//! Keys are the `TopicConfig` field names, so `--config` spells a setting exactly as
//! `describe` prints it. An unknown key, or a setting given twice (say by `--retention`
//! and `--config retention_ms=..`), is an error rather than a silent override.

use std::str::FromStr;

use pubsub_client::TopicConfig;

use super::units::{parse_ms, parse_size_limit};

/// The keys `--config` accepts, in the order `describe` prints them.
pub const CONFIG_KEYS: &[&str] = &[
    "retention_ms",
    "retention_bytes",
    "segment_bytes",
    "segment_ms",
    "max_message_bytes",
    "fsync",
    "retain_until_consumed",
];

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
    /// Keep records until every subscription consumed them (at most retention_ms).
    RetainUntilConsumed(bool),
}

impl FromStr for ConfigSetting {
    type Err = String;

    /// Parses `key=value`. Sizes take units (`1GiB`), times take units (`7d`) or plain
    /// milliseconds, and both take `-1` where the server allows no limit.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("expected key=value, got {text:?}"));
        };
        let with_key = |e: String| format!("{key}: {e}");
        let setting = match key.trim() {
            "retention_ms" => ConfigSetting::RetentionMs(parse_ms(value).map_err(with_key)?),
            "retention_bytes" => {
                ConfigSetting::RetentionBytes(parse_size_limit(value).map_err(with_key)?)
            }
            "segment_bytes" => {
                ConfigSetting::SegmentBytes(parse_size_limit(value).map_err(with_key)?)
            }
            "segment_ms" => ConfigSetting::SegmentMs(parse_ms(value).map_err(with_key)?),
            "max_message_bytes" => {
                let bytes = parse_size_limit(value).map_err(with_key)?;
                let bytes = i32::try_from(bytes)
                    .map_err(|_| with_key(format!("{value:?} is too large")))?;
                ConfigSetting::MaxMessageBytes(bytes)
            }
            "fsync" => ConfigSetting::Fsync(value.trim().to_string()),
            "retain_until_consumed" => ConfigSetting::RetainUntilConsumed(
                value
                    .trim()
                    .parse()
                    .map_err(|_| with_key(format!("{value:?} is not true or false")))?,
            ),
            other => {
                return Err(format!(
                    "unknown config key {other:?}: expected one of {}",
                    CONFIG_KEYS.join(", ")
                ));
            }
        };
        Ok(setting)
    }
}

impl ConfigSetting {
    /// The `TopicConfig` field this setting fills.
    pub fn key(&self) -> &'static str {
        match self {
            ConfigSetting::RetentionMs(_) => "retention_ms",
            ConfigSetting::RetentionBytes(_) => "retention_bytes",
            ConfigSetting::SegmentBytes(_) => "segment_bytes",
            ConfigSetting::SegmentMs(_) => "segment_ms",
            ConfigSetting::MaxMessageBytes(_) => "max_message_bytes",
            ConfigSetting::Fsync(_) => "fsync",
            ConfigSetting::RetainUntilConsumed(_) => "retain_until_consumed",
        }
    }
}

/// Builds a `TopicConfig` from settings; a key set twice is an error.
pub fn build_config(
    settings: impl IntoIterator<Item = ConfigSetting>,
) -> Result<TopicConfig, String> {
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
            ConfigSetting::RetainUntilConsumed(v) => {
                config.retain_until_consumed.replace(v).is_some()
            }
        };
        if was_set {
            return Err(format!("{key} is set twice"));
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
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
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
        assert_eq!(twice, Err("retention_ms is set twice".to_string()));
    }
}
