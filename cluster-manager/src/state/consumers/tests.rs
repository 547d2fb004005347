use proptest::prelude::*;

use super::*;

const ALL: usize = SUBSCRIPTION_STATE_PARTITIONS as usize;

fn owned_by(state: &ConsumerManagers, address: &str) -> Vec<u32> {
    let shards = state.shards().iter().enumerate();
    shards
        .filter(|(_, s)| s.owner.as_deref() == Some(address) && !s.releasing)
        .map(|(i, _)| i as u32)
        .collect()
}

fn releasing_of(state: &ConsumerManagers, address: &str) -> Vec<u32> {
    let shards = state.shards().iter().enumerate();
    shards
        .filter(|(_, s)| s.owner.as_deref() == Some(address) && s.releasing)
        .map(|(i, _)| i as u32)
        .collect()
}

/// A node heartbeats holding exactly what it owns and keeps (it released the rest).
fn settle(state: &mut ConsumerManagers, address: &str) {
    let held = owned_by(state, address);
    state.heartbeat(address, &held, 0).unwrap();
}

#[test]
fn the_first_consumer_manager_owns_every_partition() {
    let mut state = ConsumerManagers::default();
    state.heartbeat("a:1", &[], 5).unwrap();
    assert_eq!(owned_by(&state, "a:1").len(), ALL);
    assert!(state.shards().iter().all(|s| s.epoch == 1));
}

#[test]
fn a_second_one_gets_half_once_the_first_lets_go() {
    let mut state = ConsumerManagers::default();
    settle(&mut state, "a:1");
    settle(&mut state, "b:1");
    // Nothing moves until the owner has let go.
    assert_eq!(owned_by(&state, "b:1"), Vec::<u32>::new());
    assert_eq!(releasing_of(&state, "a:1").len(), ALL / 2);
    // A heartbeat from before it let go (still holding all) frees nothing.
    let all: Vec<u32> = (0..ALL as u32).collect();
    state.heartbeat("a:1", &all, 0).unwrap();
    assert_eq!(owned_by(&state, "b:1"), Vec::<u32>::new());
    settle(&mut state, "a:1");
    assert_eq!(owned_by(&state, "a:1").len(), ALL / 2);
    assert_eq!(owned_by(&state, "b:1").len(), ALL / 2);
    for shard in owned_by(&state, "b:1") {
        assert_eq!(state.shards()[shard as usize].epoch, 2, "granted anew");
    }
}

#[test]
fn a_fenced_owners_partitions_go_to_the_others_with_a_new_epoch() {
    let mut state = ConsumerManagers::default();
    for node in ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"] {
        settle(&mut state, node);
    }
    let counts: Vec<usize> = ["a:1", "b:1", "c:1"]
        .iter()
        .map(|n| owned_by(&state, n).len())
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), ALL);
    assert!(counts.iter().all(|&c| (5..=6).contains(&c)), "{counts:?}");
    let lost = owned_by(&state, "b:1");
    let renewals = state.live().find(|(a, _)| *a == "b:1").unwrap().1;
    // A heartbeat after the judgement saves it.
    state.heartbeat("b:1", &lost, 0).unwrap();
    let stale = SilentConsumerManager {
        address: "b:1".into(),
        renewals,
    };
    let saved = state.fence_silent(std::slice::from_ref(&stale));
    assert_eq!(saved, Response::ConsumerManagersFenced { fenced: vec![] });
    let renewals = renewals + 1;
    let fenced = state.fence_silent(&[SilentConsumerManager {
        address: "b:1".into(),
        renewals,
    }]);
    assert_eq!(
        fenced,
        Response::ConsumerManagersFenced {
            fenced: vec!["b:1".into()]
        }
    );
    for shard in lost {
        let shard = &state.shards()[shard as usize];
        assert!(matches!(shard.owner.as_deref(), Some("a:1" | "c:1")));
        assert!(shard.epoch >= 2);
    }
    assert_eq!(
        owned_by(&state, "a:1").len() + owned_by(&state, "c:1").len(),
        ALL
    );
}

#[test]
fn the_last_fenced_leaves_every_partition_unowned() {
    let mut state = ConsumerManagers::default();
    settle(&mut state, "a:1");
    state.fence_silent(&[SilentConsumerManager {
        address: "a:1".into(),
        renewals: 1,
    }]);
    assert!(state.shards().iter().all(|s| s.owner.is_none()));
    settle(&mut state, "b:1");
    assert!(state.shards().iter().all(|s| s.epoch == 2));
}

#[test]
fn registrations_are_bounded() {
    let mut state = ConsumerManagers::default();
    for n in 0..CONSUMER_MANAGERS_MAX {
        state.heartbeat(&format!("n{n}:1"), &[], 0).unwrap();
    }
    assert!(matches!(
        state.heartbeat("one-more:1", &[], 0),
        Err(CommandError::LimitExceeded { .. })
    ));
    state.heartbeat("n0:1", &[], 0).expect("a known one renews");
}

proptest! {
    /// Whatever the order of heartbeats and fencing: every partition has at most one
    /// owner, a live one whenever any is live; epochs never go back; and once every
    /// node has heartbeated holding what it keeps, partitions are spread evenly.
    #[test]
    fn ownership_stays_single_live_and_ends_even(
        steps in proptest::collection::vec((0usize..4, any::<bool>()), 1..60)
    ) {
        let names = ["a:1", "b:1", "c:1", "d:1"];
        let mut state = ConsumerManagers::default();
        let mut epochs = [0u64; ALL];
        for (node, fence) in steps {
            let address = names[node];
            if fence {
                let renewals = state.live().find(|(a, _)| *a == address).map(|(_, r)| r);
                if let Some(renewals) = renewals {
                    state.fence_silent(&[SilentConsumerManager { address: address.into(), renewals }]);
                }
            } else {
                settle(&mut state, address);
            }
            let live: Vec<&str> = state.live().map(|(a, _)| a).collect();
            for (i, shard) in state.shards().iter().enumerate() {
                prop_assert!(shard.epoch >= epochs[i]);
                epochs[i] = shard.epoch;
                match &shard.owner {
                    Some(owner) => prop_assert!(live.contains(&owner.as_str())),
                    None => prop_assert!(live.is_empty()),
                }
            }
        }
        let live: Vec<String> = state.live().map(|(a, _)| a.to_string()).collect();
        for _ in 0..3 {
            for address in &live {
                settle(&mut state, address);
            }
        }
        if !live.is_empty() {
            let (floor, ceil) = share(ALL, live.len());
            for address in &live {
                let load = owned_by(&state, address).len();
                prop_assert!((floor..=ceil).contains(&load), "{address}: {load}");
            }
        }
    }
}
