//! A failed fsync is fatal for that log (issue 5): the broker stops acknowledging
//! writes to it, does not retry the fsync and carry on, and recovers the log from disk
//! on restart. The failure is injected with an LD_PRELOAD shim (`fsync_shim.c`) that
//! makes fsync and fdatasync of the broker's files return EIO while a flag file exists.

use std::time::Duration;

use pubsub_client::{
    Admin, Client, Consumer, ConsumerConfig, NewTopic, PartitionId, Producer, ProducerConfig,
    ProducerRecord, StartPosition,
};
use pubsub_tests::Server;

async fn send(producer: &Producer, value: &str) -> pubsub_client::Result<u64> {
    let delivery = producer
        .send(ProducerRecord::value(value.to_string()))
        .await?;
    producer.flush().await?;
    Ok(delivery.wait().await?.offset.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_acknowledging_and_the_log_recovers_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let shim = pubsub_tests::build_shim("fsync_shim", dir.path());
    let flag = dir.path().join("fail-fsync");
    let data = dir.path().join("data");
    let env = vec![
        ("LD_PRELOAD".to_string(), shim.display().to_string()),
        (
            "PUBSUB_FSYNC_FAIL_FLAG".to_string(),
            flag.display().to_string(),
        ),
        (
            "PUBSUB_FSYNC_FAIL_MATCH".to_string(),
            "/broker/durable-".to_string(),
        ),
    ];
    let mut server = Server::start_with_env(&data, "127.0.0.1:0", &[], env);
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "durable".into(),
            partitions: 1,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    let config = ProducerConfig {
        retries: 2,
        retry_backoff: Duration::from_millis(10),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), "durable", config.clone())
        .await
        .unwrap();
    for i in 0..100 {
        assert_eq!(send(&producer, &format!("ok-{i}")).await.unwrap(), i);
    }

    // The disk starts failing: the write is not acknowledged.
    std::fs::write(&flag, b"").unwrap();
    let failed = send(&producer, "unacknowledged").await.unwrap_err();
    println!("produce during the fsync failure: {failed}");
    assert_eq!(failed.code(), Some(tonic::Code::Internal), "{failed}");
    // The disk recovers, but the log does not carry on as if nothing happened: Linux
    // may have dropped the pages it could not write.
    std::fs::remove_file(&flag).unwrap();
    let producer = Producer::new(client.clone(), "durable", config)
        .await
        .unwrap();
    let still = send(&producer, "after").await.unwrap_err();
    assert!(
        still.code() == Some(tonic::Code::Internal) || still.is_retriable(),
        "a failed log took a write: {still}"
    );

    // Restarted, the broker recovers the log from disk with every acknowledged record.
    server.set_env(Vec::new());
    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    let mut consumer = Consumer::new(client.clone(), "durable", ConsumerConfig::default());
    consumer
        .assign(PartitionId(0), StartPosition::Earliest)
        .await
        .unwrap();
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while values.len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of 100",
            values.len()
        );
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    values.extend(
        consumer
            .poll(Duration::from_millis(300))
            .await
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
    );
    let acked: Vec<String> = (0..100).map(|i| format!("ok-{i}")).collect();
    assert_eq!(
        values[..100],
        acked[..],
        "every acknowledged record, in order"
    );
    // The unacknowledged write may have reached the file before its fsync failed;
    // nothing written after the failure can be there.
    assert!(
        values[100..].iter().all(|v| v == "unacknowledged"),
        "unexpected records after recovery: {:?}",
        &values[100..]
    );
    let producer = Producer::new(client, "durable", ProducerConfig::default())
        .await
        .unwrap();
    send(&producer, "healthy again").await.unwrap();
}
