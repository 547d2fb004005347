//! The seeded fault schedule, how each fault is put on and taken off the simulated
//! network, and the loop that steps a simulation through it.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use turmoil::Sim;

/// Most a message takes on a healthy link.
pub const LATENCY_MAX: Duration = Duration::from_millis(20);
/// What a slow link's messages take at most.
const SLOW_LATENCY_MAX: Duration = Duration::from_millis(400);

/// One fault on the hosts of the group under test, named by their index.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Cut the group's current leader off from every other server (clients still
    /// reach it).
    IsolateLeader,
    /// Cut one host off from every other server: a majority/minority split.
    Isolate(usize),
    /// Drop everything `from` sends to `to`; the other way still works.
    OneWay { from: usize, to: usize },
    /// Kill a host; it restarts from its disk when the fault heals.
    Crash(usize),
    /// Hold every message between two hosts, delivering them all at the heal.
    Hold(usize, usize),
    /// Slow the link between two hosts down to hundreds of ms.
    Slow(usize, usize),
}

impl Fault {
    /// The fault's kind, as the reports count it.
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

/// Where faults land: the group under test, and every server host (the group
/// included) whose links to it a fault may cut.
pub struct Targets {
    pub group: Vec<String>,
    pub servers: Vec<String>,
}

impl Targets {
    /// Faults one after the other between `start` and `end`, from `rng`.
    pub fn schedule(&self, rng: &mut StdRng, start: Duration, end: Duration) -> Vec<Timed> {
        let mut faults = Vec::new();
        let mut at = start;
        let n = self.group.len();
        while at < end {
            let lasts = Duration::from_millis(rng.random_range(500..6_000));
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            let fault = match rng.random_range(0..6) {
                0 => Fault::IsolateLeader,
                1 => Fault::Isolate(a),
                2 => Fault::OneWay { from: a, to: b },
                3 => Fault::Crash(a),
                4 => Fault::Hold(a, b),
                _ => Fault::Slow(a, b),
            };
            faults.push(Timed { at, lasts, fault });
            at += lasts + Duration::from_millis(rng.random_range(300..3_000));
        }
        faults
    }

    /// Puts `fault` on; `leader` is the group's leader as the clients last saw it.
    fn inject(&self, sim: &mut Sim<'_>, fault: Fault, leader: Option<&str>) {
        let host = |i: usize| self.group[i].as_str();
        match fault {
            Fault::IsolateLeader => {
                let leader = leader.and_then(|l| self.group.iter().position(|h| h == l));
                self.inject(sim, Fault::Isolate(leader.unwrap_or(0)), None);
            }
            Fault::Isolate(i) => {
                for other in self.servers.iter().filter(|o| *o != host(i)) {
                    sim.partition(host(i), other.as_str());
                }
            }
            Fault::OneWay { from, to } => sim.partition_oneway(host(from), host(to)),
            Fault::Crash(i) => sim.crash(host(i)),
            Fault::Hold(a, b) => sim.hold(host(a), host(b)),
            Fault::Slow(a, b) => {
                sim.set_link_max_message_latency(host(a), host(b), SLOW_LATENCY_MAX)
            }
        }
    }

    /// Takes every fault off: links healthy and fast again, crashed hosts restarted.
    fn heal(&self, sim: &mut Sim<'_>) {
        for (i, a) in self.servers.iter().enumerate() {
            for b in &self.servers[i + 1..] {
                sim.release(a.as_str(), b.as_str());
                sim.repair(a.as_str(), b.as_str());
                sim.set_link_max_message_latency(a.as_str(), b.as_str(), LATENCY_MAX);
            }
        }
        for host in &self.group {
            if !sim.is_host_running(host.as_str()) {
                sim.bounce(host.as_str());
            }
        }
    }
}

/// What the driver tells the clients and asks of them.
pub trait Observed {
    /// The group's leader as the clients last saw it.
    fn leader(&self) -> Option<String>;
    /// Called once every fault is healed for good.
    fn healed(&self, at: Duration);
    /// Counts one injected fault.
    fn injected(&self, kind: &'static str);
}

/// Steps `sim`, putting the `schedule`'s faults on and off one at a time, healing
/// everything after the last, until the clients end.
pub fn drive(
    sim: &mut Sim<'_>,
    targets: &Targets,
    schedule: &[Timed],
    observed: &dyn Observed,
    seed: u64,
) {
    let mut next = schedule.iter().peekable();
    let mut healing: Option<Duration> = None;
    let mut healed = false;
    loop {
        let now = sim.elapsed();
        if healing.is_some_and(|at| now >= at) {
            targets.heal(sim);
            healing = None;
        }
        if healing.is_none() {
            if let Some(timed) = next.next_if(|t| now >= t.at) {
                targets.inject(sim, timed.fault, observed.leader().as_deref());
                observed.injected(timed.fault.kind());
                healing = Some(now + timed.lasts);
            } else if next.peek().is_none() && !healed {
                targets.heal(sim);
                observed.healed(now);
                healed = true;
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

/// Adds up `counts` into `into`.
pub fn add_counts(into: &mut BTreeMap<&'static str, u32>, counts: &BTreeMap<&'static str, u32>) {
    for (kind, n) in counts {
        *into.entry(kind).or_default() += n;
    }
}
