//! Where the cluster manager's state machine stops scaling: 1,000 brokers and 100,000
//! partitions at RF 3 (the metadata's partition limit). Measures what every node does
//! per Raft entry (apply a heartbeat, an ISR change), what a leader does per change to
//! tell brokers (build and encode the `WatchMetadata` snapshot, once per watcher), the
//! Raft snapshot (JSON), and one balance check (on a tenth of that cluster: planning
//! is the first limit). Sizes are printed once.
//!
//! Run with `cargo bench -p pubsub-cluster-manager --bench metadata`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use pubsub_cluster_manager::bench_api::{
    ClusterState, Command, PartitionSize, balance_check, cluster_metadata,
};

const BROKERS: u32 = 1_000;
const TOPICS: u32 = 100;
const PARTITIONS_PER_TOPIC: u32 = 1_000;

fn register(broker: u32, now_ms: u64) -> Command {
    Command::RegisterBroker {
        broker,
        address: format!("broker-{broker}.pubsub.svc.cluster.local:9392"),
        rack: Some(format!("rack-{}", broker % 3)),
        kafka_address: None,
        now_ms,
        lease_ms: 0,
        proven: false,
    }
}

/// `brokers` brokers in 3 racks, `topics` topics of 1,000 partitions at RF 3.
fn cluster(brokers: u32, topics: u32) -> ClusterState {
    let mut state = ClusterState::default();
    for broker in 1..=brokers {
        state.apply(register(broker, 0)).unwrap();
    }
    for topic in 0..topics {
        state
            .apply(Command::CreateTopic {
                name: format!("topic-{topic:03}"),
                partitions: PARTITIONS_PER_TOPIC,
                replication_factor: 3,
                settings: Default::default(),
                unclean_leader_election: false,
                now_ms: 0,
            })
            .unwrap();
    }
    state
}

/// Every partition's leader and a size report for it, `size(n)` bytes for the n-th.
fn sizes(state: &ClusterState, size: impl Fn(u64) -> u64) -> Vec<(u32, PartitionSize)> {
    let mut n = 0;
    let mut all = Vec::new();
    for topic in 0..TOPICS {
        let name = format!("topic-{topic:03}");
        let Some(found) = state.topic(&name) else {
            continue;
        };
        for (partition, p) in found.partitions().iter().enumerate() {
            n += 1;
            let bytes = size(n);
            let size = PartitionSize {
                topic: name.clone(),
                partition: partition as u32,
                bytes,
            };
            all.push((p.leader().unwrap(), size));
        }
    }
    all
}

fn metadata(c: &mut Criterion) {
    let mut state = cluster(BROKERS, TOPICS);
    let wire = cluster_metadata(&state);
    let json = serde_json::to_vec(&state).unwrap();
    println!(
        "{BROKERS} brokers, {} partitions: WatchMetadata snapshot {} bytes, Raft snapshot {} bytes",
        TOPICS * PARTITIONS_PER_TOPIC,
        wire.encoded_len(),
        json.len()
    );
    let mut group = c.benchmark_group("metadata_1000_brokers_100k_partitions");
    group.sample_size(10);
    let mut now = 1;
    group.bench_function("apply_heartbeat", |b| {
        b.iter(|| {
            now += 1;
            let broker = (now % u64::from(BROKERS)) as u32 + 1;
            black_box(
                state
                    .apply(Command::Heartbeat {
                        broker,
                        now_ms: now,
                        sizes: Vec::new(),
                    })
                    .unwrap(),
            )
        })
    });
    // A heartbeat that reports sizes: one per partition the broker leads (100 here).
    let led = sizes(&state, |_| 1 << 30);
    let broker = led[0].0;
    let reports: Vec<PartitionSize> = led
        .into_iter()
        .filter(|(leader, _)| *leader == broker)
        .map(|(_, size)| size)
        .collect();
    group.bench_function(format!("apply_heartbeat_{}_sizes", reports.len()), |b| {
        b.iter(|| {
            now += 1;
            black_box(
                state
                    .apply(Command::Heartbeat {
                        broker,
                        now_ms: now,
                        sizes: reports.clone(),
                    })
                    .unwrap(),
            )
        })
    });
    let partition = state.topic("topic-000").unwrap().partitions()[0].clone();
    let leader = partition.leader().unwrap();
    let (full, shrunk) = (partition.isr().to_vec(), vec![leader]);
    let mut flip = false;
    group.bench_function("apply_update_isr", |b| {
        b.iter(|| {
            flip = !flip;
            let isr = if flip { shrunk.clone() } else { full.clone() };
            black_box(
                state
                    .apply(Command::UpdateIsr {
                        broker: leader,
                        topic: "topic-000".into(),
                        partition: 0,
                        leader_epoch: partition.leader_epoch(),
                        isr,
                    })
                    .unwrap(),
            )
        })
    });
    group.bench_function("watch_metadata_build_and_encode", |b| {
        b.iter(|| black_box(cluster_metadata(&state).encode_to_vec()))
    });
    group.bench_function("raft_snapshot_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(&state).unwrap()))
    });
    group.finish();
    // Planning is the first limit: it is measured on a tenth of the cluster.
    let mut group = c.benchmark_group("balance_100_brokers_10k_partitions");
    group.sample_size(10);
    let mut state = cluster(BROKERS / 10, TOPICS / 10);
    group.bench_function("balance_check", |b| {
        b.iter(|| black_box(balance_check(&state)))
    });
    state.apply(register(BROKERS / 10 + 1, now)).unwrap();
    group.bench_function("balance_check_one_new_broker", |b| {
        b.iter(|| black_box(balance_check(&state)))
    });
    // Sizes from 0 to 1 GiB, spread by a multiplicative hash of the partition's place.
    for (broker, size) in sizes(&state, |n| (n.wrapping_mul(2_654_435_761) % 1024) << 20) {
        let command = Command::Heartbeat {
            broker,
            now_ms: now,
            sizes: vec![size],
        };
        state.apply(command).unwrap();
    }
    group.bench_function("balance_check_one_new_broker_with_sizes", |b| {
        b.iter(|| black_box(balance_check(&state)))
    });
    group.finish();
}

criterion_group!(benches, metadata);
criterion_main!(benches);
