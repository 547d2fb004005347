//! Clock faults: the cluster managers' wall clocks step an hour forward, then two hours
//! back (libfaketime on CLOCK_REALTIME only, monotonic clocks untouched, as an NTP step
//! or a restored VM does), while three brokers heartbeat. No live broker may be fenced
//! and no partition go offline at any moment, and a broker that dies after each step
//! must still be fenced within about a lease. (Leases judged by wall-clock stamps,
//! as before `FenceSilent`, failed the backward step: the dead broker's last stamp lay
//! in the future, so it was spared for the two hours.)
//!
//! Without libfaketime the test says NOT RUN, or fails if `PUBSUB_TESTS_REQUIRE_FAKETIME`
//! is set (CI installs it and sets it).

use std::path::Path;
use std::time::{Duration, Instant};

use pubsub_client::{Consumer, ConsumerConfig, PartitionId, StartPosition, Subscriptions};
use pubsub_proto::v1;
use pubsub_tests::{Cluster, Server, pubsub};

use crate::cluster::{status, wait_for_brokers};
use crate::create_replicated;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn faketime_available() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        return true;
    }
    assert!(
        std::env::var_os("PUBSUB_TESTS_REQUIRE_FAKETIME").is_none(),
        "{LIBFAKETIME} is missing (apt-get install libfaketime)"
    );
    eprintln!("NOT RUN: clock faults need {LIBFAKETIME}");
    false
}

