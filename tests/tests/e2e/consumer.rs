//! The consumer manager over real `pubsubd standalone` processes: subscriptions,
//! acks across kill -9, consumer groups of `pubsub subscribe` processes, and push flow
//! control with bounded server memory (`consumer_more.rs` has the rest).

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_client::{
    Admin, Client, DeliveredRecord, NewTopic, PartitionId, Producer, ProducerConfig,
    ProducerRecord, SubscriptionOptions, Subscriptions, TopicConfig,
};
use pubsub_proto::v1;
use pubsub_tests::{Server, binary};

pub(crate) fn earliest() -> SubscriptionOptions {
    SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..SubscriptionOptions::default()
    }
}

pub(crate) async fn create(client: &Client, name: &str, partitions: u32, config: TopicConfig) {
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: name.into(),
            partitions,
            config,
            ..NewTopic::default()
        })
        .await
        .unwrap();
}

/// Produces `records` and waits until each is stored.
pub(crate) async fn produce(
    client: &Client,
    topic: &str,
    config: ProducerConfig,
    records: Vec<ProducerRecord>,
) {
    let producer = Producer::new(client.clone(), topic, config).await.unwrap();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for delivery in deliveries {
        delivery.wait().await.unwrap();
    }
}

pub(crate) fn keyed(range: std::ops::Range<u64>, prefix: &str) -> Vec<ProducerRecord> {
    range
        .map(|i| ProducerRecord::keyed(format!("k{}", i % 97), format!("{prefix}-{i}")))
        .collect()
}

pub(crate) fn value(record: &DeliveredRecord) -> String {
    String::from_utf8(record.value.clone().unwrap_or_default().to_vec()).unwrap()
}

pub(crate) fn ids(records: &[DeliveredRecord]) -> Vec<(u32, u64)> {
    records.iter().map(|r| (r.partition, r.offset)).collect()
}

/// Pulls until `expected` records arrived (never one twice), then checks nothing more
/// comes.
pub(crate) async fn read_n(
    subs: &Subscriptions,
    name: &str,
    expected: usize,
) -> Vec<DeliveredRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records: Vec<DeliveredRecord> = Vec::new();
    let mut seen = HashSet::new();
    while records.len() < expected {
        assert!(
            Instant::now() < deadline,
            "{name}: read {} of {expected} records",
            records.len()
        );
        let response = match subs
            .read(name, "", 0, 500, Duration::from_millis(500))
            .await
        {
            Ok(response) => response,
            // The server may still be starting after a restart.
            Err(e) if e.is_retriable() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("read {name}: {e}"),
        };
        for record in response.records {
            assert!(
                seen.insert((record.partition, record.offset)),
                "{name}: {}:{} delivered twice",
                record.partition,
                record.offset
            );
            records.push(record);
        }
    }
    let more = subs
        .read(name, "", 0, 100, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        more.records.is_empty(),
        "{name}: more records than expected"
    );
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscriptions_get_every_record_and_kill_9_redelivers_exactly_the_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "events", 3, TopicConfig::default()).await;
    produce(
        &client,
        "events",
        ProducerConfig::default(),
        keyed(0..1000, "event"),
    )
    .await;
    let subs = Subscriptions::new(client.clone());
    for name in ["audit", "billing"] {
        let created = subs.subscribe("events", name, earliest()).await.unwrap();
        assert!(created.created);
    }
    // Subscribing again with the same options is the same subscription.
    assert!(
        !subs
            .subscribe("events", "audit", earliest())
            .await
            .unwrap()
            .created
    );

    let all: BTreeSet<String> = (0..1000).map(|i| format!("event-{i}")).collect();
    let audit = read_n(&subs, "audit", 1000).await;
    let billing = read_n(&subs, "billing", 1000).await;
    for records in [&audit, &billing] {
        let values: BTreeSet<String> = records.iter().map(value).collect();
        assert_eq!(values, all, "each subscription receives every record once");
    }
    // One bad id refuses the whole call and acknowledges nothing.
    let mut with_bad = ids(&billing);
    with_bad.push((0, 1_000_000));
    let refused = subs.ack("billing", "", 0, &with_bad).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::InvalidArgument),
        "{refused}"
    );
    assert!(refused.to_string().contains("never delivered"), "{refused}");
    let info = subs.list("", "billing").await.unwrap();
    assert!(
        info[0]
            .partitions
            .iter()
            .all(|p| p.outstanding > 0 || p.lag == Some(0))
    );
    assert_eq!(
        info[0]
            .partitions
            .iter()
            .map(|p| p.outstanding)
            .sum::<u64>(),
        1000,
        "nothing was acknowledged: {:?}",
        info[0].partitions
    );
    subs.ack("billing", "", 0, &ids(&billing)).await.unwrap();
    let (acked, unacked): (Vec<_>, Vec<_>) = audit.into_iter().partition(|r| r.offset % 2 == 0);
    subs.ack("audit", "", 0, &ids(&acked)).await.unwrap();

    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    let subs = Subscriptions::new(client);
    let again = read_n(&subs, "audit", unacked.len()).await;
    let expected: BTreeSet<(u32, u64)> = ids(&unacked).into_iter().collect();
    let redelivered: BTreeSet<(u32, u64)> = ids(&again).into_iter().collect();
    assert_eq!(
        redelivered, expected,
        "exactly the unacked half comes again"
    );
    assert!(again.iter().all(|r| r.delivery_attempt == 2));
    let billing_more = subs
        .read("billing", "", 0, 100, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(billing_more.records.is_empty(), "billing acked everything");

    subs.unsubscribe("events", "audit").await.unwrap();
    let gone = subs
        .read("audit", "", 0, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some(tonic::Code::NotFound));
}

