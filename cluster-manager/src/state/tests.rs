//! Unit tests of the metadata state machine: placement through `apply`, elections from
//! the in-sync replicas only, stale epochs, fencing and returning brokers.

use super::testing::{cluster, create, heartbeat, partition, register};
use super::*;

const LEASE_MS: u64 = 6_000;

fn heartbeat_all_but(state: &mut ClusterState, silent: u32, now_ms: u64) {
    let ids: Vec<u32> = state.live_brokers().map(|b| b.id()).collect();
    for broker in ids.into_iter().filter(|&b| b != silent) {
        heartbeat(state, broker, now_ms);
    }
}

fn expire(state: &mut ClusterState, now_ms: u64) -> Response {
    state
        .apply(Command::ExpireLeases {
            now_ms,
            lease_ms: LEASE_MS,
        })
        .unwrap()
}

fn update_isr(
    state: &mut ClusterState,
    broker: u32,
    leader_epoch: i32,
    isr: &[u32],
) -> Result<Response, CommandError> {
    state.apply(Command::UpdateIsr {
        broker,
        topic: "t".into(),
        partition: 0,
        leader_epoch,
        isr: isr.to_vec(),
    })
}

#[test]
fn created_topics_have_balanced_leaders_and_full_isr() {
    let mut state = cluster(3);
    assert_eq!(
        state.apply(create("t", 6, 3)).unwrap(),
        Response::TopicCreated { created: true }
    );
    let mut leaders = BTreeMap::new();
    for p in state.topic("t").unwrap().partitions() {
        assert_eq!(p.replicas().len(), 3);
        assert_eq!(p.isr(), p.replicas());
        assert_eq!(p.leader(), Some(p.replicas()[0]));
        assert_eq!(p.leader_epoch(), 0);
        *leaders.entry(p.leader().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
}

#[test]
fn default_replication_factor_is_capped_by_live_brokers() {
    let mut state = cluster(2);
    state.apply(create("t", 1, 0)).unwrap();
    assert_eq!(state.topic("t").unwrap().replication_factor(), 2);
    let error = state.apply(create("u", 1, 3)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "replication factor 3 exceeds the 2 live broker(s)"
    );
    assert!(state.topic("u").is_none());
}

#[test]
fn racks_are_spread_over_through_apply() {
    let mut state = ClusterState::default();
    for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b")] {
        register(&mut state, id, Some(rack), 0);
    }
    state.apply(create("t", 8, 2)).unwrap();
    for p in state.topic("t").unwrap().partitions() {
        let racks: BTreeSet<_> = p
            .replicas()
            .iter()
            .map(|id| state.brokers()[id].rack())
            .collect();
        assert_eq!(racks.len(), 2, "{:?}", p.replicas());
    }
}

#[test]
fn an_expired_lease_fences_the_broker_and_moves_leadership_inside_the_isr() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 3)).unwrap();
    let leader = partition(&state, "t", 0).leader().unwrap();
    let replicas = partition(&state, "t", 0).replicas().to_vec();
    // The follower next in replica order falls out of sync; the last one stays in.
    let out_of_sync = replicas[1];
    let in_sync = replicas[2];
    update_isr(&mut state, leader, 0, &[leader, in_sync]).unwrap();

    heartbeat_all_but(&mut state, leader, 5_000);
    assert_eq!(
        expire(&mut state, 6_000),
        Response::LeasesExpired {
            fenced: vec![],
            leader_changes: 0
        }
    );
    assert!(state.has_expired_leases(6_001, LEASE_MS));
    assert_eq!(
        expire(&mut state, 6_001),
        Response::LeasesExpired {
            fenced: vec![leader],
            leader_changes: 1
        }
    );
    let p = partition(&state, "t", 0);
    assert_eq!(p.leader(), Some(in_sync), "never the out-of-sync replica");
    assert_ne!(p.leader(), Some(out_of_sync));
    assert_eq!(p.leader_epoch(), 1);
    assert_eq!(p.isr(), &[in_sync]);
    assert!(state.brokers()[&leader].fenced());
    assert_eq!(
        state.apply(Command::Heartbeat {
            broker: leader,
            now_ms: 7_000,
            sizes: Vec::new()
        }),
        Err(CommandError::BrokerFenced { broker: leader })
    );
}