/// The cluster status from the first cluster manager that answers.
pub(crate) async fn any_status(cluster: &Cluster) -> v1::ClusterStatusResponse {
    for _ in 0..100 {
        for address in cluster.live_managers() {
            if let Some(status) = status(&address).await {
                return status;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no cluster manager answers");
}

/// Waits until the cluster manager at `address` knows a Raft leader.
async fn answering(address: &str) {
    for _ in 0..200 {
        if status(address).await.is_some_and(|s| s.leader_id.is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cluster manager {address} knows no leader");
}

/// Ids of fenced brokers, and every partition's leader epoch.
async fn fenced_and_epochs(cluster: &Cluster) -> (Vec<u32>, Vec<i32>) {
    let status = any_status(cluster).await;
    let fenced = status
        .brokers
        .iter()
        .filter_map(|b| b.broker.as_ref())
        .filter(|b| b.fenced)
        .map(|b| b.id)
        .collect();
    let view = pubsub_client::Client::connect(cluster.brokers[0].address())
        .await
        .unwrap();
    let described = pubsub_client::Admin::new(view)
        .describe_topic("clock")
        .await
        .unwrap();
    let partitions = described.topic.map(|t| t.partitions).unwrap_or_default();
    let epochs = partitions.iter().map(|p| p.leader_epoch).collect();
    (fenced, epochs)
}

/// Waits until every partition of `clock` is led by its preferred replica with all
/// three in sync, so no preferred leader election is still due (one would move a
/// leadership under the test for a reason other than a clock), and returns the leader
/// epochs then.
async fn settled(cluster: &Cluster) -> Vec<i32> {
    let view = pubsub_client::Client::connect(cluster.brokers[0].address())
        .await
        .unwrap();
    let admin = pubsub_client::Admin::new(view);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(described) = admin.describe_topic("clock").await {
            let partitions = described.topic.map(|t| t.partitions).unwrap_or_default();
            let preferred = |p: &v1::PartitionDescription| {
                p.leader.is_some()
                    && p.leader == p.replicas.first().copied()
                    && p.in_sync_replicas.len() == 3
            };
            if !partitions.is_empty() && partitions.iter().all(preferred) {
                return partitions.iter().map(|p| p.leader_epoch).collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the partitions of clock never settled on their preferred leaders");
}

/// Watches the cluster for `window`: panics at the first fenced broker (other than
/// those in `dead`) or leaderless partition it sees.
async fn watch_steady(cluster: &Cluster, window: Duration, dead: &[u32], what: &str) {
    let start = Instant::now();
    while start.elapsed() < window {
        let status = any_status(cluster).await;
        let fenced: Vec<u32> = status
            .brokers
            .iter()
            .filter_map(|b| b.broker.as_ref())
            .filter(|b| b.fenced && !dead.contains(&b.id))
            .map(|b| b.id)
            .collect();
        assert!(fenced.is_empty(), "{what}: live brokers fenced: {fenced:?}");
        assert_eq!(status.offline_partitions, 0, "{what}: partitions offline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves every cluster manager's wall clock to `offset` (libfaketime's syntax: "+1h").
fn step_clocks(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

/// Kills broker `id` and waits until it is fenced; returns how long that took.
async fn fenced_after_kill(cluster: &mut Cluster, id: u32) -> Duration {
    cluster.brokers[id as usize - 1].kill9();
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(30) {
        if fenced_and_epochs(cluster).await.0.contains(&id) {
            return killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("broker {id} was not fenced within 30 s of its death");
}

/// The environment that puts a process's wall clock at the offset in `file`.
fn faketime_env(file: &Path) -> Vec<(String, String)> {
    step_clocks(file, "+0");
    [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", &file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_steps_fence_no_live_broker_and_spare_no_dead_one() {
    if !faketime_available() {
        return;
    }
    let mut cluster = Cluster::start("3s");
    let offset = cluster.dir.path().join("faketime");
    let env = faketime_env(&offset);
    // One manager at a time, so the other two keep a quorum.
    for manager in &mut cluster.managers {
        manager.set_env(env.clone());
        manager.restart();
        answering(manager.address()).await;
    }
    create_replicated(&cluster, "clock", 3).await;
    wait_for_brokers(&cluster).await;
    let epochs = settled(&cluster).await;
    let (fenced, _) = fenced_and_epochs(&cluster).await;
    assert!(fenced.is_empty(), "{fenced:?}");

    // An hour forward: every heartbeat now looks an hour old by wall time.
    step_clocks(&offset, "+1h");
    watch_steady(&cluster, Duration::from_secs(8), &[], "clock +1h").await;
    let (fenced, after) = fenced_and_epochs(&cluster).await;
    assert!(
        fenced.is_empty(),
        "live brokers fenced after a forward step: {fenced:?}"
    );
    assert_eq!(after, epochs, "no leadership moved");
    let took = fenced_after_kill(&mut cluster, 3).await;
    println!("clock +1h: no live broker fenced; a killed one fenced after {took:?}");

    // Two hours back: heartbeats stamped before now look two hours in the future.
    step_clocks(&offset, "-1h");
    watch_steady(&cluster, Duration::from_secs(8), &[3], "clock -1h").await;
    let (fenced, _) = fenced_and_epochs(&cluster).await;
    assert_eq!(
        fenced,
        [3],
        "only the dead broker is fenced after a backward step"
    );
    let took = fenced_after_kill(&mut cluster, 2).await;
    println!("clock -1h: no live broker fenced; a killed one fenced after {took:?}");
}

/// Writes `count` records numbered from `first` to partition 0 of `steps`.
fn write(server: &Server, first: usize, count: usize) {
    let lines: String = (first..first + count)
        .map(|n| format!("s-{n:06}\n"))
        .collect();
    let written = pubsub(server.address(), &["write", "steps"], lines.as_bytes());
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
}

/// Offsets the subscription hands out in one read of up to `max` records.
async fn read_offsets(subs: &Subscriptions, max: u32) -> Vec<u64> {
    let read = subs
        .read("steps-sub", "", 0, max, Duration::from_secs(2))
        .await
        .unwrap();
    read.records.iter().map(|r| r.offset).collect()
}

/// One `pubsubd standalone` (broker, cluster manager and consumer manager) whose wall
/// clock steps an hour forward, then two back: records leased to a subscriber are not
/// handed out again before their ack deadline (deadlines run on the monotonic clock),
/// writes and reads go on, and retention deletes nothing (records are judged by their
/// timestamps against the wall clock, as Kafka does: only a step longer than a
/// topic's retention could delete its data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_server_rides_out_clock_steps() {
    if !faketime_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    let data = dir.path().join("data");
    let server = Server::start_with_env(&data, "127.0.0.1:0", &[], faketime_env(&offset));
    let created = pubsub(server.address(), &["create", "steps"], b"");
    assert!(created.status.success());
    write(&server, 0, 100);
    let client = pubsub_client::Client::connect(server.address())
        .await
        .unwrap();
    let subs = Subscriptions::new(client.clone());
    let options = v1::SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ack_deadline_ms: 60_000,
        ..Default::default()
    };
    subs.subscribe("steps", "steps-sub", options).await.unwrap();
    let leased = read_offsets(&subs, 50).await;
    assert_eq!(leased, (0..50).collect::<Vec<u64>>());

    step_clocks(&offset, "+1h");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = read_offsets(&subs, 100).await;
    assert_eq!(
        next,
        (50..100).collect::<Vec<u64>>(),
        "leased records came again early"
    );
    let all: Vec<(u32, u64)> = (0..100).map(|o| (0, o)).collect();
    subs.ack("steps-sub", "", 0, &all).await.unwrap();

    step_clocks(&offset, "-1h");
    let second_from = pubsub_client::now_ms();
    write(&server, 100, 100);
    let after = read_offsets(&subs, 200).await;
    assert_eq!(after, (100..200).collect::<Vec<u64>>());
    // The time index still finds records by time (the writer's clock stood still).
    let consumer = Consumer::new(client.clone(), "steps", ConsumerConfig::default());
    let found = consumer
        .offset_of(PartitionId(0), StartPosition::Timestamp(second_from))
        .await
        .unwrap();
    assert_eq!(found, 100, "the time index misplaced the second write");
    let stored = crate::ledger::read_back(&client, "steps").await;
    let kept = stored.values().map(Vec::len).sum::<usize>();
    assert_eq!(kept, 200, "retention deleted records after the steps");
    println!(
        "standalone: clock +1h then -2h: no early redelivery, 200 of 200 records kept, \
         the time index finds offset 100 by time"
    );
}
