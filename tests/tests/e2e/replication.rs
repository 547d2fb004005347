//! Replication across three broker processes: acknowledged (acks=all) records survive
//! a kill -9 of a partition leader, and a restarted follower catches up and rejoins
//! the in-sync replicas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pubsub_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, StartPosition,
};
use pubsub_tests::Cluster;

use crate::cluster::wait_for_brokers;

const PARTITIONS: u32 = 3;

/// Sends `count` records to each partition, numbered from `first`; returns the
/// acknowledged ones as (partition, offset, value).
async fn produce(producer: &Producer, first: u32, count: u32) -> (Vec<(u32, u64, String)>, usize) {
    let mut pending = Vec::new();
    for seq in first..first + count {
        for partition in 0..PARTITIONS {
            let value = format!("p{partition}-{seq:06}");
            let record = ProducerRecord {
                partition: Some(partition),
                ..ProducerRecord::value(value.clone())
            };
            pending.push((value, producer.send(record).await.unwrap()));
        }
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    for (value, delivery) in pending {
        match delivery.wait().await {
            Ok(stored) => acked.push((stored.partition, stored.offset.unwrap(), value)),
            Err(_) => failed += 1,
        }
    }
    (acked, failed)
}

async fn read_all(client: &Client) -> HashMap<u32, Vec<(u64, String)>> {
    let mut consumer = Consumer::new(client.clone(), "r", ConsumerConfig::default());
    consumer.assign_all(StartPosition::Earliest).await.unwrap();
    let mut out: HashMap<u32, Vec<(u64, String)>> = HashMap::new();
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet < 3 && Instant::now() < deadline {
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        if records.is_empty() && consumer.lag() == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        for r in records {
            out.entry(r.partition).or_default().push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_leader_kill_9() {
    let mut cluster = Cluster::start("2s");
    wait_for_brokers(&cluster).await;
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let created = Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "r".into(),
            partitions: PARTITIONS,
            replication_factor: 3,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(2),
        retries: 30,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), "r", config).await.unwrap();
    let (mut acked, _) = produce(&producer, 0, 300).await;
    assert_eq!(
        acked.len(),
        900,
        "everything is acknowledged while all brokers run"
    );

    // Kill the leader of partition 1, but never the broker the client bootstraps from.
    let leader = created.partitions[1].leader.unwrap();
    let victim = if leader == 1 {
        created
            .partitions
            .iter()
            .find_map(|p| p.leader.filter(|&l| l != 1))
            .unwrap()
    } else {
        leader
    };
    let writing = tokio::spawn({
        let producer = producer.clone();
        async move { produce(&producer, 300, 300).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.brokers[victim as usize - 1].kill9();
    let (more, failed) = writing.await.unwrap();
    acked.extend(more);

    let stored = read_all(&client).await;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut reordered = 0;
    for partition in 0..PARTITIONS {
        let records = stored.get(&partition).cloned().unwrap_or_default();
        let by_offset: HashMap<u64, &String> = records.iter().map(|(o, v)| (*o, v)).collect();
        for (p, offset, value) in acked.iter().filter(|a| a.0 == partition) {
            if by_offset.get(offset) != Some(&value) {
                lost += 1;
                eprintln!("lost {value} at {p}-{offset}");
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut last = None;
        for (_, value) in &records {
            if !seen.insert(value.clone()) {
                duplicated += 1;
                continue;
            }
            if last.as_ref().is_some_and(|l: &String| l > value) {
                reordered += 1;
            }
            last = Some(value.clone());
        }
    }
    println!(
        "acked {}, lost {lost}, duplicated {duplicated}, reordered {reordered} ({failed} sends failed)",
        acked.len()
    );
    assert_eq!(lost, 0, "an acknowledged record was lost");
    assert_eq!(reordered, 0, "records were reordered");

    // The killed broker comes back, catches up and rejoins the in-sync replicas.
    cluster.brokers[victim as usize - 1].restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let described = Admin::new(client.clone())
            .describe_topic("r")
            .await
            .unwrap();
        let partitions = described.topic.unwrap().partitions;
        if partitions.iter().all(|p| p.in_sync_replicas.len() == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted broker did not rejoin the ISR: {partitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
