//! A full disk under `pubsubd standalone` (issue 11), on a small tmpfs and on a small
//! ext4 on a loop device: writes are refused with RESOURCE_EXHAUSTED naming the path,
//! every acknowledged record is read back (lost 0), before and after a kill -9 and a
//! restart on the still-full disk; the server never dies (SIGBUS), reads keep
//! working, and writes resume by themselves once space is freed. The cluster
//! manager's and the consumer manager's databases on a full disk fail their writes
//! cleanly and recover by themselves once space is freed.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_client::{
    Acks, Admin, Client, NewTopic, Producer, ProducerConfig, ProducerRecord, SubscriberStream,
    Subscriptions,
};
use pubsub_proto::v1;
use pubsub_tests::disk::SmallDisk;

use crate::ledger::{self, Ack, read_back};
use pubsub_tests::{Server, binary, free_port};

fn value(seq: u64) -> String {
    format!("{seq:010}-{}", "v".repeat(1000))
}

/// What a run sent: the acknowledged records and the values of refused sends.
#[derive(Default)]
struct Sent {
    acked: Vec<Ack>,
    /// Refused for sure (RESOURCE_EXHAUSTED: nothing was appended that a reader could
    /// see): reading one back is an aborted read.
    refused: Vec<String>,
}

/// Sends records until one is refused; returns the acknowledged ones and the refusal.
async fn produce_until_refused(
    producer: &Producer,
    seq: &mut u64,
    sent: &mut Sent,
) -> (usize, pubsub_client::Error) {
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
                Err(e) => {
                    if e.code() == Some(tonic::Code::ResourceExhausted) {
                        sent.refused.push(value);
                    }
                    // The first failure in send order is the refused batch; batches
                    // sent behind it on its partition end with an unknown outcome.
                    refused = refused.or(Some(e));
                }
            }
        }
        if let Some(e) = refused {
            let count = acked.len();
            sent.acked.extend(acked);
            return (count, e);
        }
    }
}

/// Sends `count` records that must all be acknowledged.
async fn produce_all(producer: &Producer, seq: &mut u64, count: u64) -> Vec<Ack> {
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

/// Reads both partitions to their ends and checks them against what was sent: every
/// acknowledged record at its offset, no refused one anywhere (the checker's lost
/// writes and aborted reads), nothing duplicated or inconsistent.
async fn check_sent(client: &Client, sent: &Sent) -> ledger::Tally {
    let stored = read_back(client, "full").await;
    ledger::Tally::check_with_refused(&sent.acked, &sent.refused, &stored)
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::Leader,
        retries: 2,
        retry_backoff: Duration::from_millis(10),
        ..ProducerConfig::default()
    }
}

/// A standalone server with its data on `disk` and `flags`, and a topic of two
/// partitions.
async fn start_with_topic(disk: &SmallDisk, flags: &[&str], topic: &str) -> (Server, Client) {
    let data = disk.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(&data, &listen, flags);
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: topic.into(),
            partitions: 2,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    (server, client)
}

