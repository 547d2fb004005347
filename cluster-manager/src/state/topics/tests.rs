//! Unit tests of topics through `apply`: create, delete, settings, added partitions.

use super::super::testing::{cluster, create, create_with};
use super::super::*;

#[test]
fn creating_an_identical_topic_again_is_idempotent_and_a_different_one_conflicts() {
    let mut state = cluster(3);
    state.apply(create("t", 2, 2)).unwrap();
    let before = state.clone();
    assert_eq!(
        state.apply(create("t", 2, 2)).unwrap(),
        Response::TopicCreated { created: false }
    );
    assert_eq!(state, before);
    assert_eq!(
        state.apply(create("t", 3, 2)).unwrap_err(),
        CommandError::TopicExists { name: "t".into() }
    );
    assert_eq!(state, before);
}

#[test]
fn deleting_removes_the_topic_and_unknown_topics_are_not_found() {
    let mut state = cluster(1);
    state.apply(create("t", 1, 1)).unwrap();
    state
        .apply(Command::DeleteTopic { name: "t".into() })
        .unwrap();
    assert!(state.topic("t").is_none());
    assert_eq!(
        state
            .apply(Command::DeleteTopic { name: "t".into() })
            .unwrap_err(),
        CommandError::TopicNotFound { name: "t".into() }
    );
}

#[test]
fn create_resolves_settings_once_and_refuses_what_no_broker_could_host() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 0)).unwrap();
    let topic = state.topic("t").unwrap();
    assert_eq!(topic.config(), TopicConfig::defaults(3));
    assert_eq!(topic.settings, TopicConfig::defaults(3), "stored resolved");
    assert_eq!(topic.default_keys().len(), ConfigKey::ALL.len());
    let unhostable = create_with(
        "u",
        1,
        TopicConfig {
            segment_bytes: Some(1000),
            ..Default::default()
        },
    );
    let error = state.apply(unhostable).unwrap_err().to_string();
    assert!(
        error.contains("segment_bytes must be between 4096"),
        "{error}"
    );
    // The factor is resolved to 3 by `apply`; 4 in-sync replicas can never be.
    let insync = create_with(
        "v",
        0,
        TopicConfig {
            min_insync_replicas: Some(4),
            ..Default::default()
        },
    );
    let error = state.apply(insync).unwrap_err().to_string();
    assert!(
        error.contains("min_insync_replicas must be between 1 and 3"),
        "{error}"
    );
    assert!(state.topic("u").is_none() && state.topic("v").is_none());
}

#[test]
fn alter_changes_settings_and_marks_them_explicit() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 3)).unwrap();
    let altered = state.apply(Command::AlterTopicConfig {
        name: "t".into(),
        changes: TopicConfig {
            max_message_bytes: Some(4096),
            min_insync_replicas: Some(3),
            ..Default::default()
        },
    });
    assert_eq!(altered, Ok(Response::TopicConfigAltered));
    let topic = state.topic("t").unwrap();
    assert_eq!(topic.config().max_message_bytes, Some(4096));
    assert!(!topic.default_keys().contains(&ConfigKey::MaxMessageBytes));
    assert!(topic.default_keys().contains(&ConfigKey::RetentionMs));
    let missing = state.apply(Command::AlterTopicConfig {
        name: "nope".into(),
        changes: TopicConfig::default(),
    });
    assert!(matches!(missing, Err(CommandError::TopicNotFound { .. })));
}

#[test]
fn topics_stored_before_resolution_read_with_defaults() {
    let mut state = cluster(1);
    state.apply(create("t", 1, 1)).unwrap();
    let mut json = serde_json::to_value(&state).unwrap();
    let topic = &mut json["topics"]["t"];
    topic.as_object_mut().unwrap().remove("default_keys");
    topic["settings"] = serde_json::json!({"retention_ms": -1, "segment_bytes": null,
        "retention_bytes": null, "max_message_bytes": null, "fsync": null, "segment_ms": null});
    let old: ClusterState = serde_json::from_value(json).unwrap();
    let topic = old.topic("t").unwrap();
    assert_eq!(topic.config().retention_ms, Some(-1));
    assert_eq!(
        topic.config().segment_bytes,
        TopicConfig::defaults(1).segment_bytes
    );
    assert!(!topic.default_keys().contains(&ConfigKey::RetentionMs));
    assert!(topic.default_keys().contains(&ConfigKey::SegmentBytes));
}

#[test]
fn added_partitions_are_placed_and_existing_ones_kept() {
    let mut state = cluster(3);
    state.apply(create("t", 3, 3)).unwrap();
    let before: Vec<Vec<u32>> = state
        .topic("t")
        .unwrap()
        .partitions()
        .iter()
        .map(|p| p.replicas().to_vec())
        .collect();
    let added = state.apply(Command::CreatePartitions {
        name: "t".into(),
        partitions: 6,
    });
    assert_eq!(added, Ok(Response::PartitionsCreated { added: 3 }));
    let topic = state.topic("t").unwrap();
    assert_eq!(topic.partitions().len(), 6);
    let after: Vec<Vec<u32>> = topic
        .partitions()
        .iter()
        .map(|p| p.replicas().to_vec())
        .collect();
    assert_eq!(
        after[..3],
        before[..],
        "existing partitions keep their placement"
    );
    let mut leaders = BTreeSet::new();
    for p in &topic.partitions()[3..] {
        assert_eq!(p.replicas().len(), 3);
        assert_eq!(
            p.replicas().iter().collect::<BTreeSet<_>>().len(),
            3,
            "no broker twice"
        );
        leaders.insert(p.replicas()[0]);
    }
    assert_eq!(leaders.len(), 3, "new leaders spread over the brokers");
    for (partitions, refused) in [(6, true), (2, true), (7, false)] {
        let result = state.apply(Command::CreatePartitions {
            name: "t".into(),
            partitions,
        });
        assert_eq!(result.is_err(), refused, "{partitions}: {result:?}");
    }
    let missing = state.apply(Command::CreatePartitions {
        name: "nope".into(),
        partitions: 2,
    });
    assert!(matches!(missing, Err(CommandError::TopicNotFound { .. })));
}
