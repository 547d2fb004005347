//! How clients find the cluster and its leaders: a bootstrap list survives a dead
//! server, a client learns the other brokers from any live one, and a read started
//! after an acks=all acknowledgement sees the record whichever broker it asks; a
//! ProduceStream refused by a follower names the leader.

use std::time::{Duration, Instant};

use pubsub_client::{Acks, Admin, PartitionId, Producer, ProducerConfig, ProducerRecord};
use pubsub_tests::{Cluster, pubsub, pubsub_with_env};

use crate::create_replicated;

/// The output of a `pubsub` command that must succeed.
fn succeeded(output: std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_list_with_a_dead_server_writes_and_reads_through_the_live_ones() {
    let mut cluster = Cluster::start("2s");
    create_replicated(&cluster, "boot", 3).await;
    cluster.brokers[0].kill9();
    let dead = cluster.brokers[0].address().to_string();
    let servers = format!("{dead},{}", cluster.brokers[1].address());
    let lines: String = (0..30).map(|i| format!("r{i}\n")).collect();

    let started = Instant::now();
    let output = pubsub(
        &servers,
        &["write", "boot", "--acks", "all"],
        lines.as_bytes(),
    );
    succeeded(output, "write with a dead first server");
    let took = started.elapsed();
    println!("wrote through {servers} in {} ms", took.as_millis());
    // The dead broker's partitions move after its 2 s lease; nothing waits much longer.
    assert!(took < Duration::from_secs(15), "write took {took:?}");

    let servers = format!("{dead},{}", cluster.brokers[2].address());
    let env = [("PUBSUB_SERVER", servers.as_str())];
    let read = succeeded(pubsub_with_env(&env, &["read", "boot"], b""), "read");
    let mut values: Vec<&str> = read.lines().collect();
    values.sort_unstable();
    let mut expected: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    expected.sort_unstable();
    assert_eq!(values, expected);

    let every = format!("{dead},127.0.0.1:1");
    let output = pubsub(&every, &["list"], b"");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach any server of {every}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_writing_after_its_only_bootstrap_broker_is_killed() {
    const PARTITIONS: u32 = 3;
    let mut cluster = Cluster::start("2s");
    let (client, _) = create_replicated(&cluster, "lone", PARTITIONS).await;
    let config = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), "lone", config).await.unwrap();
    let send_all = |first: u32| {
        let producer = producer.clone();
        async move {
            let mut pending = Vec::new();
            for i in first..first + 30 {
                let record = ProducerRecord {
                    partition: Some(PartitionId(i % PARTITIONS)),
                    ..ProducerRecord::value(format!("r{i}"))
                };
                pending.push(producer.send(record).await.unwrap());
            }
            for delivery in pending {
                delivery.wait().await.unwrap();
            }
        }
    };
    send_all(0).await;
    // The one server the client was given dies; it knows the others from the metadata.
    cluster.brokers[0].kill9();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), send_all(30))
        .await
        .expect("writes go on through the live brokers");
    println!(
        "wrote past the bootstrap broker's death in {} ms",
        started.elapsed().as_millis()
    );
    let described = Admin::new(client).describe_topic("lone").await.unwrap();
    let partitions = described.topic.unwrap().partitions;
    assert!(partitions.iter().all(|p| p.leader.is_some_and(|l| l != 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_an_acks_all_write_sees_every_record_through_a_follower() {
    let cluster = Cluster::start("6s");
    let (_, created) = create_replicated(&cluster, "ryw", 1).await;
    let leader = created.partitions[0].leader.unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let server = cluster.brokers[follower as usize - 1].address();
    // The follower learns of the topic a moment after the broker that created it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pubsub(server, &["describe", "ryw"], b"").status.success() {
        assert!(Instant::now() < deadline, "follower never saw the topic");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut written = 0;
    for round in 0..6 {
        let lines: String = (0..50).map(|i| format!("round{round}-{i}\n")).collect();
        let output = pubsub(server, &["write", "ryw", "--acks", "all"], lines.as_bytes());
        succeeded(output, "write");
        written += 50;
        let read = succeeded(pubsub(server, &["read", "ryw"], b""), "read");
        assert_eq!(
            read.lines().count(),
            written,
            "round {round}: a read through follower {follower} missed acknowledged records"
        );
    }
}

/// A ProduceStream request sent to a broker that does not lead the partition is
/// answered with the leader's address in its `ErrorStatus`, as a unary Produce is in
/// its metadata, so a client written from the protos can follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_stream_at_a_follower_names_the_leader() {
    use pubsub_proto::v1;
    use tokio_stream::StreamExt;

    let cluster = Cluster::start("2s");
    let (_, created) = create_replicated(&cluster, "hint", 1).await;
    let leader = created.partitions[0].leader.unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    let address = |id: u32| cluster.brokers[id as usize - 1].address().to_string();
    let mut stub =
        v1::broker_client::BrokerClient::connect(format!("http://{}", address(follower)))
            .await
            .unwrap();
    let request = v1::ProduceRequest {
        topic: "hint".into(),
        partition: 0,
        acks: v1::Acks::Leader as i32,
        batches: vec![crate::errors::one_batch(10)],
        correlation_id: 7,
    };
    // The follower may learn of the new topic a moment after the broker that created it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let mut answers = stub
            .produce_stream(tokio_stream::iter(vec![request.clone()]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.next().await.unwrap().unwrap();
        let error = answer.error.expect("a follower refuses the write");
        if error.code != tonic::Code::NotFound as i32 || Instant::now() > deadline {
            break error;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        error.code,
        tonic::Code::Unavailable as i32,
        "{}",
        error.message
    );
    assert_eq!(
        error.leader_address,
        Some(address(leader)),
        "{}",
        error.message
    );
}
