//! The brokers' replication under faults: three cluster managers and three brokers
//! serving a topic of two partitions at replication factor 3, acks=all producers
//! writing numbered records and readers reading them as they come, while the faults
//! land on the brokers (isolated from every other server, crashed and restarted from
//! their logs, one-way, held and slow links between them). The history goes through
//! the project's checker (`pubsub_tests::checker`): lost, duplicated, reordered,
//! inconsistent offsets, non-monotonic sends and polls, aborted reads.

mod workload;

use std::time::Duration;

use pubsub_broker::BrokerConfig;
use pubsub_proto::ids::BrokerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tempfile::TempDir;

use self::workload::Shared;
use crate::faults::{self, Targets};
use crate::net;

/// Cluster managers and brokers.
const MANAGERS: u64 = 3;
const BROKERS: u32 = 3;
/// When faults start (the topic exists and is written by then) and end.
const FAULTS_FROM: Duration = Duration::from_secs(6);
const FAULTS_UNTIL: Duration = Duration::from_secs(30);
/// Simulated time one run may take before it counts as stuck.
const RUN_LIMIT: Duration = Duration::from_secs(150);

#[test]
fn seeded_broker_faults_lose_no_acknowledged_record() {
    let mut failed = Vec::new();
    let mut faults_total = std::collections::BTreeMap::new();
    let (mut acked, mut reads, mut slowest) = (0, 0, Duration::ZERO);
    for seed in crate::seeds(6) {
        let started = std::time::Instant::now();
        let report = run(seed);
        println!(
            "replication seed {seed}: {}; {} sends unknown, {} refused; {} reads by {} readers; faults {:?}; writes resumed in {:?} after heal; {:?} real time",
            report.anomalies,
            report.unknown,
            report.refused,
            report.reads,
            workload::READERS,
            report.faults,
            report.resumed,
            started.elapsed(),
        );
        acked += report.anomalies.acked;
        reads += report.reads;
        slowest = slowest.max(report.resumed.unwrap_or(Duration::MAX));
        faults::add_counts(&mut faults_total, &report.faults);
        let resumed_in_time = report.resumed.is_some_and(|r| r <= Duration::from_secs(10));
        if !report.anomalies.is_clean() || !resumed_in_time || report.anomalies.acked == 0 {
            failed.push(format!(
                "seed {seed} (replay: PUBSUB_SIM_SEED={seed}): {}, writes resumed in {:?} after heal",
                report.anomalies, report.resumed
            ));
        }
    }
    println!(
        "replication: {acked} records acknowledged, {reads} reads, faults {faults_total:?}, writes resumed at most {slowest:?} after heal"
    );
    assert!(failed.is_empty(), "anomalies found:\n{}", failed.join("\n"));
}

/// What one seed gave.
pub(crate) struct Report {
    pub anomalies: pubsub_tests::checker::Anomalies,
    pub unknown: usize,
    pub refused: usize,
    pub reads: usize,
    pub faults: std::collections::BTreeMap<&'static str, u32>,
    pub resumed: Option<Duration>,
}

/// Runs one seed and checks its history.
fn run(seed: u64) -> Report {
    let root = TempDir::new().expect("temporary directory");
    let mut sim = net::simulation(seed, RUN_LIMIT);
    for id in 1..=MANAGERS {
        let data_dir = root.path().join(format!("cm-{id}"));
        sim.host(net::cm_host(id), move || {
            crate::metadata::cluster_manager(id, MANAGERS, data_dir.clone())
        });
    }
    for id in 1..=BROKERS {
        let data_dir = root.path().join(format!("broker-{id}"));
        sim.host(net::broker_host(id), move || broker(id, data_dir.clone()));
    }
    let shared = Shared::new(BROKERS);
    workload::start(&mut sim, &shared, seed);
    let group: Vec<String> = (1..=BROKERS).map(net::broker_host).collect();
    let servers = group
        .iter()
        .cloned()
        .chain((1..=MANAGERS).map(net::cm_host))
        .collect();
    let targets = Targets { group, servers };
    let schedule = targets.schedule(&mut StdRng::seed_from_u64(seed), FAULTS_FROM, FAULTS_UNTIL);
    faults::drive(&mut sim, &targets, &schedule, shared.as_ref(), seed);
    drop(sim);
    shared.report()
}

/// One broker's software: restarted from its data directory after a crash.
async fn broker(id: u32, data_dir: std::path::PathBuf) -> turmoil::Result {
    let mut connections = net::listen(net::BROKER_PORT).await?;
    let managers = (1..=MANAGERS).map(net::cm_address).collect();
    let mut config = BrokerConfig::new(BrokerId(id), data_dir, net::broker_address(id), managers);
    config.security.link.dialer = Some(net::dialer());
    config.replica_lag_max = Duration::from_secs(3);
    pubsub_broker::run_on_connections(config, connections(), std::future::pending()).await?;
    Ok(())
}
