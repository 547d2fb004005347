//! Deterministic simulation: the cluster-manager group and the brokers' replication run
//! as in production (their real gRPC servers and channels, Raft, sled, the partition
//! logs on disk) but in one thread over turmoil's simulated network and clock, under a
//! seeded schedule of leader isolation, majority/minority splits, one-way, held and
//! slow links and crashes, while clients write and read; each history is then checked.
//!
//! - `metadata`: three cluster managers; clients create topics and brokers keep leases
//!   and change in-sync replicas.
//! - `replication`: three cluster managers and three brokers; producers write acks=all
//!   records while readers read them back, faults landing on the brokers.
//!
//! `PUBSUB_SIM_SEEDS=n` runs seeds 1..=n of each; `PUBSUB_SIM_SEED=s` replays one. The
//! fault schedule, the workload and the message latencies come from the seed; the
//! interleaving also depends on tokio's, openraft's and sled's own randomness and
//! threads, so a replay reproduces the faults exactly and the failure usually.

mod faults;
mod metadata;
mod net;
mod replication;

/// The seeds to run: `PUBSUB_SIM_SEED`, else 1..=`PUBSUB_SIM_SEEDS` (or `default`).
fn seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("PUBSUB_SIM_SEED") {
        return vec![seed.parse().expect("PUBSUB_SIM_SEED is a number")];
    }
    let n = std::env::var("PUBSUB_SIM_SEEDS").map_or(default, |n| {
        n.parse().expect("PUBSUB_SIM_SEEDS is a number")
    });
    (1..=n).collect()
}
