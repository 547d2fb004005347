//! Power loss: a standalone server writes under an LD_PRELOAD shim
//! (`powercut_shim.c`) that keeps an undo log of every write to the broker's files;
//! it is killed with `kill -9` at a drawn moment, and `pubsub_tests::powercut` undoes
//! what no fsync covered (all of it, or a drawn part with one write torn at a sector),
//! as if the power had gone. The server restarts on what is left.
//!
//! With fsync `always` nothing acknowledged may be lost. With `interval` and `never`
//! records may be lost, only at the end of a partition (a prefix survives: no holes,
//! nothing duplicated or reordered), and the figures (how many, over what window
//! before the cut) go in docs/reliability.md. Every run prints its seed;
//! `PUBSUB_POWERCUT_SEED=N` replays one, `PUBSUB_POWERCUT_SEEDS=N` runs N more.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use pubsub_client::{
    Acks, Admin, Client, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord,
};
use pubsub_proto::v1::TopicConfig;
use pubsub_tests::Server;
use pubsub_tests::powercut::{Cut, CutReport, power_cut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ledger::{Ack, Tally, read_back};

const PARTITIONS: u32 = 2;
/// Sends in flight per partition.
const WINDOW: usize = 64;

/// What one power cut cost.
struct Outcome {
    tally: Tally,
    report: CutReport,
    /// Acknowledged records lost.
    lost: usize,
    /// Acknowledged records lost below the end of what survived (must be 0).
    holes: usize,
    /// From the oldest lost record's acknowledgement to the kill.
    window: Duration,
}

/// One partition's writer: sends `p<partition>-<n>` with `WINDOW` in flight and
/// records each acknowledgement with its time, until a send fails (the server died).
async fn write(producer: Producer, partition: u32) -> Vec<(Ack, Instant)> {
    let mut acked = Vec::new();
    let mut pending = FuturesOrdered::new();
    for n in 0u64.. {
        let value = format!("p{partition}-{n:09}");
        let record = ProducerRecord {
            partition: Some(PartitionId(partition)),
            ..ProducerRecord::value(value.clone())
        };
        let Ok(delivery) = producer.send(record).await else {
            break;
        };
        pending.push_back(async move { (delivery.wait().await, value) });
        if pending.len() < WINDOW {
            continue;
        }
        match pending.next().await {
            Some((Ok(meta), value)) => {
                let ack = (
                    PartitionId(partition),
                    meta.offset.unwrap_or_default(),
                    value,
                );
                acked.push((ack, Instant::now()));
            }
            _ => break,
        }
    }
    while let Some((result, value)) = pending.next().await {
        if let Ok(meta) = result {
            let ack = (
                PartitionId(partition),
                meta.offset.unwrap_or_default(),
                value,
            );
            acked.push((ack, Instant::now()));
        }
    }
    acked
}

/// Writes under `fsync`, cuts the power at a drawn moment, restarts and reads back.
async fn cut_power(fsync: &str, cut: Cut, seed: u64) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("broker")).unwrap();
    // The shim compares paths as the kernel shows them.
    let broker_dir = data.join("broker").canonicalize().unwrap();
    let (mut server, undo_log) = start_under_shim(dir.path(), &data, &broker_dir);
    let client = Client::connect(server.address()).await.unwrap();
    let config = TopicConfig {
        fsync: Some(fsync.to_string()),
        segment_bytes: Some(256 << 10),
        max_message_bytes: Some(64 << 10),
        ..TopicConfig::default()
    };
    let topic = NewTopic {
        name: "cut".into(),
        partitions: PARTITIONS,
        config,
        ..NewTopic::default()
    };
    Admin::new(client.clone())
        .create_topic(topic)
        .await
        .unwrap();
    let producer_config = ProducerConfig {
        acks: Acks::All,
        retries: 0,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), "cut", producer_config)
        .await
        .unwrap();
    let writers: Vec<_> = (0..PARTITIONS)
        .map(|p| tokio::spawn(write(producer.clone(), p)))
        .collect();
    let run_for = StdRng::seed_from_u64(seed).random_range(600..1800);
    tokio::time::sleep(Duration::from_millis(run_for)).await;
    server.kill9();
    let killed = Instant::now();
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    drop(producer);
    let report = power_cut(&undo_log, &broker_dir, cut).unwrap();

    server.set_env(Vec::new());
    server.restart();
    let client = Client::connect(server.address()).await.unwrap();
    let stored = read_back(&client, "cut").await;
    let acks: Vec<Ack> = acked.iter().map(|(ack, _)| ack.clone()).collect();
    let mut outcome = judge(&acked, &stored, killed);
    outcome.tally = Tally::check(&acks, &stored);
    outcome.report = report;
    // The server takes writes again after the cut.
    let producer = Producer::new(client, "cut", ProducerConfig::default())
        .await
        .unwrap();
    let after = producer
        .send(ProducerRecord::value("after the cut"))
        .await
        .unwrap();
    producer.flush().await.unwrap();
    after.wait().await.unwrap();
    outcome
}

/// A standalone server on `data` with the shim watching `watched`, and the path of
/// the shim's undo log.
fn start_under_shim(dir: &Path, data: &Path, watched: &Path) -> (Server, PathBuf) {
    let shim = pubsub_tests::build_shim("powercut_shim", dir);
    let undo_log = dir.join("undo-log");
    let env = vec![
        ("LD_PRELOAD".to_string(), shim.display().to_string()),
        ("PUBSUB_POWERCUT_DIR".into(), watched.display().to_string()),
        ("PUBSUB_POWERCUT_LOG".into(), undo_log.display().to_string()),
    ];
    (
        Server::start_with_env(data, "127.0.0.1:0", &[], env),
        undo_log,
    )
}

