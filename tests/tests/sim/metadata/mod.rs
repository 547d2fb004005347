//! The cluster-manager group alone: three nodes under faults, an admin creating
//! topics through random nodes, three brokers (clients here) heartbeating and shrinking
//! or growing their partitions' in-sync replicas; `history` checks what they saw.

mod history;
mod workload;

use std::rc::Rc;
use std::time::Duration;

use pubsub_cluster_manager::{ClusterManagerConfig, Member, run_on_connections};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tempfile::TempDir;

use self::workload::Shared;
use crate::faults::{self, Targets};
use crate::net;

/// Cluster-manager nodes in the group.
const NODES: u64 = 3;
/// When faults start (the group has elected its first leader by then) and end.
const FAULTS_FROM: Duration = Duration::from_secs(3);
const FAULTS_UNTIL: Duration = Duration::from_secs(30);
/// Simulated time one run may take before it counts as stuck.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn seeded_faults_lose_no_metadata() {
    let mut failed = Vec::new();
    let mut totals = Totals::default();
    for seed in crate::seeds(12) {
        let started = std::time::Instant::now();
        let (history, anomalies) = run(seed);
        println!(
            "metadata seed {seed}: {} topics ({} acked), {} ISR changes, {} partition reads, faults {:?}, writes resumed in {:?} after heal, {} anomalies, {:?} real time",
            history.creates.len(),
            history
                .creates
                .values()
                .filter(|(_, o)| *o == history::Outcome::Acked)
                .count(),
            history.isr_changes,
            history.partitions.values().map(|v| v.len()).sum::<usize>(),
            history.faults,
            history.healed_in,
            anomalies.len(),
            started.elapsed(),
        );
        totals.add(&history, anomalies.len());
        if !anomalies.is_empty() {
            failed.push(format!(
                "seed {seed} (replay: PUBSUB_SIM_SEED={seed}):\n  {}",
                anomalies.join("\n  ")
            ));
        }
    }
    println!("metadata: {totals}");
    assert!(failed.is_empty(), "anomalies found:\n{}", failed.join("\n"));
}

/// Runs one seed and checks its history.
fn run(seed: u64) -> (history::History, Vec<String>) {
    let root = TempDir::new().expect("temporary directory");
    let mut sim = crate::net::simulation(seed, RUN_LIMIT);
    for id in 1..=NODES {
        let data_dir = root.path().join(format!("cm-{id}"));
        sim.host(net::cm_host(id), move || {
            cluster_manager(id, NODES, data_dir.clone())
        });
    }
    let shared = Shared::new(NODES);
    sim.client("admin", workload::admin(shared.clone(), seed));
    sim.client("brokers", workload::brokers(shared.clone(), seed));
    sim.client("observer", workload::observer(shared.clone()));
    let group: Vec<String> = (1..=NODES).map(net::cm_host).collect();
    let targets = Targets {
        servers: group.clone(),
        group,
    };
    let schedule = targets.schedule(&mut StdRng::seed_from_u64(seed), FAULTS_FROM, FAULTS_UNTIL);
    faults::drive(&mut sim, &targets, &schedule, shared.as_ref(), seed);
    let history = Rc::try_unwrap(shared).ok().map(|s| s.history.into_inner());
    let history = history.unwrap_or_default();
    let anomalies = history::check(&history);
    (history, anomalies)
}

/// One cluster-manager node's software, of a group of `nodes`: restarted from its
/// data directory after a crash, as a process would be.
pub async fn cluster_manager(id: u64, nodes: u64, data_dir: std::path::PathBuf) -> turmoil::Result {
    let mut connections = net::listen(net::CM_PORT).await?;
    let mut config = ClusterManagerConfig::new(id, data_dir);
    config.peers = (1..=nodes)
        .map(|id| Member {
            id,
            address: net::cm_address(id),
        })
        .collect();
    config.lease = Duration::from_secs(4);
    config.security.link.dialer = Some(net::dialer());
    let address = net::cm_address(id);
    let mut attempts = 0;
    loop {
        let ran = run_on_connections(
            config.clone(),
            &address,
            &mut connections,
            std::future::pending(),
        )
        .await;
        match ran {
            Ok(()) => return Ok(()),
            // The crashed life's sled handle releases its file lock from sled's own
            // thread; wait for it in real time (the simulated clock stands still).
            Err(pubsub_cluster_manager::Error::Storage { .. }) if attempts < 200 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What every seed of a run added up to, for docs/reliability.md.
#[derive(Default)]
struct Totals {
    seeds: usize,
    acked: usize,
    isr_changes: u32,
    faults: std::collections::BTreeMap<&'static str, u32>,
    slowest_resume: Duration,
    anomalies: usize,
}

impl Totals {
    fn add(&mut self, history: &history::History, anomalies: usize) {
        self.seeds += 1;
        let acked = history
            .creates
            .values()
            .filter(|(_, o)| *o == history::Outcome::Acked);
        self.acked += acked.count();
        self.isr_changes += history.isr_changes;
        faults::add_counts(&mut self.faults, &history.faults);
        self.slowest_resume = self
            .slowest_resume
            .max(history.healed_in.unwrap_or_default());
        self.anomalies += anomalies;
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} seeds: {} topic creations and {} ISR changes acknowledged, faults {:?}, writes resumed at most {:?} after heal, {} anomalies",
            self.seeds,
            self.acked,
            self.isr_changes,
            self.faults,
            self.slowest_resume,
            self.anomalies
        )
    }
}