#[test]
fn without_a_live_in_sync_replica_the_partition_goes_offline_and_keeps_its_last_isr_member() {
    let mut state = cluster(2);
    state.apply(create("t", 1, 2)).unwrap();
    let leader = partition(&state, "t", 0).leader().unwrap();
    let follower = partition(&state, "t", 0).replicas()[1];
    update_isr(&mut state, leader, 0, &[leader]).unwrap();
    heartbeat_all_but(&mut state, leader, 5_000);
    expire(&mut state, 6_001);
    let p = partition(&state, "t", 0);
    assert_eq!(p.leader(), None, "the follower was not in sync");
    assert_eq!(p.leader_epoch(), 1);
    assert_eq!(p.isr(), &[leader]);
    assert!(p.under_replicated());

    // The follower re-registering changes nothing; the old leader returning leads again.
    register(&mut state, follower, None, 6_500);
    assert_eq!(partition(&state, "t", 0).leader(), None);
    state
        .apply(Command::RegisterBroker {
            broker: leader,
            address: "10.0.0.9:9392".into(),
            rack: None,
            kafka_address: None,
            now_ms: 7_000,
            lease_ms: 0,
            proven: false,
        })
        .map(|r| assert_eq!(r, Response::BrokerRegistered { leaderships: 1 }))
        .unwrap();
    let p = partition(&state, "t", 0);
    assert_eq!(p.leader(), Some(leader));
    assert_eq!(p.leader_epoch(), 2);
    assert_eq!(state.brokers()[&leader].address(), "10.0.0.9:9392");
}

#[test]
fn unclean_election_takes_a_live_replica_outside_the_isr() {
    let mut state = cluster(2);
    state
        .apply(Command::CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 2,
            settings: TopicConfig::default(),
            unclean_leader_election: true,
            now_ms: 0,
        })
        .unwrap();
    let leader = partition(&state, "t", 0).leader().unwrap();
    let follower = partition(&state, "t", 0).replicas()[1];
    update_isr(&mut state, leader, 0, &[leader]).unwrap();
    heartbeat_all_but(&mut state, leader, 5_000);
    expire(&mut state, 6_001);
    let p = partition(&state, "t", 0);
    assert_eq!(p.leader(), Some(follower));
    assert_eq!(p.isr(), &[follower]);
    assert_eq!(p.leader_epoch(), 1);
}

#[test]
fn a_fenced_follower_leaves_the_isr_and_returns_outside_it() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 3)).unwrap();
    let p = partition(&state, "t", 0).clone();
    let follower = p.replicas()[2];
    heartbeat_all_but(&mut state, follower, 5_000);
    expire(&mut state, 6_001);
    let after = partition(&state, "t", 0);
    assert_eq!(after.leader(), p.leader(), "the leader is untouched");
    assert_eq!(after.leader_epoch(), 0, "no leader change, no new epoch");
    assert!(!after.isr().contains(&follower));

    register(&mut state, follower, None, 7_000);
    assert!(!state.brokers()[&follower].fenced());
    assert!(
        !partition(&state, "t", 0).isr().contains(&follower),
        "back in sync only when the leader says so"
    );
    let leader = p.leader().unwrap();
    update_isr(&mut state, leader, 0, p.replicas()).unwrap();
    assert_eq!(partition(&state, "t", 0).isr(), p.replicas());
}

