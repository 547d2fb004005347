//! The seeded fault schedule and how each fault is put on and taken off the simulated
//! network.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use turmoil::Sim;

use crate::net::host;

/// Most a message takes on a healthy link.
pub const LATENCY_MAX: Duration = Duration::from_millis(20);
/// What a slow link's messages take at most.
const SLOW_LATENCY_MAX: Duration = Duration::from_millis(400);

/// One fault on the cluster-manager nodes.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Cut the current Raft leader off from the other nodes (clients still reach it).
    IsolateLeader,
    /// Cut one node off from the others: a majority/minority split.
    Isolate(u64),
    /// Drop everything `from` sends to `to`; the other way still works.
    OneWay { from: u64, to: u64 },
    /// Kill a node; it restarts from its disk when the fault heals.
    Crash(u64),
    /// Hold every message between two nodes, delivering them all at the heal.
    Hold(u64, u64),
    /// Slow the link between two nodes down to hundreds of ms.
    Slow(u64, u64),
}

impl Fault {
    /// The fault's kind, as the report counts it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::IsolateLeader => "isolate leader",
            Fault::Isolate(_) => "majority/minority split",
            Fault::OneWay { .. } => "one-way link",
            Fault::Crash(_) => "crash and restart",
            Fault::Hold(..) => "held link",
            Fault::Slow(..) => "slow link",
        }
    }
}

/// A fault put on at `at` and healed `lasts` later.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// Faults one after the other between `start` and `end`, from `rng`.
pub fn schedule(rng: &mut StdRng, nodes: u64, start: Duration, end: Duration) -> Vec<Timed> {
    let mut faults = Vec::new();
    let mut at = start;
    while at < end {
        let lasts = Duration::from_millis(rng.random_range(500..6_000));
        let fault = pick(rng, nodes);
        faults.push(Timed { at, lasts, fault });
        at += lasts + Duration::from_millis(rng.random_range(300..3_000));
    }
    faults
}

fn pick(rng: &mut StdRng, nodes: u64) -> Fault {
    let a = rng.random_range(1..=nodes);
    let b = (a + rng.random_range(1..nodes) - 1) % nodes + 1;
    match rng.random_range(0..6) {
        0 => Fault::IsolateLeader,
        1 => Fault::Isolate(a),
        2 => Fault::OneWay { from: a, to: b },
        3 => Fault::Crash(a),
        4 => Fault::Hold(a, b),
        _ => Fault::Slow(a, b),
    }
}

/// Puts `fault` on; `leader` is the leader the clients last saw.
pub fn inject(sim: &mut Sim<'_>, fault: Fault, nodes: u64, leader: Option<u64>) {
    match fault {
        Fault::IsolateLeader => inject(sim, Fault::Isolate(leader.unwrap_or(1)), nodes, None),
        Fault::Isolate(node) => {
            for other in (1..=nodes).filter(|o| *o != node) {
                sim.partition(host(node), host(other));
            }
        }
        Fault::OneWay { from, to } => sim.partition_oneway(host(from), host(to)),
        Fault::Crash(node) => sim.crash(host(node)),
        Fault::Hold(a, b) => sim.hold(host(a), host(b)),
        Fault::Slow(a, b) => sim.set_link_max_message_latency(host(a), host(b), SLOW_LATENCY_MAX),
    }
}

/// Takes every fault off: links healthy and fast again, crashed nodes restarted.
pub fn heal(sim: &mut Sim<'_>, nodes: u64) {
    for a in 1..=nodes {
        for b in (a + 1)..=nodes {
            sim.release(host(a), host(b));
            sim.repair(host(a), host(b));
            sim.set_link_max_message_latency(host(a), host(b), LATENCY_MAX);
        }
        if !sim.is_host_running(host(a)) {
            sim.bounce(host(a));
        }
    }
}
