use proptest::prelude::*;

use super::*;

fn config() -> v1::TopicConfig {
    v1::TopicConfig::default()
}

/// Checks that `config` is refused for `replication_factor`, naming `key` and `words`.
fn check_refused(config: v1::TopicConfig, replication_factor: u32, key: ConfigKey, words: &str) {
    let error = config.resolve(replication_factor).unwrap_err();
    assert_eq!(error.key(), Some(key), "{error}");
    let text = error.to_string();
    assert!(text.starts_with(key.name()), "{text}");
    assert!(text.contains(words), "{text}");
}

#[test]
fn unset_keys_take_the_defaults_and_are_listed() {
    let (resolved, defaults) = config().resolve(3).unwrap();
    assert_eq!(resolved, v1::TopicConfig::defaults(3));
    assert_eq!(resolved.min_insync_replicas, Some(2));
    assert_eq!(defaults, ConfigKey::ALL.into_iter().collect());
    let requested = v1::TopicConfig {
        retention_ms: Some(-1),
        fsync: Some("never".into()),
        ..config()
    };
    let (resolved, defaults) = requested.resolve(1).unwrap();
    assert_eq!(resolved.retention_ms, Some(-1));
    assert_eq!(resolved.min_insync_replicas, Some(1));
    assert!(!defaults.contains(&ConfigKey::RetentionMs));
    assert!(!defaults.contains(&ConfigKey::Fsync));
    assert!(defaults.contains(&ConfigKey::SegmentBytes));
}

#[test]
fn values_no_broker_could_host_are_refused_naming_key_and_range() {
    let segment = |bytes| v1::TopicConfig {
        segment_bytes: Some(bytes),
        ..config()
    };
    check_refused(
        segment(1000),
        1,
        ConfigKey::SegmentBytes,
        "between 4096 and 2147483648, got 1000",
    );
    check_refused(segment(4 << 30), 1, ConfigKey::SegmentBytes, "between 4096");
    let batch_over_segment = v1::TopicConfig {
        segment_bytes: Some(8192),
        max_message_bytes: Some(8193),
        ..config()
    };
    check_refused(
        batch_over_segment,
        1,
        ConfigKey::MaxMessageBytes,
        "at most segment_bytes",
    );
    let insync = v1::TopicConfig {
        min_insync_replicas: Some(2),
        ..config()
    };
    check_refused(
        insync,
        1,
        ConfigKey::MinInsyncReplicas,
        "between 1 and 1, got 2",
    );
    let retention = v1::TopicConfig {
        retention_ms: Some(0),
        ..config()
    };
    check_refused(retention, 1, ConfigKey::RetentionMs, "positive or -1");
    let fsync = v1::TopicConfig {
        fsync: Some("interval:0".into()),
        ..config()
    };
    check_refused(fsync, 1, ConfigKey::Fsync, "interval:<ms>");
}

#[test]
fn alter_changes_only_alterable_keys_and_marks_them_explicit() {
    let (stored, _) = config().resolve(3).unwrap();
    let changes = v1::TopicConfig {
        retention_ms: Some(60_000),
        min_insync_replicas: Some(3),
        ..config()
    };
    let (altered, explicit) = stored.altered(&changes, 3).unwrap();
    assert_eq!(altered.retention_ms, Some(60_000));
    assert_eq!(altered.min_insync_replicas, Some(3));
    assert_eq!(altered.segment_bytes, stored.segment_bytes);
    assert_eq!(
        explicit,
        [ConfigKey::RetentionMs, ConfigKey::MinInsyncReplicas].into()
    );
    let segment = v1::TopicConfig {
        segment_bytes: Some(1 << 20),
        ..config()
    };
    assert_eq!(
        stored.altered(&segment, 3),
        Err(ConfigError::NotAlterable {
            key: ConfigKey::SegmentBytes
        })
    );
    let too_many = v1::TopicConfig {
        min_insync_replicas: Some(4),
        ..config()
    };
    assert!(stored.altered(&too_many, 3).is_err());
}

#[test]
fn keys_parse_from_their_names_only() {
    for key in ConfigKey::ALL {
        assert_eq!(key.name().parse::<ConfigKey>(), Ok(key));
    }
    let error = "retention".parse::<ConfigKey>().unwrap_err().to_string();
    assert!(error.contains("expected one of retention_ms"), "{error}");
    assert!(error.contains("min_insync_replicas"), "{error}");
}

#[test]
fn the_raft_state_json_of_older_versions_still_reads() {
    // What the cluster manager's `TopicSettings` serialized to before this type.
    let old = r#"{"retention_ms":null,"retention_bytes":-1,"segment_bytes":1048576,
        "max_message_bytes":null,"fsync":"never","segment_ms":null}"#;
    let config: v1::TopicConfig = serde_json::from_str(old).unwrap();
    assert_eq!(config.segment_bytes, Some(1 << 20));
    assert_eq!(config.fsync.as_deref(), Some("never"));
    assert_eq!(config.min_insync_replicas, None);
    assert_eq!(
        config.with_defaults(1).retention_ms,
        Some(RETENTION_MS_DEFAULT)
    );
}

fn any_config() -> impl Strategy<Value = v1::TopicConfig> {
    let limit = prop_oneof![Just(-1i64), 1i64..i64::MAX, -5i64..=0];
    (
        proptest::option::of(limit.clone()),
        proptest::option::of(limit),
        proptest::option::of(0i64..(3i64 << 30)),
        proptest::option::of(-1i32..(1 << 22)),
        proptest::option::of(prop_oneof![
            Just("always".to_string()),
            Just("never".to_string()),
            (0u64..1000).prop_map(|ms| format!("interval:{ms}")),
            "[a-z:0-9]{0,12}",
        ]),
        proptest::option::of(-1i32..6),
    )
        .prop_map(
            |(
                retention_ms,
                retention_bytes,
                segment_bytes,
                max_message_bytes,
                fsync,
                min_insync_replicas,
            )| {
                v1::TopicConfig {
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    max_message_bytes,
                    fsync,
                    min_insync_replicas,
                    ..v1::TopicConfig::default()
                }
            },
        )
}

proptest! {
    /// Resolving sets every key, is idempotent, and what it accepts passes validation.
    #[test]
    fn resolved_configs_are_complete_and_stable(requested in any_config(), replication_factor in 1u32..5) {
        if let Ok((resolved, defaults)) = requested.resolve(replication_factor) {
            prop_assert_eq!(resolved.set_keys().len(), ConfigKey::ALL.len());
            prop_assert!(resolved.validate(Some(replication_factor)).is_ok());
            let (again, none) = resolved.resolve(replication_factor).unwrap();
            prop_assert_eq!(&again, &resolved);
            prop_assert!(none.is_empty());
            for key in defaults {
                prop_assert!(!requested.is_set(key));
            }
        }
    }
}

#[test]
fn every_key_has_a_value_in_a_full_config() {
    let config = v1::TopicConfig::defaults(3);
    for key in ConfigKey::ALL {
        assert!(config.value_text(key).is_some(), "{key:?}");
    }
    assert_eq!(
        config.value_text(ConfigKey::Fsync).as_deref(),
        Some("always")
    );
    assert_eq!(
        v1::TopicConfig::default().value_text(ConfigKey::RetentionMs),
        None
    );
}