async fn full_disk_loses_nothing(disk: SmallDisk, kind: &str) {
    let data = disk.path().join("data");
    // The floor off: this is about the disk really filling up.
    let flags = ["--min-free-bytes", "0", "--reserve-bytes", "2MiB"];
    let (mut server, client) = start_with_topic(&disk, &flags, "full").await;
    disk.take("spare", 3 << 20);
    let producer = Producer::new(client.clone(), "full", producer_config())
        .await
        .unwrap();
    let mut seq = 0;
    let mut sent = Sent::default();
    let (acked, refused) = produce_until_refused(&producer, &mut seq, &mut sent).await;
    println!("{kind}: acknowledged {acked} then: {refused}");
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
    let found = check_sent(&client, &sent).await;
    assert!(found.intact(), "reads on a full disk: {found}");

    // Space comes back: writes resume without a restart.
    disk.free("spare");
    let producer = Producer::new(client.clone(), "full", producer_config())
        .await
        .unwrap();
    sent.acked
        .extend(produce_all(&producer, &mut seq, 300).await);
    let (_, refused) = produce_until_refused(&producer, &mut seq, &mut sent).await;
    assert_eq!(
        refused.code(),
        Some(tonic::Code::ResourceExhausted),
        "{refused}"
    );

    // A crash and a restart on the still-full disk: everything is there.
    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    let found = check_sent(&client, &sent).await;
    println!(
        "{kind}: after a restart on a full disk: {found} ({} sends refused)",
        sent.refused.len()
    );
    assert!(found.intact(), "{found}");
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
    let mut sent = Sent::default();
    let (acked, refused) = produce_until_refused(&producer, &mut seq, &mut sent).await;
    println!("floor: acknowledged {acked} then: {refused}");
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
    let found = check_sent(&client, &sent).await;
    assert!(found.intact(), "{found}");
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

/// A record id: partition, offset.
type Id = (u32, u64);

/// Longest one call to the consumer manager may take: it refuses, it never hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

async fn bounded<T>(
    what: &str,
    call: impl Future<Output = pubsub_client::Result<T>>,
) -> pubsub_client::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {CALL_TIMEOUT:?}"))
}

fn earliest() -> v1::SubscriptionOptions {
    v1::SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..Default::default()
    }
}

/// What a pull reader of subscription `audit` was told was acknowledged.
#[derive(Default)]
struct Tally {
    acked: BTreeSet<Id>,
}

impl Tally {
    /// Reads up to `max` records of `audit` and acknowledges the first `ack` of them;
    /// fails if an acknowledged record comes again.
    async fn read_and_ack(
        &mut self,
        subs: &Subscriptions,
        max: u32,
        wait: Duration,
        ack: usize,
    ) -> pubsub_client::Result<usize> {
        let read = bounded("read", subs.read("audit", "", 0, max, wait)).await?;
        let ids: Vec<Id> = read
            .records
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        for id in &ids {
            assert!(
                !self.acked.contains(id),
                "acknowledged record {id:?} delivered again"
            );
        }
        let acking = &ids[..ids.len().min(ack)];
        if !acking.is_empty() {
            bounded("ack", subs.ack("audit", "", 0, acking)).await?;
            self.acked.extend(acking);
        }
        Ok(ids.len())
    }
}

/// A `pubsub subscribe` process following a subscription, and the lines it printed.
struct Follower {
    child: Child,
    lines: Arc<Mutex<BTreeSet<String>>>,
}

