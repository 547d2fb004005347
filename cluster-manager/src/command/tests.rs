use super::*;

fn create(name: &str, partitions: u32, settings: TopicConfig) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: 1,
        settings,
        unclean_leader_election: false,
        now_ms: 0,
    }
}

#[test]
fn malformed_commands_are_refused_before_the_log() {
    let ok = TopicConfig::default();
    assert!(create("orders", 1, ok.clone()).validate().is_ok());
    for (command, expected) in [
        (create("a/b", 1, ok.clone()), "only letters"),
        (create("", 1, ok.clone()), "empty"),
        (create("orders", 0, ok.clone()), "between 1 and 10000"),
        (create("orders", 10_001, ok.clone()), "between 1 and 10000"),
        (
            create(
                "orders",
                1,
                TopicConfig {
                    fsync: Some("sometimes".into()),
                    ..Default::default()
                },
            ),
            "fsync",
        ),
        (
            create(
                "orders",
                1,
                TopicConfig {
                    retention_ms: Some(0),
                    ..Default::default()
                },
            ),
            "retention_ms",
        ),
        (
            create(
                "orders",
                1,
                TopicConfig {
                    segment_bytes: Some(1000),
                    ..Default::default()
                },
            ),
            "segment_bytes must be between 4096 and 2147483648, got 1000",
        ),
        (
            Command::AlterTopicConfig {
                name: "orders".into(),
                changes: TopicConfig {
                    segment_ms: Some(1000),
                    ..Default::default()
                },
            },
            "segment_ms cannot be altered",
        ),
        (
            Command::RegisterBroker {
                broker: 1,
                address: String::new(),
                rack: None,
                kafka_address: None,
                now_ms: 0,
                lease_ms: 0,
                proven: false,
            },
            "address is empty",
        ),
        (
            Command::RegisterBroker {
                broker: 1,
                address: "x".repeat(ADDRESS_BYTES_MAX + 1),
                rack: None,
                kafka_address: None,
                now_ms: 0,
                lease_ms: 0,
                proven: false,
            },
            "bytes long",
        ),
    ] {
        let error = command.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn stamping_sets_the_clock_of_commands_that_carry_one() {
    let mut command = Command::Heartbeat {
        broker: 1,
        now_ms: 0,
        sizes: Vec::new(),
    };
    command.stamp(42);
    assert_eq!(
        command,
        Command::Heartbeat {
            broker: 1,
            now_ms: 42,
            sizes: Vec::new()
        }
    );
}

fn sizes(count: usize, topic: &str) -> Vec<PartitionSize> {
    (0..count)
        .map(|partition| PartitionSize {
            topic: topic.into(),
            partition: partition as u32,
            bytes: 1 << 20,
        })
        .collect()
}

#[test]
fn heartbeat_sizes_are_bounded_and_named() {
    let heartbeat = |sizes| Command::Heartbeat {
        broker: 1,
        now_ms: 0,
        sizes,
    };
    assert!(
        heartbeat(sizes(SIZES_PER_HEARTBEAT_MAX, "t"))
            .validate()
            .is_ok()
    );
    let error = heartbeat(sizes(SIZES_PER_HEARTBEAT_MAX + 1, "t"))
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("at most 4096"), "{error}");
    assert!(heartbeat(sizes(1, "a/b")).validate().is_err());
}

#[test]
fn only_the_leaders_report_of_a_size_is_recorded() {
    let mut state = crate::state::testing::cluster(2);
    let mut create = create("t", 1, TopicConfig::default());
    if let Command::CreateTopic {
        replication_factor, ..
    } = &mut create
    {
        *replication_factor = 2;
    }
    state.apply(create).unwrap();
    let leader = state.topic("t").unwrap().partitions()[0].leader().unwrap();
    let follower = 3 - leader;
    let report = |broker, topic: &str, bytes| Command::Heartbeat {
        broker,
        now_ms: 0,
        sizes: vec![PartitionSize {
            topic: topic.into(),
            partition: 0,
            bytes,
        }],
    };
    state.apply(report(follower, "t", 5)).unwrap();
    state.apply(report(leader, "gone", 6)).unwrap();
    let size =
        |state: &crate::state::ClusterState| state.topic("t").unwrap().partitions()[0].size_bytes();
    assert_eq!(
        size(&state),
        0,
        "a follower's and an unknown topic's reports are ignored"
    );
    state.apply(report(leader, "t", 7)).unwrap();
    assert_eq!(size(&state), 7);
}
