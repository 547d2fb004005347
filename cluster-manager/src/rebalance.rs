//! Carrying out balance: what the Raft leader proposes, every [`BALANCE_CHECK`], to
//! move replicas as `balance::plan` says.
//!
//! Each check reads the applied state and, in order:
//! 1. completes every move whose target replicas are all in sync, and rolls back every
//!    move whose receiving broker is fenced (it died: its partial copy is dropped,
//!    and the partition keeps the replicas it had);
//! 2. while a broker that is not draining is fenced, starts nothing new (a restart is
//!    not a departure, and a move onto or off it would wait on it);
//! 3. plans (replica counts first, then the log sizes partition leaders report in
//!    their heartbeats) over the state as it will be once the running moves are done,
//!    and starts
//!    the first moves of the plan, at most [`MOVES_AT_ONCE`] running (each partition's
//!    moves merged into one); with automatic balancing off, only moves off draining
//!    brokers. Pure reorders (preferred leaders only, no data) start once no data move
//!    is left to plan; preferred leader election then moves the leaderships.
//!
//! Everything it decides comes from the Raft state, so a new leader picks up where the
//! old one stopped, and every command is compare-and-set, so a duplicate from a
//! deposed leader is refused rather than applied twice. The check runs in a task of its
//! own ([`run`]) on the blocking pool, so planning over a large cluster never delays
//! lease expiry, and is skipped while nothing it looks at changed since a check that
//! found nothing to do (while only sizes changed, for up to [`SIZES_RECHECK`]).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::balance::{self, Broker, Move, PartitionReplicas, Plan};
use crate::command::Command;
use crate::lease::propose;
use crate::manager::Manager;
use crate::placement::Candidate;
use crate::state::ClusterState;

/// Runs balance checks while this node leads, until the task is aborted.
pub(crate) async fn run(manager: Arc<Manager>) {
    let mut tick = tokio::time::interval(BALANCE_CHECK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // What the last check that found nothing to do looked at, and when it ran.
    let mut idle: Option<(u64, Instant)> = None;
    loop {
        tick.tick().await;
        if manager.metrics().current_leader != Some(manager.id()) {
            idle = None;
            continue;
        }
        let state = manager.view().state;
        let seen = fingerprint(&state);
        if idle.is_some_and(|(was, at)| was == seen && at.elapsed() < SIZES_RECHECK) {
            continue;
        }
        let commands = match tokio::task::spawn_blocking(move || next_commands(&state)).await {
            Ok(commands) => commands,
            Err(e) => {
                tracing::error!(error = %e, "balance check failed");
                continue;
            }
        };
        idle = commands.is_empty().then(|| (seen, Instant::now()));
        for command in commands {
            propose(&manager, command, "replica move").await;
        }
    }
}

/// A hash of everything a balance check reads (brokers' racks, fencing and draining,
/// the balancing settings, every partition's replicas, in-sync replicas and move), so
/// an unchanged cluster is not planned again. Sizes are left out: they change all the
/// time on a busy cluster, so a change of sizes alone is planned for once every
/// [`SIZES_RECHECK`].
fn fingerprint(state: &ClusterState) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    for broker in state.brokers().values() {
        (
            broker.id(),
            broker.rack(),
            broker.fenced(),
            broker.draining(),
        )
            .hash(&mut hasher);
    }
    (state.balancing().auto, state.balancing().move_rate_bytes).hash(&mut hasher);
    for (topic, partition, p) in state.partitions() {
        (topic, partition, p.replicas(), p.isr()).hash(&mut hasher);
        p.moving().map(|m| (&m.from, &m.to)).hash(&mut hasher);
    }
    hasher.finish()
}

