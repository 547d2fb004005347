//! Replica moves on a running cluster of real processes: a 4th broker takes its share
//! of a topic's replicas and leaders while an acks=all producer writes, a
//! decommissioned broker gives all of its away before it stops, and a move cut short
//! by killing the receiving broker and the cluster-manager leader rolls back, then
//! finishes once the broker is back. Every acknowledged record reads back once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pubsub_client::{Acks, Client, Producer, ProducerConfig};
use pubsub_proto::v1;
use pubsub_tests::{Cluster, pubsub};

use crate::cluster::status;
use crate::create_replicated;
use crate::ledger::{Ack, Tally, read_back, send};

const PARTITIONS: u32 = 12;

fn acks_all() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(2),
        retries: 60,
        ..ProducerConfig::default()
    }
}

/// Writes a record to every partition per round until `stop`; returns the
/// acknowledged records and how many sends failed for good, and prints the longest
/// round (the stall a client saw while leaderships moved).
async fn write_until(producer: Producer, stop: Arc<AtomicBool>) -> (Vec<Ack>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    let mut seq = 0u32;
    let mut longest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        let mut pending = Vec::new();
        for partition in 0..PARTITIONS {
            let value = format!("p{partition}-{seq:06}");
            pending.push((value.clone(), send(&producer, partition, value).await));
        }
        for (value, delivery) in pending {
            match delivery.wait().await {
                Ok(stored) => acked.push((stored.partition, stored.offset.unwrap(), value)),
                Err(e) => {
                    eprintln!("send of {value} failed: {e}");
                    failed += 1;
                }
            }
        }
        seq += 1;
        longest = longest.max(round.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{seq} rounds of {PARTITIONS} acks=all records; the longest took {longest:?}");
    (acked, failed)
}

/// The cluster status from the first live cluster manager that answers.
async fn any_status(cluster: &Cluster) -> Option<v1::ClusterStatusResponse> {
    for address in cluster.live_managers() {
        if let Some(status) = status(&address).await {
            return Some(status);
        }
    }
    None
}

/// Per broker id: (replicas held, partitions led).
fn load(status: &v1::ClusterStatusResponse) -> HashMap<u32, (u32, u32)> {
    status
        .brokers
        .iter()
        .filter_map(|b| Some((b.broker.as_ref()?.id, (b.replicas, b.partitions_led))))
        .collect()
}

/// Waits until `done` holds of the status with no move under way; returns how long
/// that took and the status.
async fn settle(
    cluster: &Cluster,
    within: Duration,
    done: impl Fn(&HashMap<u32, (u32, u32)>) -> bool,
) -> (Duration, v1::ClusterStatusResponse) {
    let start = Instant::now();
    loop {
        if let Some(status) = any_status(cluster).await
            && status.moving.is_empty()
            && done(&load(&status))
        {
            return (start.elapsed(), status);
        }
        if start.elapsed() > within {
            let status = any_status(cluster).await;
            panic!(
                "not settled within {within:?}: {:?}",
                status.map(|s| load(&s))
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `pubsub cluster ARGS...` against a live cluster manager.
fn cli(cluster: &Cluster, args: &[&str]) -> String {
    let manager = cluster.live_managers()[0].clone();
    let mut all = vec!["cluster", "--cluster-manager", &manager];
    all.extend_from_slice(args);
    let output = pubsub(cluster.brokers[1].address(), &all, b"");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_broker_takes_its_share_and_a_decommissioned_one_gives_all_away() {
    let mut cluster = Cluster::start("3s");
    let (client, _) = create_replicated(&cluster, "moves", PARTITIONS).await;
    let producer = Producer::new(client, "moves", acks_all()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(producer, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 36 replicas and 12 leaders over 4 brokers: 9 and 3 each.
    cluster.add_broker();
    let even = |load: &HashMap<u32, (u32, u32)>| (1..=4).all(|b| load.get(&b) == Some(&(9, 3)));
    let (took, _) = settle(&cluster, Duration::from_secs(120), even).await;
    println!("a 4th broker took 9 replicas and 3 leaders in {took:?}");

    // Broker 1 leaves: its 9 replicas go to the other three, then it stops.
    let answer = cli(&cluster, &["decommission", "1"]);
    assert!(answer.contains("decommissioning broker 1"), "{answer}");
    let drained = |load: &HashMap<u32, (u32, u32)>| {
        load.get(&1) == Some(&(0, 0)) && (2..=4).all(|b| load.get(&b).is_some_and(|l| l.0 == 12))
    };
    let (took, status) = settle(&cluster, Duration::from_secs(120), drained).await;
    println!("broker 1 was drained in {took:?}");
    let shown = cli(&cluster, &["status"]);
    assert!(shown.contains("draining"), "{shown}");
    cluster.brokers[0].terminate();
    assert!(
        status.under_replicated.is_empty(),
        "{:?}",
        status.under_replicated
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await.unwrap();
    let reader = Client::connect(cluster.brokers[1].address()).await.unwrap();
    let tally = Tally::check(&acked, &read_back(&reader, "moves").await);
    println!("{tally} ({failed} sends failed)");
    tally.assert_intact();
    assert_eq!(failed, 0, "the producer saw no failure for good");
    let described = pubsub(
        cluster.brokers[1].address(),
        &["describe", "moves", "--output", "json"],
        b"",
    );
    let description: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    for p in description["partitions"].as_array().unwrap() {
        let replicas = p["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "RF 3 kept: {p}");
        assert!(
            !replicas.contains(&1.into()),
            "nothing left on broker 1: {p}"
        );
    }
}

/// The cluster-manager leader's node id, as a live node reports it.
async fn manager_leader(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(leader) = any_status(cluster).await.and_then(|s| s.leader_id) {
            return leader;
        }
        assert!(Instant::now() < deadline, "no cluster-manager leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_cut_short_by_killing_its_receiver_and_the_manager_leader_rolls_back() {
    let mut cluster = Cluster::start("3s");
    let partitions = 6;
    let (client, _) = create_replicated(&cluster, "cut", partitions).await;
    let producer = Producer::new(client, "cut", acks_all()).await.unwrap();
    // About 1 MiB per partition, so a move at 64 KiB/s takes many seconds.
    let mut pending = Vec::new();
    for seq in 0..400 {
        for partition in 0..partitions {
            let value = format!("p{partition}-{seq:06}-{}", "x".repeat(2_500));
            pending.push((value.clone(), send(&producer, partition, value).await));
        }
    }
    let mut acked = Vec::new();
    for (value, delivery) in pending {
        let stored = delivery.wait().await.unwrap();
        acked.push((stored.partition, stored.offset.unwrap(), value));
    }
    let settings = cli(&cluster, &["balance", "--move-rate", "64KiB"]);
    assert!(settings.contains("65536 bytes/s"), "{settings}");

    cluster.add_broker();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = any_status(&cluster).await;
        if status.is_some_and(|s| {
            s.moving.iter().any(|p| {
                p.partition
                    .as_ref()
                    .is_some_and(|p| p.adding_replicas.contains(&4))
            })
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no move to broker 4 started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = manager_leader(&cluster).await;
    cluster.managers[leader as usize - 1].kill9();
    cluster.brokers[3].kill9();

    // The new leader sees broker 4 fenced and rolls every move to it back: the
    // partitions keep their three in-sync replicas.
    let rolled_back = |load: &HashMap<u32, (u32, u32)>| load.get(&4) == Some(&(0, 0));
    let (took, status) = settle(&cluster, Duration::from_secs(60), rolled_back).await;
    println!("moves to the killed broker rolled back in {took:?}");
    assert!(
        status.under_replicated.is_empty(),
        "{:?}",
        status.under_replicated
    );

    // Both come back; unthrottled, the balance finishes.
    cluster.managers[leader as usize - 1].restart_after_kill9();
    cluster.brokers[3].restart_after_kill9();
    cli(&cluster, &["balance", "--move-rate", "0"]);
    let balanced = |load: &HashMap<u32, (u32, u32)>| {
        (1..=4).all(|b| load.get(&b).is_some_and(|l| (4..=5).contains(&l.0)))
    };
    let (took, status) = settle(&cluster, Duration::from_secs(90), balanced).await;
    println!("balanced after the restart in {took:?}");
    assert!(
        status.under_replicated.is_empty(),
        "{:?}",
        status.under_replicated
    );
    let reader = Client::connect(cluster.brokers[1].address()).await.unwrap();
    let tally = Tally::check(&acked, &read_back(&reader, "cut").await);
    println!("{tally}");
    tally.assert_intact();
}

/// Copy rate of moves, unthrottled and throttled: 12 partitions of 2 MiB at RF 1 on 3
/// brokers; a 4th broker takes 3 of them at full speed, then is decommissioned with
/// the copy rate capped at 256 KiB/s per receiving broker, and gives them back, one to
/// each of the others. Prints both times (each includes up to 2 s until the next
/// balance check and the in-sync wait); every record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_copy_at_full_speed_or_at_the_move_rate() {
    const RECORD: usize = 1024;
    const PER_PARTITION: usize = 2048;
    let mut cluster = Cluster::start("3s");
    crate::cluster::wait_for_brokers(&cluster).await;
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    pubsub_client::Admin::new(client.clone())
        .create_topic(pubsub_client::NewTopic {
            name: "rate".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let producer = Producer::new(client, "rate", ProducerConfig::default())
        .await
        .unwrap();
    let mut acked = Vec::new();
    for seq in 0..PER_PARTITION {
        let mut pending = Vec::new();
        for partition in 0..PARTITIONS {
            let value = format!("p{partition}-{seq:06}-{}", "x".repeat(RECORD - 16));
            pending.push((value.clone(), send(&producer, partition, value).await));
        }
        for (value, delivery) in pending {
            let stored = delivery.wait().await.unwrap();
            acked.push((stored.partition, stored.offset.unwrap(), value));
        }
    }
    let partition_mib = (PER_PARTITION * RECORD) as f64 / f64::from(1 << 20);
    let rate = |copied: f64, took: Duration| copied / took.as_secs_f64();

    // Leaders report their logs' sizes in heartbeats, to within a tenth or 1 MiB: each
    // broker leads 4 partitions of 2 MiB.
    let reported = Instant::now();
    loop {
        let bytes: Vec<u64> = any_status(&cluster)
            .await
            .map(|s| s.brokers.iter().map(|b| b.replica_bytes).collect())
            .unwrap_or_default();
        if bytes.len() == 3 && bytes.iter().all(|&b| b >= 4 << 20) {
            println!("sizes reported within {:?}: {bytes:?}", reported.elapsed());
            break;
        }
        assert!(
            reported.elapsed() < Duration::from_secs(30),
            "sizes not reported: {bytes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(cli(&cluster, &["status"]).contains("MiB"));

    cluster.add_broker();
    let even =
        |load: &HashMap<u32, (u32, u32)>| (1..=4).all(|b| load.get(&b).is_some_and(|l| l.0 == 3));
    let (took, _) = settle(&cluster, Duration::from_secs(120), even).await;
    println!(
        "unthrottled: 3 partitions of {partition_mib} MiB into one broker in {took:?}: {:.1} MiB/s",
        rate(3.0 * partition_mib, took)
    );

    cli(&cluster, &["balance", "--move-rate", "256KiB"]);
    cli(&cluster, &["decommission", "4"]);
    let back = |load: &HashMap<u32, (u32, u32)>| load.get(&4).is_some_and(|l| l.0 == 0);
    let (took, _) = settle(&cluster, Duration::from_secs(120), back).await;
    println!(
        "at --move-rate 256KiB: one partition of {partition_mib} MiB into each of 3 brokers in {took:?}: {:.2} MiB/s per broker",
        rate(partition_mib, took)
    );

    let reader = Client::connect(cluster.brokers[1].address()).await.unwrap();
    let tally = Tally::check(&acked, &read_back(&reader, "rate").await);
    println!("{tally}");
    tally.assert_intact();
}
