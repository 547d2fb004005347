//! Clients through a failover: a paused leader answers the writes it holds once it
//! learns it was deposed, and acks=all writers stall briefly when a leader dies.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pubsub_client::{
    Acks, Admin, Client, PartitionId, Producer, ProducerConfig, ProducerRecord, Result,
};
use pubsub_proto::v1::{self, broker_client::BrokerClient};
use pubsub_storage::{BatchBuilder, Compression, ProducerStamp};
use pubsub_tests::Cluster;

use crate::create_replicated;

/// Longest acceptable stall of an acks=all writer after `kill -9` of its partition's
/// leader, with pubsubd's default lease (3 s). Measured 3.1-3.3 s on a quiet machine;
/// the bound leaves room for a loaded CI machine while still failing the old 6 s
/// lease (7.1 s stalls). The figure itself is printed and kept in docs/performance.md.
const STALL_MAX: Duration = Duration::from_millis(6500);

/// Producer settings of the failover tests: acks=all, retries enough to outlast it.
fn acks_all() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(1),
        retries: 60,
        ..ProducerConfig::default()
    }
}

/// Sends one record to every partition and waits for all of them.
async fn round(producer: &Producer, partitions: u32, seq: u32) -> Result<()> {
    let mut pending = Vec::new();
    for partition in 0..partitions {
        let record = ProducerRecord {
            partition: Some(PartitionId(partition)),
            ..ProducerRecord::value(format!("p{partition}-{seq:06}"))
        };
        pending.push(producer.send(record).await?);
    }
    for delivery in pending {
        delivery.wait().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_stall_briefly_when_a_leader_is_killed() {
    const PARTITIONS: u32 = 3;
    let mut cluster = Cluster::start_default();
    let (client, created) = create_replicated(&cluster, "stall", PARTITIONS).await;
    let victim = created
        .partitions
        .iter()
        .find_map(|p| p.leader.filter(|&l| l != 1))
        .unwrap();
    let producer = Producer::new(client.clone(), "stall", acks_all())
        .await
        .unwrap();
    let stop = Instant::now() + Duration::from_secs(16);
    let writer = tokio::spawn(async move {
        let mut longest = Duration::ZERO;
        let mut seq = 0;
        while Instant::now() < stop {
            let started = Instant::now();
            round(&producer, PARTITIONS, seq).await.unwrap();
            longest = longest.max(started.elapsed());
            seq += 1;
        }
        (longest, seq)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.brokers[victim as usize - 1].kill9();
    let (stall, rounds) = writer.await.unwrap();
    println!("failover stall: {} ms ({rounds} rounds)", stall.as_millis());
    assert!(
        stall < STALL_MAX,
        "acks=all writers stalled {stall:?} after the leader's kill -9"
    );
}

/// The leader of `partition` of `topic` as `broker` sees it.
async fn leader_seen_by(broker: &str, topic: &str, partition: usize) -> Option<u32> {
    let client = Client::connect(broker).await.ok()?;
    let described = Admin::new(client).describe_topic(topic).await.ok()?;
    described.topic?.partitions.get(partition)?.leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_answers_its_waiting_write_as_soon_as_it_resumes() {
    let cluster = Cluster::start("3s");
    let (_, created) = create_replicated(&cluster, "paused", 1).await;
    let leader = created.partitions[0].leader.unwrap();
    let followers: Vec<u32> = (1..=3).filter(|&id| id != leader).collect();
    let node = |id: u32| &cluster.brokers[id as usize - 1];
    // A plain stub, without keepalive: only the broker's answer ends the call.
    let mut stub = BrokerClient::connect(format!("http://{}", node(leader).address()))
        .await
        .unwrap();
    let mut builder = BatchBuilder::new();
    builder.push(1, None, Some(b"held"), &[]);
    let batch = builder
        .build(Compression::None, ProducerStamp::NONE)
        .unwrap();
    let request = v1::ProduceRequest {
        topic: "paused".into(),
        partition: 0,
        acks: v1::Acks::All as i32,
        batches: vec![Bytes::from(batch.unwrap())],
        correlation_id: 0,
    };

    // With the followers paused the write is appended on the leader and waits there
    // for the in-sync replicas; then the leader is paused past its lease. The
    // followers' long polls at the leader end (empty) first, so none carries the
    // record away.
    followers.iter().for_each(|&id| node(id).pause());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let write = tokio::spawn(async move { stub.produce(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    node(leader).pause();
    followers.iter().for_each(|&id| node(id).resume());
    let witness = node(followers[0]).address().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = loop {
        match leader_seen_by(&witness, "paused", 0).await {
            Some(id) if id != leader => break id,
            _ => assert!(Instant::now() < deadline, "no new leader while paused"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    node(leader).resume();
    let resumed = Instant::now();

    let answer = tokio::time::timeout(Duration::from_secs(40), write)
        .await
        .expect("the held write is answered")
        .unwrap();
    let waited = resumed.elapsed();
    let status = answer.expect_err("a deposed leader cannot acknowledge acks=all");
    println!(
        "held write answered {} ms after the resume: {status:?}",
        waited.as_millis()
    );
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "{}",
        status.message()
    );
    // Resumed, it learns either the new leader from the metadata or, first, that its
    // own lease ran out while it was paused; either way the client asks elsewhere.
    let hint = status
        .metadata()
        .get("pubsub-leader-address")
        .and_then(|v| v.to_str().ok());
    assert!(
        hint == Some(node(new_leader).address()) || status.message().contains("lost contact"),
        "the answer names the new leader or the lapsed lease: {hint:?} {}",
        status.message()
    );
    assert!(
        waited < Duration::from_secs(5),
        "the resumed ex-leader held the write {waited:?}"
    );
}
