//! Topic settings end to end: refused at create when no broker could host them (at the
//! cluster manager too), changed by `pubsub alter`, shown by `describe` as set or
//! default, and enforced by the broker after the change and after a restart.

use pubsub_client::{Admin, Client, NewTopic, TopicConfig};
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use std::time::{Duration, Instant};

use pubsub_tests::{Cluster, Server, pubsub};
use tonic::Code;

use crate::cluster::wait_for_brokers;
use crate::errors::one_batch;

/// Runs `pubsub ARGS` and returns stdout, or stderr if it failed.
fn run(server: &Server, args: &[&str]) -> Result<String, String> {
    let output = pubsub(server.address(), args, b"");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8(output.stderr).unwrap())
    }
}

fn describe_json(server: &Server, topic: &str) -> serde_json::Value {
    let out = run(server, &["describe", topic, "--output", "json"]).unwrap();
    serde_json::from_str(&out).unwrap()
}

fn default_keys(described: &serde_json::Value) -> Vec<String> {
    described["default_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

fn produce(topic: &str, value_len: usize) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: v1::Acks::Leader as i32,
        batches: vec![one_batch(value_len)],
        correlation_id: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_settings_no_broker_could_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Straight to the cluster manager (standalone serves it on its one address): Raft
    // must not take what no broker can open.
    let manager = server.address();
    let mut stub = ClusterManagerClient::connect(format!("http://{manager}"))
        .await
        .unwrap();
    let tiny_segments = v1::ClusterCreateTopicRequest {
        name: "tiny".into(),
        partitions: 1,
        replication_factor: 1,
        config: Some(TopicConfig {
            segment_bytes: Some(1000),
            ..TopicConfig::default()
        }),
        unclean_leader_election: false,
    };
    let err = stub.create_topic(tiny_segments).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("segment_bytes must be between 4096 and 2147483648, got 1000"),
        "{}",
        err.message()
    );
    // Through a broker, min_insync_replicas above the replication factor.
    let admin = Admin::new(Client::connect(server.address()).await.unwrap());
    let insync = NewTopic {
        name: "insync".into(),
        partitions: 1,
        replication_factor: 1,
        config: TopicConfig {
            min_insync_replicas: Some(2),
            ..TopicConfig::default()
        },
    };
    let err = admin.create_topic(insync).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(
        err.to_string()
            .contains("min_insync_replicas must be between 1 and 1, got 2"),
        "{err}"
    );
    // The CLI takes every key, and the server names the key and range when it refuses.
    let refused = run(
        &server,
        &["create", "cli", "--config", "min_insync_replicas=2"],
    )
    .unwrap_err();
    assert!(
        refused.contains("min_insync_replicas must be between 1 and 1"),
        "{refused}"
    );
    run(
        &server,
        &["create", "cli", "--config", "min_insync_replicas=1"],
    )
    .unwrap();
    let names: Vec<String> = crate::topic_names(&admin).await;
    assert_eq!(names, ["cli"], "nothing else was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_changes_what_describe_shows_and_what_the_broker_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    run(&server, &["create", "t", "--retention", "7d"]).unwrap();
    let before = describe_json(&server, "t");
    assert_eq!(before["config"]["max_message_bytes"], 1 << 20);
    assert!(!default_keys(&before).contains(&"retention_ms".to_string()));
    assert!(default_keys(&before).contains(&"max_message_bytes".to_string()));

    let altered = run(
        &server,
        &[
            "alter",
            "t",
            "--config",
            "retention_ms=1h",
            "--config",
            "fsync=never",
            "--config",
            "max_message_bytes=1000",
            "--config",
            "min_insync_replicas=1",
        ],
    )
    .unwrap();
    assert!(altered.contains("altered topic \"t\""), "{altered}");
    let after = describe_json(&server, "t");
    assert_eq!(after["config"]["retention_ms"], 3_600_000);
    assert_eq!(after["config"]["fsync"], "never");
    assert_eq!(after["config"]["max_message_bytes"], 1000);
    assert_eq!(after["config"]["min_insync_replicas"], 1);
    let defaults = default_keys(&after);
    for key in ["fsync", "max_message_bytes", "min_insync_replicas"] {
        assert!(!defaults.contains(&key.to_string()), "{key} is set now");
    }
    assert!(defaults.contains(&"segment_bytes".to_string()));
    let text = run(&server, &["describe", "t"]).unwrap();
    let row = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} row in {text}"))
            .to_string()
    };
    assert!(row("max_message_bytes").contains("set"), "{text}");
    assert!(row("segment_bytes").contains("default"), "{text}");

    // The open partition enforces the new limit at once, and again after a restart.
    for round in 0..2 {
        let client = Client::connect(server.address()).await.unwrap();
        let mut stub = client.broker_stub();
        let err = stub.produce(produce("t", 5000)).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::ResourceExhausted,
            "round {round}: {err:?}"
        );
        assert!(
            err.message().contains("exceeds the limit of 1000 bytes"),
            "{}",
            err.message()
        );
        stub.produce(produce("t", 10)).await.unwrap();
        server.restart();
    }

    let refused = run(&server, &["alter", "t", "--config", "segment_bytes=1MiB"]).unwrap_err();
    assert!(
        refused.contains("segment_bytes cannot be altered"),
        "{refused}"
    );
    let refused = run(
        &server,
        &["alter", "t", "--config", "min_insync_replicas=2"],
    )
    .unwrap_err();
    assert!(
        refused.contains("min_insync_replicas must be between 1 and 1"),
        "{refused}"
    );
    let missing = run(&server, &["alter", "nope", "--config", "fsync=always"]).unwrap_err();
    assert!(missing.contains("does not exist"), "{missing}");
}