impl Follower {
    fn start(server: &str, topic: &str, subscription: &str) -> Follower {
        let mut child = Command::new(binary("pubsub"))
            .args(["--server", server, "subscribe", topic, "-s", subscription])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(BTreeSet::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().insert(line);
            }
        });
        Follower { child, lines }
    }

    /// Waits until it printed `count` distinct records.
    async fn wait_for(&mut self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let printed = self.lines.lock().unwrap().len();
            if printed >= count {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the subscriber exited after printing {printed} of {count}"
            );
            assert!(
                Instant::now() < deadline,
                "the subscriber printed {printed} of {count}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Takes `count` records from a push stream, acknowledging each.
async fn drain(stream: &mut SubscriberStream, count: usize) {
    for _ in 0..count {
        let record = tokio::time::timeout(CALL_TIMEOUT, stream.next_record())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        stream.ack(record.partition, record.offset).await.unwrap();
    }
}

/// Writes to the consumer manager (new subscriptions, reads and acks of `audit`)
/// until it refuses; returns the refusal.
async fn write_until_refused(subs: &Subscriptions, tally: &mut Tally) -> pubsub_client::Error {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut round = 0;
    loop {
        round += 1;
        assert!(
            Instant::now() < deadline,
            "the consumer manager never refused a write on a full disk ({round} rounds)"
        );
        let name = format!("during-{round}");
        if let Err(e) = bounded("subscribe", subs.subscribe("subs", &name, earliest())).await {
            println!("subscriptions: refused after {round} rounds");
            return e;
        }
        if let Err(e) = tally.read_and_ack(subs, 2, Duration::ZERO, 1).await {
            println!("subscriptions: refused after {round} rounds");
            return e;
        }
    }
}

/// Once space is freed: within 60 s subscribing works again, and reading `audit` to
/// its end delivers every record not acknowledged (and none that was).
async fn recovers(subs: &Subscriptions, tally: &mut Tally, all: &BTreeSet<Id>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let recovered = loop {
        match bounded("subscribe", subs.subscribe("subs", "after", earliest())).await {
            Ok(_) => break Instant::now(),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "subscriptions never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    println!(
        "subscriptions: recovered {:?} before the deadline",
        deadline - recovered
    );
    let mut quiet = 0;
    while quiet < 3 {
        assert!(Instant::now() < deadline, "audit was not read to its end");
        match tally
            .read_and_ack(subs, 100, Duration::from_millis(500), usize::MAX)
            .await
        {
            Ok(0) => quiet += 1,
            Ok(_) => quiet = 0,
            Err(e) => {
                println!("read after recovery: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let lost: Vec<&Id> = all.difference(&tally.acked).collect();
    assert!(lost.is_empty(), "never delivered again: {lost:?}");
    let audit = subs.list("subs", "audit").await.unwrap();
    for partition in &audit[0].partitions {
        assert_eq!(
            Some(partition.committed_offset),
            partition.end_offset,
            "{partition:?}"
        );
    }
}

/// The disk fills under the consumer manager's database (the floor off): it refuses
/// with UNAVAILABLE, never hangs, ends its push streams, and once space is freed it
/// reloads from disk by itself: every acknowledgement it answered holds, every record
/// not acknowledged is delivered, and a following `pubsub subscribe` carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_recover_once_space_is_freed() {
    let Some(disk) = SmallDisk::tmpfs(32) else {
        return;
    };
    let flags = ["--min-free-bytes", "0", "--reserve-bytes", "0"];
    let (mut server, client) = start_with_topic(&disk, &flags, "subs").await;
    let producer = Producer::new(client.clone(), "subs", producer_config())
        .await
        .unwrap();
    let mut seq = 0;
    let produced = produce_all(&producer, &mut seq, 200).await;
    let all: BTreeSet<Id> = produced.iter().map(|(p, o, _)| (p.0, *o)).collect();
    let subs = Subscriptions::new(client.clone());
    for name in ["audit", "pushed", "follower"] {
        subs.subscribe("subs", name, earliest()).await.unwrap();
    }
    let mut follower = Follower::start(server.address(), "subs", "follower");
    let mut pushed = subs.stream("pushed", "", 1_000).await.unwrap();
    drain(&mut pushed, all.len()).await;
    follower.wait_for(all.len(), Duration::from_secs(30)).await;
    let mut tally = Tally::default();
    tally
        .read_and_ack(&subs, 50, Duration::from_secs(5), 25)
        .await
        .unwrap();

    // A little room left, so the disk fills under a run of acknowledgements.
    disk.take("slack", 256 << 10);
    disk.take("filler", 64 << 20);
    disk.free("slack");
    let refused = write_until_refused(&subs, &mut tally).await;
    println!("subscriptions on a full disk: {refused}");

    disk.free("filler");
    recovers(&subs, &mut tally, &all).await;
    assert_eq!(refused.code(), Some(tonic::Code::Unavailable), "{refused}");
    assert!(
        refused.to_string().contains("reloading from disk"),
        "{refused}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), pushed.next_record())
        .await
        .expect("the push stream neither delivered nor ended")
        .expect_err("the push stream ended without an error");
    assert_eq!(ended.code(), Some(tonic::Code::Unavailable), "{ended}");
    // The following subscriber reconnected by itself and gets what comes next.
    produce_all(&producer, &mut seq, 20).await;
    follower
        .wait_for(all.len() + 20, Duration::from_secs(60))
        .await;
    assert!(server.exited().is_none());
}
