//! A full disk under `pubsubd standalone` (issue 11), on a small tmpfs and on a small
//! ext4 on a loop device: writes are refused with RESOURCE_EXHAUSTED naming the path,
//! every acknowledged record is read back (lost 0), before and after a kill -9 and a
//! restart on the still-full disk; the server never dies (SIGBUS), reads keep
//! working, and writes resume by themselves once space is freed.

use std::time::{Duration, Instant};

use pubsub_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, StartPosition,
};
use pubsub_tests::disk::SmallDisk;
use pubsub_tests::{Server, free_port};

/// (partition, offset, value) of an acknowledged record.
type Acked = (u32, u64, String);

fn value(seq: u64) -> String {
    format!("{seq:010}-{}", "v".repeat(1000))
}

/// Sends records until one is refused; returns the acknowledged ones and the refusal.
async fn produce_until_refused(
    producer: &Producer,
    seq: &mut u64,
) -> (Vec<Acked>, pubsub_client::Error) {
    let mut acked = Vec::new();
    let limit = *seq + 200_000;
    loop {
        assert!(*seq < limit, "the disk never filled");
        let mut pending = Vec::new();
        for _ in 0..100 {
            let record = ProducerRecord::keyed(format!("k{seq}"), value(*seq));
            pending.push((value(*seq), producer.send(record).await.unwrap()));
            *seq += 1;
        }
        let mut refused = None;
        for (value, delivery) in pending {
            match delivery.wait().await {
                Ok(stored) => acked.push((stored.partition, stored.offset.unwrap(), value)),
                Err(e) => refused = Some(e),
            }
        }
        if let Some(e) = refused {
            return (acked, e);
        }
    }
}

/// Sends `count` records that must all be acknowledged.
async fn produce_all(producer: &Producer, seq: &mut u64, count: u64) -> Vec<Acked> {
    let mut pending = Vec::new();
    for _ in 0..count {
        let record = ProducerRecord::keyed(format!("k{seq}"), value(*seq));
        pending.push((value(*seq), producer.send(record).await.unwrap()));
        *seq += 1;
    }
    let mut acked = Vec::new();
    for (value, delivery) in pending {
        let stored = delivery.wait().await.unwrap();
        acked.push((stored.partition, stored.offset.unwrap(), value));
    }
    acked
}

/// Reads both partitions to their ends and counts the acknowledged records missing.
async fn lost(client: &Client, acked: &[Acked]) -> usize {
    let mut consumer = Consumer::new(client.clone(), "full", ConsumerConfig::default());
    consumer.assign_all(StartPosition::Earliest).await.unwrap();
    let mut stored = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 3 {
        assert!(Instant::now() < deadline, "reads did not reach the end");
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        if records.is_empty() && consumer.lag() == 0 {
            quiet += 1;
        }
        for r in records {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            stored.insert((r.partition, r.offset), value);
        }
    }
    acked
        .iter()
        .filter(|(p, o, v)| stored.get(&(*p, *o)) != Some(v))
        .count()
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::Leader,
        retries: 2,
        retry_backoff: Duration::from_millis(10),
        ..ProducerConfig::default()
    }
}

