//! A rolling restart of every broker (SIGTERM, then start again) under an acks=all
//! writer: each broker hands its leaderships over before it stops (controlled
//! shutdown), so the writer loses nothing, no write fails for good, and the longest
//! stall is printed (docs/performance.md keeps the figure).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pubsub_client::{Acks, PartitionId, Producer, ProducerConfig, ProducerRecord};
use pubsub_tests::Cluster;

use crate::{create_replicated, read_everything};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    const PARTITIONS: u32 = 3;
    let mut cluster = Cluster::start_default();
    let (client, _) = create_replicated(&cluster, "roll", PARTITIONS).await;
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(1),
        retries: 60,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), "roll", config).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut longest, mut rounds) = (Duration::ZERO, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let mut pending = Vec::new();
                for partition in 0..PARTITIONS {
                    let record = ProducerRecord {
                        partition: Some(PartitionId(partition)),
                        ..ProducerRecord::value(format!("p{partition}-{rounds:06}"))
                    };
                    pending.push(producer.send(record).await.unwrap());
                }
                for delivery in pending {
                    delivery.wait().await.unwrap();
                }
                longest = longest.max(started.elapsed());
                rounds += 1;
            }
            (longest, rounds)
        })
    };
    for index in 0..cluster.brokers.len() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let broker = &mut cluster.brokers[index];
        let stopping = Instant::now();
        tokio::task::block_in_place(|| broker.terminate());
        println!(
            "broker {} stopped in {} ms",
            index + 1,
            stopping.elapsed().as_millis()
        );
        tokio::task::block_in_place(|| broker.restart());
        // Back in the in-sync replicas before the next one goes.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (longest, rounds) = writer.await.unwrap();
    println!(
        "rolling restart of 3 brokers: {rounds} acks=all rounds, longest produce stall {} ms",
        longest.as_millis()
    );
    // Leadership returns to each partition's preferred replica (the last broker
    // restarted led nothing right after the roll).
    let admin = pubsub_client::Admin::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = admin.describe_topic("roll").await.unwrap().topic.unwrap();
        let preferred = topic
            .partitions
            .iter()
            .all(|p| p.leader == p.replicas.first().copied());
        if preferred {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders never returned to preferred replicas: {topic:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = read_everything(&client, "roll", (rounds * PARTITIONS) as usize).await;
    for partition in 0..PARTITIONS {
        let values: Vec<String> = records
            .iter()
            .filter(|r| r.partition == PartitionId(partition))
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        let expected: Vec<String> = (0..rounds)
            .map(|i| format!("p{partition}-{i:06}"))
            .collect();
        assert_eq!(
            values, expected,
            "partition {partition}: lost, duplicated or reordered"
        );
    }
}
