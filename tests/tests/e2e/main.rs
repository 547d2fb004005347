//! End-to-end tests over real `pubsubd standalone` processes on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod api_docs;
mod auth;
mod bench;
mod cli;
mod cli_contracts;
mod client;
mod clock;
mod cluster;
mod consumer;
mod consumer_failover;
mod consumer_integrity;
mod consumer_more;
mod consumer_sharing;
mod contracts;
mod docs;
mod errors;
mod failover;
mod fsync;
mod full_disk;
mod grpc;
mod kafka;
mod kafka_groups;
mod ledger;
mod metrics;
mod moves;
mod overload;
mod partition;
mod powercut;
mod records;
mod replication;
mod rolling;
mod routing;
mod scale;
mod stores;
mod tls;
mod topic_config;

use std::collections::HashMap;
use std::time::Duration;

use pubsub_client::{
    Admin, Client, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, StartPosition,
};
use pubsub_proto::v1::TopicDescription;
use pubsub_tests::Cluster;

/// The names of every topic, sorted.
pub async fn topic_names(admin: &pubsub_client::Admin) -> Vec<String> {
    let topics = admin.list_topics().await.unwrap();
    topics.into_iter().map(|t| t.name).collect()
}

/// Every record of `topic` from the beginning up to the current end.
pub async fn read_everything(client: &Client, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(client.clone(), topic, ConsumerConfig::default());
    consumer.assign_all(StartPosition::Earliest).await.unwrap();
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {} of {expected} records",
            records.len()
        );
        records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    // Nothing more arrives.
    assert!(
        consumer
            .poll(Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    // Partitions interleave as their fetches complete; compare in (partition, offset) order.
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Checks that every key's values appear in the order `value-N` was sent.
pub fn assert_per_key_order(records: &[ConsumerRecord]) {
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    for record in records {
        let key = record.key.as_ref().unwrap().to_vec();
        let value = std::str::from_utf8(record.value.as_ref().unwrap()).unwrap();
        let n: u64 = value.rsplit('-').next().unwrap().parse().unwrap();
        if let Some(previous) = last.insert(key, n) {
            assert!(previous < n, "value {n} after {previous} for the same key");
        }
    }
}

/// Waits for `cluster`'s three brokers, then creates `name` with `partitions`
/// partitions of 3 replicas through a client bootstrapped from broker 1.
pub async fn create_replicated(
    cluster: &Cluster,
    name: &str,
    partitions: u32,
) -> (Client, TopicDescription) {
    cluster::wait_for_brokers(cluster).await;
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let created = create_replicated_on(&client, name, partitions).await;
    (client, created)
}

/// Creates `name` with `partitions` partitions of 3 replicas through `client`.
pub async fn create_replicated_on(
    client: &Client,
    name: &str,
    partitions: u32,
) -> TopicDescription {
    let topic = NewTopic {
        name: name.into(),
        partitions,
        replication_factor: 3,
        ..NewTopic::default()
    };
    Admin::new(client.clone())
        .create_topic(topic)
        .await
        .unwrap()
}
