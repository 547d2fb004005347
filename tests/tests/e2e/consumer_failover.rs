//! A consumer-manager node lost with its disk while a subscriber acknowledges: a
//! consumer manager on another disk rebuilds every subscription from the
//! subscription-state journal on the brokers and takes over. An acknowledgement that
//! was answered is never undone (its record never comes back) and no record is
//! skipped; a record whose acknowledgement was not answered may come back
//! (at-least-once). Snapshots of the journal are taken every few KiB here, so the
//! replacement rebuilds from a journal whose start was deleted below a snapshot.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_client::{
    Admin, Client, Consumer, ConsumerConfig, PartitionId, StartPosition, SubscriptionOptions,
    Subscriptions,
};
use pubsub_proto::v1;
use pubsub_tests::checker::subscription::{Event, check_subscription};
use pubsub_tests::{Cluster, Server};

const RECORDS: u64 = 3_000;

/// Bytes between journal snapshots in this test: small, so snapshots and the
/// deletion below them happen many times within it.
const SNAPSHOT_BYTES: &str = "1KiB";

/// A `pubsubd consumer-manager` on its own data directory `name`.
pub(crate) fn consumer_manager(cluster: &Cluster, name: &str) -> Server {
    consumer_manager_with(cluster, name, &[])
}

/// As [`consumer_manager`], with `extra` arguments.
pub(crate) fn consumer_manager_with(cluster: &Cluster, name: &str, extra: &[&str]) -> Server {
    let data = cluster.dir.path().join(name);
    let mut args = vec![
        "consumer-manager".to_string(),
        "--listen".into(),
        "{listen}".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--cluster-managers".into(),
        cluster.live_managers().join(","),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Server::spawn(&data, args, "127.0.0.1:0")
}

/// What the subscriber saw and did.
#[derive(Default)]
pub(crate) struct Seen {
    /// Its history, for `pubsub_tests::checker::subscription`.
    pub(crate) events: Vec<Event>,
    /// Records whose acknowledgement was answered.
    pub(crate) answered: usize,
    /// Records whose acknowledgement was sent (answered or not: one the lost node
    /// made durable and never answered is, rightly, not delivered again).
    pub(crate) acked: HashSet<(u32, u64)>,
}

/// Reads and acknowledges from whichever consumer manager `address` names, through
/// errors, until every record is acknowledged or `deadline` passes.
async fn subscriber(address: Arc<Mutex<String>>, seen: Arc<Mutex<Seen>>, deadline: Instant) {
    let mut connected: Option<(String, Subscriptions)> = None;
    while Instant::now() < deadline && seen.lock().unwrap().acked.len() < RECORDS as usize {
        let now = address.lock().unwrap().clone();
        if connected.as_ref().is_none_or(|(at, _)| *at != now) {
            match Client::connect(&now).await {
                Ok(client) => connected = Some((now, Subscriptions::new(client))),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some((_, subs)) = connected.as_ref() else {
            continue;
        };
        if !read_and_ack(subs, "worker", &seen).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads up to 20 records of `subscription` and acknowledges them, noting both in
/// `seen`; false if the read failed (the caller waits before trying again).
pub(crate) async fn read_and_ack(
    subs: &Subscriptions,
    subscription: &str,
    seen: &Mutex<Seen>,
) -> bool {
    let read = subs
        .read(subscription, "", 0, 20, Duration::from_millis(500))
        .await;
    let Ok(read) = read else {
        return false;
    };
    let ids: Vec<(u32, u64)> = read
        .records
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    if ids.is_empty() {
        return true;
    }
    {
        let mut seen = seen.lock().unwrap();
        seen.events
            .extend(ids.iter().map(|id| Event::Delivered(*id)));
        seen.acked.extend(ids.iter().copied());
    }
    if subs.ack(subscription, "", 0, &ids).await.is_ok() {
        let mut seen = seen.lock().unwrap();
        seen.answered += ids.len();
        seen.events.push(Event::AckAnswered(ids));
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_manager_lost_with_its_disk_is_replaced_from_the_journal() {
    let cluster = Cluster::start("2s");
    crate::cluster::wait_for_brokers(&cluster).await;
    let snapshots = ["--journal-snapshot-bytes", SNAPSHOT_BYTES];
    let mut first = consumer_manager_with(&cluster, "consumers-a", &snapshots);
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let per_partition = crate::consumer_sharing::fill(&client, RECORDS).await;

    let consumers = Subscriptions::new(Client::connect(first.address()).await.unwrap());
    let options = SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ack_deadline_ms: 2_000,
        ..SubscriptionOptions::default()
    };
    consumers
        .subscribe("work", "worker", options)
        .await
        .unwrap();

    let address = Arc::new(Mutex::new(first.address().to_string()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let reading = tokio::spawn(subscriber(address.clone(), seen.clone(), deadline));
    // Lose the node two thirds of the way through, while the subscriber acknowledges.
    while seen.lock().unwrap().answered < RECORDS as usize * 2 / 3 {
        assert!(Instant::now() < deadline, "the subscriber made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill9();
    let lost = Instant::now();
    std::fs::remove_dir_all(cluster.dir.path().join("consumers-a")).unwrap();
    let journal_start = journal_start(&client).await;
    let second = consumer_manager_with(&cluster, "consumers-b", &snapshots);
    let takeover = lost.elapsed();
    *address.lock().unwrap() = second.address().to_string();
    reading.await.unwrap();
    // The journal is internal: deleting it (every subscription reset), shortening its
    // retention or re-hashing it over more partitions is refused.
    let admin = Admin::new(client.clone());
    let journal = "__subscription_state";
    let refused = |result: &Result<_, pubsub_client::Error>| {
        matches!(result, Err(pubsub_client::Error::FailedPrecondition { .. }))
    };
    let deleted = admin.delete_topic(journal).await.map(|()| None);
    assert!(refused(&deleted), "{deleted:?}");
    let retention = v1::TopicConfig {
        retention_ms: Some(60_000),
        ..v1::TopicConfig::default()
    };
    let altered = admin.alter_topic_config(journal, retention).await.map(Some);
    assert!(refused(&altered), "{altered:?}");
    let grown = admin.create_partitions(journal, 32).await.map(Some);
    assert!(refused(&grown), "{grown:?}");
    let seen = seen.lock().unwrap();
    let expected = per_partition
        .iter()
        .flat_map(|(&p, &n)| (0..n).map(move |o| (p, o)));
    let found = check_subscription(expected, &seen.events);
    println!(
        "consumer manager replaced in {takeover:?}: {} acks sent; {found}; rebuilt from a \
         journal deleted below offset {journal_start} (snapshots)",
        seen.acked.len(),
    );
    assert!(found.is_clean(), "the at-least-once promise broke: {found}");
    assert!(
        journal_start > 0,
        "no snapshot let the journal's start move before the node was lost"
    );
    assert!(
        takeover < Duration::from_secs(10),
        "the replacement took {takeover:?} to serve"
    );
}

/// The highest first offset still stored among the journal's partitions: above 0 once
/// a snapshot let the segments before it be deleted.
async fn journal_start(client: &Client) -> u64 {
    let journal = "__subscription_state";
    let consumer = Consumer::new(client.clone(), journal, ConsumerConfig::default());
    let mut highest = 0;
    for partition in 0..consumer.partition_count().await.unwrap() {
        let start = consumer
            .offset_of(PartitionId(partition), StartPosition::Earliest)
            .await
            .unwrap();
        let end = consumer
            .offset_of(PartitionId(partition), StartPosition::Latest)
            .await
            .unwrap();
        if end > 0 {
            println!("journal partition {partition}: offsets {start}..{end}");
        }
        highest = highest.max(start);
    }
    highest
}
