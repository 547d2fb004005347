//! The balance loop simulated over the pure state machine: checks propose commands,
//! leaders report caught-up replicas, until nothing is left to do.

use super::*;
use crate::command::Response;
use crate::state::testing::register;

/// Three brokers holding topic `t` of 12 partitions at RF 3.
fn three_brokers() -> ClusterState {
    let mut state = ClusterState::default();
    (1..=3).for_each(|b| register(&mut state, b, None, 0));
    state
        .apply(Command::CreateTopic {
            name: "t".into(),
            partitions: 12,
            replication_factor: 3,
            settings: Default::default(),
            unclean_leader_election: false,
            now_ms: 0,
        })
        .unwrap();
    state
}

/// Every moving partition's leader reports all its replicas in sync (they caught up).
fn catch_up(state: &mut ClusterState) {
    let updates: Vec<Command> = state
        .moving_partitions()
        .filter_map(|(topic, partition, p)| {
            Some(Command::UpdateIsr {
                broker: p.leader()?,
                topic: topic.to_string(),
                partition,
                leader_epoch: p.leader_epoch(),
                isr: p.replicas().to_vec(),
            })
        })
        .collect();
    for update in updates {
        state.apply(update).unwrap();
    }
}

/// Runs checks (each followed by catch-up and preferred election) until one proposes
/// nothing; returns how many checks that took.
fn settle(state: &mut ClusterState) -> usize {
    for round in 1..=100 {
        let commands = next_commands(state);
        if commands.is_empty() {
            return round;
        }
        for command in commands {
            state.apply(command).unwrap();
        }
        assert!(state.moving_partitions().count() <= MOVES_AT_ONCE);
        catch_up(state);
        state.apply(Command::ElectPreferredLeaders).unwrap();
    }
    panic!("balancing did not settle in 100 checks");
}

fn counts(state: &ClusterState, broker: u32) -> (usize, usize) {
    let replicas = state.assignments(broker).len();
    let leads = state
        .partitions()
        .filter(|(_, _, p)| p.leader() == Some(broker))
        .count();
    (replicas, leads)
}

#[test]
fn a_fourth_broker_takes_a_quarter_of_replicas_and_leaders() {
    let mut state = three_brokers();
    register(&mut state, 4, None, 0);
    let checks = settle(&mut state);
    for broker in 1..=4 {
        assert_eq!(counts(&state, broker), (9, 3), "broker {broker}");
    }
    assert!(state.partitions().all(|(_, _, p)| p.replicas().len() == 3));
    assert!(checks < 20, "{checks} checks");
}

/// Every partition's leader reports `size(partition)` bytes in a heartbeat.
fn report_sizes(state: &mut ClusterState, size: impl Fn(u32) -> u64) {
    let reports: Vec<Command> = state
        .partitions()
        .filter_map(|(topic, partition, p)| {
            Some(Command::Heartbeat {
                broker: p.leader()?,
                now_ms: 0,
                sizes: vec![crate::command::PartitionSize {
                    topic: topic.to_string(),
                    partition,
                    bytes: size(partition),
                }],
            })
        })
        .collect();
    for report in reports {
        state.apply(report).unwrap();
    }
}

/// Bytes of the replicas each broker holds, by reported sizes.
fn loads(state: &ClusterState) -> Vec<u64> {
    (1..=4)
        .map(|b| {
            let held = state
                .partitions()
                .filter(|(_, _, p)| p.replicas().contains(&b));
            held.map(|(_, _, p)| p.size_bytes()).sum()
        })
        .collect()
}

#[test]
fn a_fourth_broker_evens_out_bytes_as_well_as_counts() {
    const GIB: u64 = 1 << 30;
    let mut state = three_brokers();
    // Four partitions of 8 GiB and eight of 256 MiB: each broker ends up without three
    // partitions, so even loads need each to lack one big and two small ones.
    report_sizes(&mut state, |p| if p < 4 { 8 * GIB } else { GIB / 4 });
    let reported = state
        .partitions()
        .map(|(_, _, p)| p.size_bytes())
        .sum::<u64>();
    assert_eq!(reported, 34 * GIB);
    register(&mut state, 4, None, 0);
    settle(&mut state);
    for broker in 1..=4 {
        assert_eq!(counts(&state, broker), (9, 3), "broker {broker}");
    }
    assert_eq!(loads(&state), [51 * GIB / 2; 4]);
}

#[test]
fn without_auto_balance_a_new_broker_gets_nothing_but_draining_still_empties() {
    let mut state = three_brokers();
    state
        .apply(Command::SetBalancing {
            auto: Some(false),
            move_rate_bytes: None,
        })
        .unwrap();
    register(&mut state, 4, None, 0);
    settle(&mut state);
    assert_eq!(counts(&state, 4), (0, 0));
    state
        .apply(Command::SetDraining {
            broker: 1,
            draining: true,
        })
        .unwrap();
    settle(&mut state);
    assert_eq!(counts(&state, 1), (0, 0), "drained");
    assert!(state.partitions().all(|(_, _, p)| p.replicas().len() == 3
        && p.isr().len() == 3
        && !p.replicas().contains(&1)));
}

#[test]
fn a_move_to_a_dead_broker_rolls_back_and_nothing_starts_while_one_is_down() {
    let mut state = three_brokers();
    register(&mut state, 4, None, 0);
    let started = next_commands(&state);
    assert_eq!(started.len(), MOVES_AT_ONCE);
    for command in started {
        assert_eq!(
            state.apply(command).unwrap(),
            Response::MoveStarted { copies: true }
        );
    }
    state.apply(Command::ShutdownBroker { broker: 4 }).unwrap();
    let rollbacks = next_commands(&state);
    assert_eq!(rollbacks.len(), MOVES_AT_ONCE);
    assert!(
        rollbacks
            .iter()
            .all(|c| matches!(c, Command::CancelMove { .. }))
    );
    for command in rollbacks {
        state.apply(command).unwrap();
    }
    assert_eq!(state.moving_partitions().count(), 0);
    assert!(next_commands(&state).is_empty(), "broker 4 is down: wait");
    register(&mut state, 4, None, 0);
    settle(&mut state);
    assert_eq!(counts(&state, 4), (9, 3));
}

#[test]
fn merged_moves_keep_the_first_source_and_the_last_target() {
    let step = |from: &[u32], to: &[u32], partition| Move {
        topic: "t".into(),
        partition,
        from: from.to_vec(),
        to: to.to_vec(),
        bytes: 0,
    };
    let merged = per_partition(vec![
        step(&[1, 2, 3], &[4, 2, 3], 0),
        step(&[5, 6, 7], &[5, 6, 7], 1),
        step(&[4, 2, 3], &[2, 4, 3], 0),
    ]);
    assert_eq!(merged, [step(&[1, 2, 3], &[2, 4, 3], 0)]);
}
