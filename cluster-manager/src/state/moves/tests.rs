//! Replica moves through `apply`: add, catch up, switch; compare-and-set refusals;
//! roll back; draining brokers; and, over random command sequences, the partition
//! invariants and "a move never drops a replica before its replacement is in sync".

use proptest::prelude::*;

use super::*;
use crate::command::Command;
use crate::state::testing::{cluster, register};

/// Broker 4 joins after topic `t` (one partition on 1, 2, 3) was created.
fn with_topic() -> ClusterState {
    let mut state = cluster(3);
    state
        .apply(Command::CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 3,
            settings: Default::default(),
            unclean_leader_election: false,
            now_ms: 0,
        })
        .unwrap();
    let mut bigger = cluster(4);
    bigger.topics = state.topics;
    bigger
}

fn part(state: &ClusterState) -> &Partition {
    &state.topic("t").unwrap().partitions()[0]
}

fn start(state: &mut ClusterState, from: &[u32], to: &[u32]) -> Result<Response, CommandError> {
    state.apply(Command::StartMove {
        topic: "t".into(),
        partition: 0,
        from: from.to_vec(),
        to: to.to_vec(),
    })
}

fn isr(state: &mut ClusterState, isr: &[u32]) -> Result<Response, CommandError> {
    let p = part(state);
    let (leader, epoch) = (p.leader().unwrap(), p.leader_epoch());
    state.apply(Command::UpdateIsr {
        broker: leader,
        topic: "t".into(),
        partition: 0,
        leader_epoch: epoch,
        isr: isr.to_vec(),
    })
}

fn complete(state: &mut ClusterState) -> Result<Response, CommandError> {
    state.apply(Command::CompleteMove {
        topic: "t".into(),
        partition: 0,
    })
}

fn cancel(state: &mut ClusterState) -> Result<Response, CommandError> {
    state.apply(Command::CancelMove {
        topic: "t".into(),
        partition: 0,
    })
}

#[test]
fn a_move_adds_the_new_replica_then_switches_once_it_is_in_sync() {
    let mut state = with_topic();
    assert_eq!(
        start(&mut state, &[1, 2, 3], &[4, 2, 3]).unwrap(),
        Response::MoveStarted { copies: true }
    );
    let p = part(&state);
    assert_eq!(
        p.replicas(),
        [4, 2, 3, 1],
        "target first, then the leaving broker"
    );
    assert_eq!(p.isr(), [2, 3, 1], "the new replica is not in sync yet");
    assert_eq!((p.adding(), p.removing()), (vec![4], vec![1]));
    assert!(
        !p.under_replicated(),
        "a replica being added is not missing"
    );
    assert!(matches!(
        complete(&mut state),
        Err(CommandError::MoveConflict { .. })
    ));
    isr(&mut state, &[1, 2, 3, 4]).unwrap();
    assert_eq!(
        complete(&mut state).unwrap(),
        Response::MoveCompleted {
            leader_changed: true
        }
    );
    let p = part(&state);
    assert_eq!(p.replicas(), [4, 2, 3]);
    assert_eq!(p.isr(), [4, 2, 3]);
    assert_eq!(
        p.leader(),
        Some(4),
        "the leader left; the first in-sync target leads"
    );
    assert_eq!(p.leader_epoch(), 1);
    assert!(p.moving().is_none());
}

#[test]
fn a_move_keeps_a_leader_that_stays() {
    let mut state = with_topic();
    start(&mut state, &[1, 2, 3], &[1, 2, 4]).unwrap();
    isr(&mut state, &[1, 2, 3, 4]).unwrap();
    assert_eq!(
        complete(&mut state).unwrap(),
        Response::MoveCompleted {
            leader_changed: false
        }
    );
    assert_eq!(
        (part(&state).leader(), part(&state).leader_epoch()),
        (Some(1), 0)
    );
}

#[test]
fn moves_are_compare_and_set_and_one_at_a_time() {
    let mut state = with_topic();
    assert!(matches!(
        start(&mut state, &[2, 1, 3], &[4, 2, 3]),
        Err(CommandError::MoveConflict { .. })
    ));
    start(&mut state, &[1, 2, 3], &[4, 2, 3]).unwrap();
    assert!(matches!(
        start(&mut state, &[4, 2, 3, 1], &[4, 2, 3, 1]),
        Err(CommandError::MoveConflict { .. })
    ));
    assert!(matches!(
        start(&mut state, &[1, 2, 3], &[5, 2, 3]),
        Err(CommandError::BrokerNotFound { broker: 5 })
    ));
    assert!(matches!(
        start(&mut state, &[1, 2, 3], &[4, 4, 3]),
        Err(CommandError::InvalidMove { .. })
    ));
}