/// How often the leader looks at moves and balance.
pub(crate) const BALANCE_CHECK: Duration = Duration::from_secs(2);
/// How long a check that found nothing to do stands while only sizes change: planning
/// a large cluster costs a second of CPU, and bytes drift slowly.
const SIZES_RECHECK: Duration = Duration::from_secs(30);
/// Most data moves under way at once over the cluster: bounds the extra replicas (and
/// the copy traffic) a balance adds at any moment.
pub(crate) const MOVES_AT_ONCE: usize = 4;

/// The plan over `state`: every registered broker (draining if marked so or listed in
/// `draining`), every partition as it will be once its running move is done.
pub(crate) fn plan(state: &ClusterState, draining: &BTreeSet<u32>, max_moves: usize) -> Plan {
    let brokers: Vec<Broker<'_>> = state
        .brokers()
        .values()
        .map(|b| Broker {
            candidate: Candidate {
                id: b.id(),
                rack: b.rack(),
            },
            draining: b.draining() || draining.contains(&b.id()),
        })
        .collect();
    let partitions: Vec<PartitionReplicas> = state
        .partitions()
        .map(|(topic, partition, p)| PartitionReplicas {
            topic: topic.to_string(),
            partition,
            replicas: p.moving().map_or(p.replicas(), |m| &m.to).to_vec(),
            bytes: p.size_bytes(),
        })
        .collect();
    balance::plan(&brokers, &partitions, max_moves)
}

/// One move per partition: the first `from` and the last `to` of its moves in the
/// plan, in the order the partitions first appear.
pub(crate) fn per_partition(moves: Vec<Move>) -> Vec<Move> {
    let mut merged: Vec<Move> = Vec::new();
    for m in moves {
        match merged
            .iter_mut()
            .find(|seen| seen.topic == m.topic && seen.partition == m.partition)
        {
            Some(seen) => seen.to = m.to,
            None => merged.push(m),
        }
    }
    merged.retain(|m| m.from != m.to);
    merged
}

/// The commands one balance check proposes, in order.
pub(crate) fn next_commands(state: &ClusterState) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut running = 0;
    for (topic, partition, p) in state.moving_partitions() {
        let Some(moving) = p.moving() else { continue };
        let fenced = |b: &u32| state.brokers().get(b).is_none_or(|b| b.fenced());
        if moving.to.iter().all(|b| p.isr().contains(b)) {
            commands.push(Command::CompleteMove {
                topic: topic.to_string(),
                partition,
            });
        } else if p.adding().iter().any(fenced) {
            commands.push(Command::CancelMove {
                topic: topic.to_string(),
                partition,
            });
        } else {
            running += 1;
        }
    }
    let blocked = state
        .brokers()
        .values()
        .any(|b| b.fenced() && !b.draining());
    if blocked || running >= MOVES_AT_ONCE || !commands.is_empty() {
        // Completions first: the next check plans on the state they leave.
        return commands;
    }
    let auto = state.balancing().auto;
    let draining: BTreeSet<u32> = state
        .brokers()
        .values()
        .filter(|b| b.draining())
        .map(|b| b.id())
        .collect();
    let moves: Vec<Move> = per_partition(plan(state, &BTreeSet::new(), usize::MAX).moves)
        .into_iter()
        .filter(|m| auto || m.from.iter().any(|b| draining.contains(b)))
        .filter(|m| {
            state
                .topic(&m.topic)
                .and_then(|t| t.partitions().get(m.partition as usize))
                .is_some_and(|p| p.moving().is_none() && p.replicas() == m.from)
        })
        .collect();
    let copies = |m: &Move| m.to.iter().any(|b| !m.from.contains(b));
    let data: Vec<Move> = moves.iter().filter(|m| copies(m)).cloned().collect();
    let chosen = if data.is_empty() {
        moves
    } else {
        data.into_iter().take(MOVES_AT_ONCE - running).collect()
    };
    commands.extend(chosen.into_iter().map(|m| Command::StartMove {
        topic: m.topic,
        partition: m.partition,
        from: m.from,
        to: m.to,
    }));
    commands
}

#[cfg(test)]
mod tests;
