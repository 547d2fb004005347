//! Deterministic simulation of the cluster-manager Raft group: three nodes, their real
//! gRPC servers and clients, Raft and sled storage, run in one thread over turmoil's
//! simulated network and clock, under a seeded schedule of partitions, one-way links,
//! held and slow links and crashes, with clients creating topics and brokers keeping
//! leases throughout. The history is then checked (see `history`).
//!
//! `PUBSUB_SIM_SEEDS=n` runs seeds 1..=n (default 12); `PUBSUB_SIM_SEED=s` replays one.
//! The fault schedule, the workload and the message latencies come from the seed; the
//! interleaving also depends on sled's and tokio's own threads and randomness, so a
//! replay reproduces the faults exactly and the failure usually.

mod faults;
mod history;
mod net;
mod workload;

use std::rc::Rc;
use std::time::Duration;

use pubsub_cluster_manager::{ClusterManagerConfig, Member, run_on_connections};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tempfile::TempDir;

use crate::workload::Shared;

/// Cluster-manager nodes in the group.
const NODES: u64 = 3;
/// When faults start (the group has elected its first leader by then) and end.
const FAULTS_FROM: Duration = Duration::from_secs(3);
const FAULTS_UNTIL: Duration = Duration::from_secs(30);
/// Simulated time one run may take before it counts as stuck.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn seeded_faults_lose_no_metadata() {
    let seeds: Vec<u64> = match std::env::var("PUBSUB_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("PUBSUB_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("PUBSUB_SIM_SEEDS")
                .map_or(12, |n| n.parse().expect("PUBSUB_SIM_SEEDS is a number"));
            (1..=n).collect()
        }
    };
    let mut failed = Vec::new();
    let mut totals = Totals::default();
    for seed in seeds {
        let started = std::time::Instant::now();
        let (history, anomalies) = run(seed);
        println!(
            "seed {seed}: {} topics ({} acked), {} ISR changes, {} partition reads, faults {:?}, writes resumed in {:?} after heal, {} anomalies, {:?} real time",
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
    println!("{totals}");
    assert!(failed.is_empty(), "anomalies found:\n{}", failed.join("\n"));
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
        for (kind, n) in &history.faults {
            *self.faults.entry(kind).or_default() += n;
        }
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

/// Runs one seed and checks its history.
fn run(seed: u64) -> (history::History, Vec<String>) {
    let root = TempDir::new().expect("temporary directory");
    let mut sim = turmoil::Builder::new()
        .simulation_duration(RUN_LIMIT)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(faults::LATENCY_MAX)
        .rng_seed(seed)
        .build();
    for id in 1..=NODES {
        let data_dir = root.path().join(format!("node-{id}"));
        sim.host(net::host(id), move || node(id, data_dir.clone()));
    }
    let shared = Shared::new(NODES);
    sim.client("admin", workload::admin(shared.clone(), seed));
    sim.client("brokers", workload::brokers(shared.clone(), seed));
    sim.client("observer", workload::observer(shared.clone()));
    drive(&mut sim, &shared, seed);
    let history = Rc::try_unwrap(shared).ok().map(|s| s.history.into_inner());
    let history = history.unwrap_or_default();
    let anomalies = history::check(&history);
    (history, anomalies)
}

/// Steps the simulation, putting the seed's faults on and off, until the clients end.
fn drive(sim: &mut turmoil::Sim<'_>, shared: &Rc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let schedule = faults::schedule(&mut rng, NODES, FAULTS_FROM, FAULTS_UNTIL);
    let mut next = schedule.iter().peekable();
    let mut healing: Option<Duration> = None;
    loop {
        let now = sim.elapsed();
        if healing.is_some_and(|at| now >= at) {
            faults::heal(sim, NODES);
            healing = None;
        }
        if healing.is_none() {
            if let Some(timed) = next.next_if(|t| now >= t.at) {
                let leader = shared.leader.get().map(|(_, leader)| leader);
                faults::inject(sim, timed.fault, NODES, leader);
                *shared
                    .history
                    .borrow_mut()
                    .faults
                    .entry(timed.fault.kind())
                    .or_default() += 1;
                healing = Some(now + timed.lasts);
            } else if next.peek().is_none() && shared.healed_at.get().is_none() {
                faults::heal(sim, NODES);
                shared.healed_at.set(Some(now));
            }
        }
        match sim.step() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                panic!("seed {seed}: the simulation failed: {e} (replay: PUBSUB_SIM_SEED={seed})")
            }
        }
    }
}

/// One cluster-manager node's software: restarted from its data directory after a
/// crash, as a process would be.
async fn node(id: u64, data_dir: std::path::PathBuf) -> turmoil::Result {
    let mut connections = net::listen().await?;
    let mut config = ClusterManagerConfig::new(id, data_dir);
    config.peers = (1..=NODES)
        .map(|id| Member {
            id,
            address: net::address(id),
        })
        .collect();
    config.lease = Duration::from_secs(4);
    config.security.link.dialer = Some(net::dialer());
    let address = net::address(id);
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