async fn full_disk_loses_nothing(disk: SmallDisk, kind: &str) {
    let data = disk.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    // The floor off: this is about the disk really filling up.
    let flags = ["--min-free-bytes", "0", "--reserve-bytes", "2MiB"];
    let mut server = Server::start_with(&data, &listen, &flags);
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "full".into(),
            partitions: 2,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    disk.take("spare", 3 << 20);
    let producer = Producer::new(client.clone(), "full", producer_config())
        .await
        .unwrap();
    let mut seq = 0;
    let (mut acked, refused) = produce_until_refused(&producer, &mut seq).await;
    println!("{kind}: acknowledged {} then: {refused}", acked.len());
    assert_eq!(
        refused.code(),
        Some(tonic::Code::ResourceExhausted),
        "{refused}"
    );
    assert!(refused.to_string().contains("no space left"), "{refused}");
    assert!(
        refused.to_string().contains(&data.display().to_string()),
        "{refused}"
    );
    assert!(
        server.exited().is_none(),
        "the server died: {:?}",
        server.exited()
    );
    assert_eq!(lost(&client, &acked).await, 0, "reads on a full disk");

    // Space comes back: writes resume without a restart.
    disk.free("spare");
    let producer = Producer::new(client.clone(), "full", producer_config())
        .await
        .unwrap();
    acked.extend(produce_all(&producer, &mut seq, 300).await);
    let (more, refused) = produce_until_refused(&producer, &mut seq).await;
    acked.extend(more);
    assert_eq!(
        refused.code(),
        Some(tonic::Code::ResourceExhausted),
        "{refused}"
    );

    // A crash and a restart on the still-full disk: everything is there.
    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    let missing = lost(&client, &acked).await;
    println!(
        "{kind}: acknowledged {}, lost {missing} after a restart on a full disk",
        acked.len()
    );
    assert_eq!(missing, 0);
    assert!(
        server.exited().is_none(),
        "the server died: {:?}",
        server.exited()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_loses_no_acknowledged_record() {
    if let Some(disk) = SmallDisk::tmpfs(24) {
        full_disk_loses_nothing(disk, "tmpfs").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ext4_loses_no_acknowledged_record() {
    if let Some(disk) = SmallDisk::ext4(48) {
        full_disk_loses_nothing(disk, "ext4").await;
    }
}

/// With the default floor on, the broker stops before the disk is full: the Raft log
/// and the consumer manager's database, on the same disk, keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_space_floor_keeps_metadata_and_subscriptions_writable() {
    let Some(disk) = SmallDisk::tmpfs(32) else {
        return;
    };
    let data = disk.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--min-free-bytes", "8MiB", "--reserve-bytes", "2MiB"];
    let mut server = Server::start_with(&data, &listen, &flags);
    let client = Client::connect(server.address()).await.unwrap();
    let admin = Admin::new(client.clone());
    let topic = |name: &str| NewTopic {
        name: name.into(),
        partitions: 2,
        ..NewTopic::default()
    };
    admin.create_topic(topic("full")).await.unwrap();
    let producer = Producer::new(client.clone(), "full", producer_config())
        .await
        .unwrap();
    let mut seq = 0;
    let (acked, refused) = produce_until_refused(&producer, &mut seq).await;
    println!("floor: acknowledged {} then: {refused}", acked.len());
    assert_eq!(
        refused.code(),
        Some(tonic::Code::ResourceExhausted),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("disk almost full"),
        "{refused}"
    );

    // Metadata and subscriptions still write (and flush) on the same disk.
    admin.create_topic(topic("after")).await.unwrap();
    let subs = pubsub_client::Subscriptions::new(client.clone());
    let options = pubsub_proto::v1::SubscriptionOptions {
        start: Some(pubsub_proto::v1::subscription_options::Start::Earliest(
            true,
        )),
        ..Default::default()
    };
    subs.subscribe("full", "audit", options).await.unwrap();
    let read = subs
        .read("audit", "", 0, 100, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!read.records.is_empty());
    let ids: Vec<(u32, u64)> = read
        .records
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    subs.ack("audit", "", 0, &ids).await.unwrap();

    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    assert_eq!(lost(&client, &acked).await, 0);
}

/// The disk fills under the metadata (the floor off, another program fills it): the
/// Raft log fails its writes cleanly, and the cluster manager works again once space
/// is freed, without a restart of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_recovers_once_space_is_freed() {
    let Some(disk) = SmallDisk::tmpfs(32) else {
        return;
    };
    let data = disk.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--min-free-bytes", "0", "--reserve-bytes", "0"];
    let mut server = Server::start_with(&data, &listen, &flags);
    let client = Client::connect(server.address()).await.unwrap();
    let admin = Admin::new(client.clone());
    let topic = |name: &str| NewTopic {
        name: name.into(),
        partitions: 1,
        ..NewTopic::default()
    };
    admin.create_topic(topic("before")).await.unwrap();

    disk.take("filler", 64 << 20);
    // Write metadata until the Raft log refuses (sled first fills the space its files
    // already hold; the broker may fail to host a new topic's directory before that).
    let mut refused = None;
    for i in 0..300 {
        if let Err(e) = admin.create_topic(topic(&format!("during-{i}"))).await {
            println!("create topic on a full disk: {e}");
            // The broker may fail to open the new topic's directory first.
            if !e.to_string().contains("cannot open it") {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        refused.is_some(),
        "the full disk never refused a metadata write"
    );

    disk.free("filler");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.create_topic(topic("after")).await {
            Ok(_) => break,
            // An earlier try may have been committed although its answer was lost.
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "metadata never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // A topic the broker could not open then is opened now, by itself.
    let producer = Producer::new(client.clone(), "during-0", producer_config())
        .await
        .unwrap();
    loop {
        let sent = producer.send(ProducerRecord::value("x")).await.unwrap();
        match sent.wait().await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "during-0 never opened: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let topics = admin.list_topics().await.unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.contains(&"before") && names.contains(&"after"),
        "{names:?}"
    );
    assert!(server.exited().is_none());
}