#[test]
fn isr_updates_with_a_stale_epoch_or_from_a_non_leader_are_refused() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 3)).unwrap();
    let p = partition(&state, "t", 0).clone();
    let leader = p.leader().unwrap();
    let follower = p.replicas()[1];
    // Move leadership once so epoch 0 becomes stale.
    heartbeat_all_but(&mut state, leader, 5_000);
    expire(&mut state, 6_001);
    register(&mut state, leader, None, 6_002);
    let now = partition(&state, "t", 0).clone();
    assert_eq!(now.leader(), Some(follower));
    assert_eq!(now.leader_epoch(), 1);
    let before = state.clone();

    assert_eq!(
        update_isr(&mut state, follower, 0, &[follower]).unwrap_err(),
        CommandError::StaleLeaderEpoch {
            topic: "t".into(),
            partition: 0,
            given: 0,
            current: 1
        }
    );
    assert!(matches!(
        update_isr(&mut state, leader, 1, &[leader]).unwrap_err(),
        CommandError::NotPartitionLeader { .. }
    ));
    assert!(matches!(
        update_isr(&mut state, follower, 1, &[leader]).unwrap_err(),
        CommandError::InvalidIsr { .. }
    ));
    assert!(matches!(
        update_isr(&mut state, follower, 1, &[follower, follower]).unwrap_err(),
        CommandError::InvalidIsr { .. }
    ));
    assert!(matches!(
        update_isr(&mut state, follower, 1, &[follower, 99]).unwrap_err(),
        CommandError::InvalidIsr { .. }
    ));
    assert_eq!(state, before, "refused commands change nothing");
    update_isr(&mut state, follower, 1, &[leader, follower]).unwrap();
}

#[test]
fn the_same_commands_give_the_same_state_and_bytes() {
    let commands = [
        Command::RegisterBroker {
            broker: 2,
            address: "b:1".into(),
            rack: Some("x".into()),
            kafka_address: None,
            now_ms: 10,
            lease_ms: 0,
            proven: false,
        },
        Command::RegisterBroker {
            broker: 1,
            address: "a:1".into(),
            rack: None,
            kafka_address: None,
            now_ms: 11,
            lease_ms: 0,
            proven: false,
        },
        create("t", 4, 2),
        create("bad/name", 1, 1),
        Command::Heartbeat {
            broker: 1,
            now_ms: 9_000,
            sizes: Vec::new(),
        },
        Command::ExpireLeases {
            now_ms: 9_000,
            lease_ms: LEASE_MS,
        },
        create("u", 3, 0),
    ];
    let run = || {
        let mut state = ClusterState::default();
        let results: Vec<_> = commands.iter().cloned().map(|c| state.apply(c)).collect();
        (state, results)
    };
    let (a, ra) = run();
    let (b, rb) = run();
    assert_eq!(ra, rb);
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
    let round_trip: ClusterState =
        serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
    assert_eq!(round_trip, a);
    assert!(a.brokers()[&2].fenced());
    assert_eq!(a.topic("u").unwrap().replication_factor(), 1);
}

#[test]
fn heartbeats_of_unknown_brokers_are_refused() {
    let mut state = ClusterState::default();
    assert_eq!(
        state.apply(Command::Heartbeat {
            broker: 5,
            now_ms: 1,
            sizes: Vec::new()
        }),
        Err(CommandError::BrokerNotFound { broker: 5 })
    );
    assert!(
        !Response::HeartbeatRenewed.changes_metadata(),
        "heartbeats do not wake watchers"
    );
}

#[test]
fn a_restarted_leader_registering_again_hands_leadership_to_the_isr() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 3)).unwrap();
    let p = partition(&state, "t", 0).clone();
    let leader = p.leader().unwrap();
    assert_eq!(
        state
            .apply(Command::RegisterBroker {
                broker: leader,
                address: "10.0.0.1:9392".into(),
                rack: None,
                kafka_address: None,
                now_ms: 100,
                lease_ms: 0,
                proven: false,
            })
            .unwrap(),
        Response::BrokerRegistered { leaderships: 0 }
    );
    let after = partition(&state, "t", 0);
    assert_eq!(after.leader(), Some(p.replicas()[1]));
    assert_eq!(after.leader_epoch(), 1);
    assert!(
        !after.isr().contains(&leader),
        "back in sync only via UpdateIsr"
    );
    assert!(!state.brokers()[&leader].fenced());
}