#[test]
fn a_reorder_applies_at_once() {
    let mut state = with_topic();
    assert_eq!(
        start(&mut state, &[1, 2, 3], &[2, 1, 3]).unwrap(),
        Response::MoveStarted { copies: false }
    );
    let p = part(&state);
    assert_eq!((p.replicas(), p.isr()), (&[2, 1, 3][..], &[2, 1, 3][..]));
    assert!(p.moving().is_none());
    assert_eq!(
        p.leader(),
        Some(1),
        "preferred election moves the leader later"
    );
}

#[test]
fn a_cancelled_move_returns_to_its_start_and_its_leader() {
    let mut state = with_topic();
    start(&mut state, &[1, 2, 3], &[4, 2, 3]).unwrap();
    isr(&mut state, &[1, 2, 3, 4]).unwrap();
    state.apply(Command::ElectPreferredLeaders).unwrap();
    assert_eq!(
        part(&state).leader(),
        Some(4),
        "the target's first replica leads early"
    );
    assert_eq!(cancel(&mut state).unwrap(), Response::MoveCancelled);
    let p = part(&state);
    assert_eq!(p.replicas(), [1, 2, 3]);
    assert_eq!(p.isr(), [1, 2, 3]);
    assert_eq!((p.leader(), p.leader_epoch()), (Some(1), 2));
    assert!(matches!(
        cancel(&mut state),
        Err(CommandError::MoveConflict { .. })
    ));
}

#[test]
fn draining_brokers_take_no_new_replicas() {
    let mut state = with_topic();
    state
        .apply(Command::SetDraining {
            broker: 4,
            draining: true,
        })
        .unwrap();
    assert!(matches!(
        start(&mut state, &[1, 2, 3], &[4, 2, 3]),
        Err(CommandError::MoveConflict { .. })
    ));
    state
        .apply(Command::CreateTopic {
            name: "u".into(),
            partitions: 8,
            replication_factor: 3,
            settings: Default::default(),
            unclean_leader_election: false,
            now_ms: 0,
        })
        .unwrap();
    assert!(
        state.assignments(4).is_empty(),
        "new topics avoid draining brokers"
    );
    assert!(matches!(
        state.apply(Command::SetDraining {
            broker: 9,
            draining: true
        }),
        Err(CommandError::BrokerNotFound { broker: 9 })
    ));
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Step {
    Start(Vec<u32>),
    Isr(Vec<u32>),
    Complete,
    Cancel,
    Fence(u32),
    Register(u32),
    Elect,
}

fn step() -> impl Strategy<Value = Step> {
    let brokers = || proptest::sample::subsequence(vec![1u32, 2, 3, 4, 5], 1..=5);
    prop_oneof![
        proptest::sample::subsequence(vec![1u32, 2, 3, 4, 5], 3)
            .prop_shuffle()
            .prop_map(Step::Start),
        brokers().prop_map(Step::Isr),
        Just(Step::Complete),
        Just(Step::Cancel),
        (1u32..=5).prop_map(Step::Fence),
        (1u32..=5).prop_map(Step::Register),
        Just(Step::Elect),
    ]
}

fn run(state: &mut ClusterState, step: Step) {
    let current = part(state).replicas().to_vec();
    let _ = match step {
        Step::Start(to) => start(state, &current, &to),
        Step::Isr(mut set) => {
            if let Some(leader) = part(state).leader() {
                set.retain(|&b| b != leader);
                set.insert(0, leader);
                let _ = isr(state, &set);
            }
            Ok(Response::IsrUpdated)
        }
        Step::Complete => complete(state),
        Step::Cancel => cancel(state),
        Step::Fence(broker) => state.apply(Command::ShutdownBroker { broker }),
        Step::Register(broker) => state.apply(Command::RegisterBroker {
            broker,
            address: format!("10.0.0.{broker}:9392"),
            rack: None,
            kafka_address: None,
            now_ms: 1,
            lease_ms: 0,
            proven: false,
        }),
        Step::Elect => state.apply(Command::ElectPreferredLeaders),
    };
}

proptest! {
    /// Whatever happens, the invariants hold (apply asserts them), the partition never
    /// has fewer replicas than its replication factor, and the in-sync replicas always
    /// hold one that was in sync before each step (no step forgets every copy of what
    /// was acknowledged).
    #[test]
    fn moves_never_lose_the_in_sync_copies(steps in proptest::collection::vec(step(), 1..40)) {
        let mut state = with_topic();
        register(&mut state, 5, None, 0);
        for step in steps {
            let before: Vec<u32> = part(&state).isr().to_vec();
            run(&mut state, step);
            let p = part(&state);
            prop_assert!(p.replicas().len() >= 3);
            let settled = p.moving().map_or(p.replicas(), |m| &m.to[..]);
            prop_assert_eq!(settled.len(), 3);
            prop_assert!(p.isr().iter().any(|b| before.contains(b)));
        }
    }
}