/// The lines a child prints on stdout, parsed, gathered by a thread as they come.
pub(crate) fn collect_lines<T: Send + 'static>(
    child: &mut Child,
    parse: fn(String) -> T,
) -> Arc<Mutex<Vec<T>>> {
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push(parse(line));
        }
    });
    lines
}

/// A `pubsub subscribe --group` process and the JSON lines it printed.
struct Member {
    id: String,
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Member {
    fn start(server: &str, id: &str) -> Member {
        let mut child = Command::new(binary("pubsub"))
            .args([
                "--server",
                server,
                "subscribe",
                "jobs",
                "--subscription",
                "workers",
                "--group",
                "--from-beginning",
                "--session-timeout",
                "3s",
                "--member-id",
                id,
                "--format",
                "json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = collect_lines(&mut child, |line| serde_json::from_str(&line).unwrap());
        Member {
            id: id.to_string(),
            child,
            lines,
        }
    }

    fn values(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap().to_string())
            .collect()
    }

    fn partitions(&self) -> BTreeSet<u64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["partition"].as_u64().unwrap())
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_members(
    subs: &Subscriptions,
    count: usize,
    within: Duration,
) -> Vec<v1::MemberInfo> {
    let deadline = Instant::now() + within;
    loop {
        // The first member to start creates the subscription.
        let members = subs.presence("jobs", "workers").await.unwrap_or_default();
        let owned: BTreeSet<u32> = members.iter().flat_map(|m| m.partitions.clone()).collect();
        if members.len() == count && owned.len() == 6 {
            return members;
        }
        assert!(
            Instant::now() < deadline,
            "group did not settle on {count} members owning 6 partitions: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_values(members: &[&Member], expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let distinct: HashSet<String> = members.iter().flat_map(|m| m.values()).collect();
        if distinct.len() >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members consumed {} of {expected} records",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_splits_six_partitions_and_survives_a_member_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "jobs", 6, TopicConfig::default()).await;
    let subs = Subscriptions::new(client.clone());
    let mut first = Member::start(server.address(), "m1");
    let second = Member::start(server.address(), "m2");
    let third = Member::start(server.address(), "m3");
    let members = wait_for_members(&subs, 3, Duration::from_secs(20)).await;
    assert!(
        members.iter().all(|m| m.partitions.len() == 2),
        "{members:?}"
    );

    produce(
        &client,
        "jobs",
        ProducerConfig::default(),
        keyed(0..3000, "job"),
    )
    .await;
    wait_for_values(&[&first, &second, &third], 3000).await;
    let all: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|m| m.values())
        .collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        distinct.len(),
        "each record consumed by exactly one member"
    );
    for member in [&first, &second, &third] {
        let info = members.iter().find(|m| m.member_id == member.id).unwrap();
        let assigned: BTreeSet<u64> = info.partitions.iter().map(|&p| u64::from(p)).collect();
        assert!(
            member.partitions().is_subset(&assigned),
            "{} read partitions {:?} but owns {assigned:?}",
            member.id,
            member.partitions()
        );
    }

    // Kill one member: its partitions move to the others.
    let killed = Instant::now();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let members = wait_for_members(&subs, 2, Duration::from_secs(5)).await;
    let moved_after = killed.elapsed();
    assert!(
        moved_after <= Duration::from_secs(5),
        "partitions moved after {moved_after:?}, more than session timeout + 2 s"
    );
    assert!(members.iter().all(|m| m.member_id != "m1"));

    produce(
        &client,
        "jobs",
        ProducerConfig::default(),
        keyed(3000..6000, "job"),
    )
    .await;
    wait_for_values(&[&first, &second, &third], 6000).await;
    let survivors: Vec<String> = [&second, &third].iter().flat_map(|m| m.values()).collect();
    let distinct: HashSet<&String> = survivors.iter().collect();
    assert_eq!(
        survivors.len(),
        distinct.len(),
        "no record consumed twice by the survivors"
    );
    let everything: HashSet<String> = [&first, &second, &third]
        .iter()
        .flat_map(|m| m.values())
        .collect();
    assert_eq!(everything.len(), 6000, "no record skipped");
}

/// Anonymous resident memory of a process, in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_with_ten_credits_gets_ten_records_then_redeliveries_and_memory_stays_bounded()
{
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "flood", 2, TopicConfig::default()).await;
    let subs = Subscriptions::new(client.clone());
    let options = SubscriptionOptions {
        ack_deadline_ms: 1_000,
        ..earliest()
    };
    subs.subscribe("flood", "slow", options).await.unwrap();
    produce(
        &client,
        "flood",
        ProducerConfig::default(),
        keyed(0..100, "early"),
    )
    .await;
    let mut stream = subs.stream("slow", "slow-1", 10).await.unwrap();
    let mut first = BTreeSet::new();
    while first.len() < 10 {
        let record = tokio::time::timeout(Duration::from_secs(10), stream.next_record())
            .await
            .expect("ten records within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(record.delivery_attempt, 1);
        first.insert((record.partition, record.offset));
    }
    // No eleventh record while ten are unacked (the ack deadline is 1 s away).
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.next_record()).await;
    assert!(
        quiet.is_err(),
        "a record beyond the ten credits arrived: {quiet:?}"
    );

    let pid = server.pid().unwrap();
    let before = rss_anon(pid);
    let producing = {
        let client = client.clone();
        tokio::spawn(async move {
            let value = vec![b'x'; 100];
            let records = (0..1_000_000u32)
                .map(|i| ProducerRecord {
                    partition: Some(PartitionId(i % 2)),
                    ..ProducerRecord::value(value.clone())
                })
                .collect();
            produce(&client, "flood", ProducerConfig::default(), records).await;
        })
    };
    // Meanwhile only redeliveries of the same ten records arrive.
    let mut redelivered = 0;
    let mut peak = before;
    while !producing.is_finished() || redelivered < 10 {
        if let Ok(record) =
            tokio::time::timeout(Duration::from_millis(200), stream.next_record()).await
        {
            let record = record.unwrap().unwrap();
            assert!(
                first.contains(&(record.partition, record.offset)),
                "record {}:{} delivered beyond the credits",
                record.partition,
                record.offset
            );
            assert!(record.delivery_attempt >= 2);
            redelivered += 1;
        }
        peak = peak.max(rss_anon(pid));
    }
    producing.await.unwrap();
    let grew = peak.saturating_sub(before);
    println!(
        "server anonymous memory {} MiB before, peak {} MiB while 1,000,000 records (100 MB) were produced; {redelivered} redeliveries",
        before >> 20,
        peak >> 20
    );
    assert!(
        grew < 64 << 20,
        "server memory grew by {} MiB while the subscriber held 10 credits",
        grew >> 20
    );
    let info = subs.list("flood", "slow").await.unwrap();
    let outstanding: u64 = info[0].partitions.iter().map(|p| p.outstanding).sum();
    assert_eq!(
        outstanding, 10,
        "only the ten credited records are outstanding"
    );
}