#[test]
fn a_restarted_sole_replica_keeps_leading_with_a_new_epoch() {
    let mut state = cluster(1);
    state.apply(create("t", 1, 1)).unwrap();
    register(&mut state, 1, None, 100);
    let p = partition(&state, "t", 0);
    assert_eq!(p.leader(), Some(1));
    assert_eq!(p.isr(), &[1]);
    assert_eq!(p.leader_epoch(), 2, "one epoch to fence, one to lead again");
}

#[test]
fn a_live_broker_id_cannot_be_taken_over_from_another_address() {
    let mut state = ClusterState::default();
    let register = |address: &str, now_ms| Command::RegisterBroker {
        broker: 1,
        address: address.into(),
        rack: None,
        kafka_address: None,
        now_ms,
        lease_ms: 6_000,
        proven: false,
    };
    state.apply(register("10.0.0.1:9392", 1_000)).unwrap();
    assert!(matches!(
        state.apply(register("10.6.6.6:9392", 2_000)),
        Err(CommandError::BrokerIdInUse { broker: 1, .. })
    ));
    assert_eq!(state.brokers()[&1].address(), "10.0.0.1:9392");
    // The same address (a restart) is welcome at once; another one once the lease ran out.
    state.apply(register("10.0.0.1:9392", 2_000)).unwrap();
    state.apply(register("10.0.0.2:9392", 8_001)).unwrap();
    assert_eq!(state.brokers()[&1].address(), "10.0.0.2:9392");
    // The broker itself, proven by its certificate, moves at once.
    let proven = Command::RegisterBroker {
        broker: 1,
        address: "10.0.0.3:9392".into(),
        rack: None,
        kafka_address: None,
        now_ms: 8_002,
        lease_ms: 6_000,
        proven: true,
    };
    state.apply(proven).unwrap();
    assert_eq!(state.brokers()[&1].address(), "10.0.0.3:9392");
}

#[test]
fn leadership_returns_to_the_preferred_replica_once_it_is_in_sync() {
    let mut state = cluster(3);
    state.apply(create("t", 1, 3)).unwrap();
    let preferred = partition(&state, "t", 0).replicas()[0];
    state
        .apply(Command::ShutdownBroker { broker: preferred })
        .unwrap();
    let moved = partition(&state, "t", 0).clone();
    assert_ne!(moved.leader(), Some(preferred));
    // Back, but not in sync yet: nothing to elect.
    register(&mut state, preferred, None, 1);
    assert_eq!(state.preferred_leader_imbalance(), 0);
    let leader = moved.leader().unwrap();
    let mut isr = partition(&state, "t", 0).isr().to_vec();
    isr.push(preferred);
    state
        .apply(Command::UpdateIsr {
            broker: leader,
            topic: "t".into(),
            partition: 0,
            leader_epoch: partition(&state, "t", 0).leader_epoch(),
            isr,
        })
        .unwrap();
    assert_eq!(state.preferred_leader_imbalance(), 1);
    let elected = state.apply(Command::ElectPreferredLeaders);
    assert_eq!(
        elected,
        Ok(Response::PreferredLeadersElected { leader_changes: 1 })
    );
    let back = partition(&state, "t", 0);
    assert_eq!(back.leader(), Some(preferred));
    assert!(
        back.leader_epoch() > moved.leader_epoch(),
        "a new epoch fences the old leader"
    );
    assert_eq!(state.preferred_leader_imbalance(), 0);
    assert_eq!(
        state.apply(Command::ElectPreferredLeaders),
        Ok(Response::PreferredLeadersElected { leader_changes: 0 })
    );
}