/// The log end offset of partition 0 of `topic` on the broker at `address`'s replica.
async fn log_end_on(address: &str, topic: &str) -> Option<u64> {
    let client = Client::connect(address).await.ok()?;
    let described = Admin::new(client).describe_topic(topic).await.ok()?;
    described.topic?.partitions.first()?.log_end_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_applies_an_alter_and_a_follower_still_copies_older_batches() {
    let mut cluster = Cluster::start("3s");
    wait_for_brokers(&cluster).await;
    let admin = Admin::new(Client::connect(cluster.brokers[0].address()).await.unwrap());
    let topic = NewTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        config: TopicConfig::default(),
    };
    admin.create_topic(topic).await.unwrap();
    let described = admin.describe_topic("t").await.unwrap();
    let leader = described.topic.unwrap().partitions[0].leader.unwrap();
    let addresses: Vec<String> = cluster
        .brokers
        .iter()
        .map(|b| b.address().to_string())
        .collect();
    let leader_address = &addresses[leader as usize - 1];
    let follower = if leader == 1 { 2 } else { 1 };

    // A follower is away while the leader takes a 5000-byte batch, then the limit
    // drops to 1000 bytes.
    cluster.brokers[follower as usize - 1].kill9();
    let leader_client = Client::connect(leader_address).await.unwrap();
    leader_client
        .broker_stub()
        .produce(produce("t", 5000))
        .await
        .unwrap();
    let changes = TopicConfig {
        max_message_bytes: Some(1000),
        ..TopicConfig::default()
    };
    Admin::new(leader_client.clone())
        .alter_topic_config("t", changes)
        .await
        .unwrap();
    let err = leader_client
        .broker_stub()
        .produce(produce("t", 5000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Back, it copies the older batch and shows the new setting.
    cluster.brokers[follower as usize - 1].restart();
    let follower_address = &addresses[follower as usize - 1];
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_end_on(follower_address, "t").await != Some(1) {
        assert!(Instant::now() < deadline, "the follower did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for address in &addresses {
        let client = Client::connect(address).await.unwrap();
        let described = Admin::new(client).describe_topic("t").await.unwrap();
        let config = described.topic.unwrap().config.unwrap();
        assert_eq!(config.max_message_bytes, Some(1000), "{address}");
    }
}