/// The metadata stores under a power cut: the shim watches the whole data directory
/// (the cluster manager's and the consumer manager's sled stores, the broker's files)
/// while topics are created, each answered once the cluster manager's Raft log has
/// flushed it. After the cut the server starts on what is left and lists every
/// acknowledged topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_keeps_every_acknowledged_topic() {
    for (cut, seed) in [(Cut::DropAll, 1), (Cut::Torn { seed: 2 }, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let watched = data.canonicalize().unwrap();
        let (mut server, undo_log) = start_under_shim(dir.path(), &data, &watched);
        let admin = Admin::new(Client::connect(server.address()).await.unwrap());
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let creating = tokio::spawn(create_topics(admin, acked.clone()));
        let run_for = StdRng::seed_from_u64(seed).random_range(600..1800);
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        server.kill9();
        creating.abort();
        let acked = acked.lock().unwrap().clone();
        let report = power_cut(&undo_log, &watched, cut).unwrap();
        server.set_env(Vec::new());
        server.restart();
        let admin = Admin::new(Client::connect(server.address()).await.unwrap());
        let listed = crate::topic_names(&admin).await;
        let missing: Vec<&String> = acked.iter().filter(|n| !listed.contains(n)).collect();
        println!(
            "metadata power cut: {cut:?}, seed {seed}: {} topics acknowledged, {} missing; \
             undid {} writes ({} torn, {} bytes) in {} files; removed {} files",
            acked.len(),
            missing.len(),
            report.undone,
            report.torn,
            report.bytes,
            report.files,
            report.removed
        );
        assert!(!acked.is_empty(), "no topic was acknowledged; seed {seed}");
        assert!(
            missing.is_empty(),
            "acknowledged topics lost: {missing:?}; seed {seed}"
        );
    }
}

/// Creates topics one after the other, recording each acknowledged name.
async fn create_topics(admin: Admin, acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    for n in 0u32.. {
        let name = format!("meta-{n:05}");
        let topic = NewTopic {
            name: name.clone(),
            partitions: 1,
            ..NewTopic::default()
        };
        if admin.create_topic(topic).await.is_err() {
            return;
        }
        acked.lock().unwrap().push(name);
    }
}

/// Counts the acknowledged records lost, those lost below the surviving end of their
/// partition, and how long before the kill the oldest lost one was acknowledged.
fn judge(
    acked: &[(Ack, Instant)],
    stored: &HashMap<PartitionId, Vec<(u64, String)>>,
    killed: Instant,
) -> Outcome {
    let mut lost = 0;
    let mut holes = 0;
    let mut oldest: Option<Instant> = None;
    for ((partition, offset, value), at) in acked {
        let records = stored.get(partition).map(Vec::as_slice).unwrap_or_default();
        let end = records.last().map_or(0, |(o, _)| o + 1);
        if records.iter().any(|(o, v)| o == offset && v == value) {
            continue;
        }
        lost += 1;
        holes += usize::from(*offset < end);
        oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
    }
    Outcome {
        tally: Tally::default(),
        report: CutReport::default(),
        lost,
        holes,
        window: oldest.map_or(Duration::ZERO, |at| killed.duration_since(at)),
    }
}

/// The runs of one CI pass: each policy, whole and torn cuts.
fn runs() -> Vec<(&'static str, Cut, u64)> {
    if let Some(seed) = std::env::var("PUBSUB_POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return ["always", "interval:50", "never"]
            .into_iter()
            .flat_map(|f| [(f, Cut::DropAll, seed), (f, Cut::Torn { seed }, seed)])
            .collect();
    }
    let more: u64 = std::env::var("PUBSUB_POWERCUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut runs = vec![
        ("always", Cut::DropAll, 1),
        ("always", Cut::Torn { seed: 2 }, 2),
        ("interval:50", Cut::Torn { seed: 3 }, 3),
        ("never", Cut::DropAll, 4),
    ];
    for seed in 100..100 + more {
        let fsync = ["always", "interval:50", "never"][seed as usize % 3];
        let cut = if seed % 2 == 0 {
            Cut::DropAll
        } else {
            Cut::Torn { seed }
        };
        runs.push((fsync, cut, seed));
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_nothing_acknowledged_under_fsync_always() {
    for (fsync, cut, seed) in runs() {
        let outcome = cut_power(fsync, cut, seed).await;
        let report = outcome.report;
        println!(
            "power cut: fsync {fsync}, {cut:?}, seed {seed}: {}; lost {} (window {} ms, \
             holes {}); undid {} writes ({} torn, {} bytes) in {} files; removed {} \
             files created after their directory's last fsync",
            outcome.tally,
            outcome.lost,
            outcome.window.as_millis(),
            outcome.holes,
            report.undone,
            report.torn,
            report.bytes,
            report.files,
            report.removed
        );
        let replay = format!("replay with PUBSUB_POWERCUT_SEED={seed}");
        assert!(outcome.tally.acked() > 0, "nothing acknowledged; {replay}");
        assert_eq!(outcome.holes, 0, "records lost below the end; {replay}");
        assert!(outcome.tally.only_lost(), "{}; {replay}", outcome.tally);
        if fsync == "always" {
            assert_eq!(
                outcome.lost, 0,
                "fsync always lost acknowledged records; {replay}"
            );
        }
        if fsync == "never" && matches!(cut, Cut::DropAll) {
            assert!(
                report.undone > 0,
                "the shim recorded no unsynced write; {replay}"
            );
        }
    }
}
