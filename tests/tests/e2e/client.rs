//! The client SDK against a real server: produce, consume, restart with kill -9, delete.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use pubsub_client::{
    Admin, Client, Compression, Consumer, ConsumerConfig, NewTopic, PartitionId, Producer,
    ProducerConfig, ProducerRecord, StartPosition,
};
use pubsub_tests::Server;

use crate::{assert_per_key_order, read_everything};

async fn produce_keyed(
    client: &Client,
    topic: &str,
    count: u64,
    compression: Compression,
) -> Vec<(PartitionId, u64)> {
    let config = ProducerConfig {
        compression,
        linger: Duration::from_millis(2),
        batch_bytes: 16 << 10,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), topic, config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = ProducerRecord::keyed(format!("key-{}", i % 37), format!("value-{i}"));
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut stored = Vec::new();
    for delivery in deliveries {
        let metadata = delivery.wait().await.unwrap();
        stored.push((metadata.partition, metadata.offset.unwrap()));
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_survive_kill_9_and_delete_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    let admin = Admin::new(client.clone());
    admin
        .create_topic(NewTopic {
            name: "orders".into(),
            partitions: 3,
            ..NewTopic::default()
        })
        .await
        .unwrap();

    let stored = produce_keyed(&client, "orders", 10_000, Compression::None).await;
    let unique: HashSet<_> = stored.iter().collect();
    assert_eq!(
        unique.len(),
        10_000,
        "every record gets its own (partition, offset)"
    );
    assert_eq!(
        stored.iter().map(|(p, _)| p).collect::<HashSet<_>>().len(),
        3,
        "keys spread over all partitions"
    );

    let records = read_everything(&client, "orders", 10_000).await;
    assert_eq!(records.len(), 10_000);
    assert_per_key_order(&records);

    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    let after = read_everything(&client, "orders", 10_000).await;
    if after != records {
        let first_difference = after.iter().zip(&records).position(|(a, b)| a != b);
        panic!(
            "after kill -9: {} records, before: {}, first difference at {first_difference:?}: {:?} vs {:?}",
            after.len(),
            records.len(),
            first_difference.map(|i| &after[i]),
            first_difference.map(|i| &records[i]),
        );
    }

    // Appends continue at the old end after the restart.
    let more = produce_keyed(&client, "orders", 10, Compression::None).await;
    for (partition, offset) in more {
        let before = records.iter().filter(|r| r.partition == partition).count() as u64;
        assert!(offset >= before);
    }

    let admin = Admin::new(client.clone());
    admin.delete_topic("orders").await.unwrap();
    let err = admin.describe_topic("orders").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    assert!(
        !dir.path().join("orders-0").exists(),
        "partition data is deleted"
    );
    assert!(admin.list_topics().await.unwrap().is_empty());

    // A deleted topic stays deleted across a restart.
    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    assert!(Admin::new(client).list_topics().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    let admin = Admin::new(client.clone());
    for (name, codec) in [
        ("gz", Compression::Gzip),
        ("lz", Compression::Lz4),
        ("zs", Compression::Zstd),
    ] {
        admin
            .create_topic(NewTopic {
                name: name.into(),
                partitions: 2,
                ..NewTopic::default()
            })
            .await
            .unwrap();
        produce_keyed(&client, name, 2_000, codec).await;
        let records = read_everything(&client, name, 2_000).await;
        assert_eq!(records.len(), 2_000, "{codec:?}");
        assert_per_key_order(&records);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_new_records_and_positions_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "live".into(),
            partitions: 1,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), "live", ProducerConfig::default())
        .await
        .unwrap();
    let first = ProducerRecord {
        timestamp: Some(1_000),
        ..ProducerRecord::value("old")
    };
    producer.send(first).await.unwrap().wait().await.unwrap();

    let mut consumer = Consumer::new(client.clone(), "live", ConsumerConfig::default());
    consumer
        .assign(PartitionId(0), StartPosition::Latest)
        .await
        .unwrap();
    assert_eq!(consumer.positions(), &[(PartitionId(0), 1)]);
    let waiting = tokio::spawn(async move {
        let records = consumer.poll(Duration::from_secs(20)).await.unwrap();
        (records, consumer)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let record = ProducerRecord {
        headers: vec![("trace".into(), Bytes::from_static(b"abc"))],
        timestamp: Some(5_000),
        ..ProducerRecord::keyed("k", "new")
    };
    producer.send(record).await.unwrap().wait().await.unwrap();
    let (records, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 1, "the long poll returns the new record");
    assert_eq!(records[0].value.as_deref(), Some(&b"new"[..]));
    assert_eq!(
        records[0].headers,
        vec![("trace".to_string(), Some(Bytes::from_static(b"abc")))]
    );
    assert_eq!(records[0].timestamp, 5_000);

    let mut by_time = Consumer::new(client.clone(), "live", ConsumerConfig::default());
    by_time
        .assign(PartitionId(0), StartPosition::Timestamp(2_000))
        .await
        .unwrap();
    assert_eq!(by_time.positions(), &[(PartitionId(0), 1)]);
    by_time
        .assign(PartitionId(0), StartPosition::Timestamp(9_000))
        .await
        .unwrap();
    assert_eq!(
        by_time.positions(),
        &[(PartitionId(0), 2)],
        "past every record: the latest offset"
    );
    by_time
        .assign(PartitionId(0), StartPosition::Earliest)
        .await
        .unwrap();
    assert_eq!(by_time.positions(), &[(PartitionId(0), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_with_sigterm_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "t".into(),
            partitions: 2,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    produce_keyed(&client, "t", 500, Compression::None).await;
    server.terminate();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    assert_eq!(read_everything(&client, "t", 500).await.len(), 500);
}
