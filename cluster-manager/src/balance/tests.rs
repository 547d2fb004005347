//! Unit and property tests of the balance planner: invariants of every move, convergence
//! of repeated plan-and-apply, and evenness of the result.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::placement::place;

/// Brokers from `(id, rack, draining)` triples.
fn brokers(spec: &[(u32, Option<&'static str>, bool)]) -> Vec<Broker<'static>> {
    spec.iter()
        .map(|&(id, rack, draining)| Broker {
            candidate: Candidate { id, rack },
            draining,
        })
        .collect()
}

/// Partitions of `topic` with the given replica lists, indexed in order.
fn topic(name: &str, lists: Vec<Vec<u32>>) -> Vec<PartitionReplicas> {
    lists
        .into_iter()
        .zip(0..)
        .map(|(replicas, partition)| PartitionReplicas {
            topic: name.to_owned(),
            partition,
            replicas,
            bytes: 0,
        })
        .collect()
}

/// A topic placed by `placement::place` over the brokers' candidates.
fn placed(brokers: &[Broker<'static>], partitions: u32, rf: u32) -> Vec<PartitionReplicas> {
    let candidates: Vec<_> = brokers.iter().map(|b| b.candidate).collect();
    topic("t", place(&candidates, partitions, rf, 0).unwrap())
}

/// Failure domains of `replicas` as the planner counts them.
fn rack_count(brokers: &[Broker<'_>], replicas: &[u32]) -> usize {
    replicas
        .iter()
        .map(|&id| {
            brokers
                .iter()
                .find(|b| b.candidate.id == id)
                .map_or(RackKey::Own(id), |b| b.candidate.rack_key())
        })
        .collect::<BTreeSet<_>>()
        .len()
}

/// Asserts one move's invariants against the brokers.
fn check_move(brokers: &[Broker<'_>], mv: &Move) {
    let distinct: BTreeSet<_> = mv.to.iter().collect();
    assert_eq!(distinct.len(), mv.to.len(), "duplicate replica: {mv:?}");
    assert_eq!(
        mv.from.len(),
        mv.to.len(),
        "replication factor changed: {mv:?}"
    );
    assert_ne!(mv.from, mv.to, "empty move: {mv:?}");
    assert!(
        rack_count(brokers, &mv.to) >= rack_count(brokers, &mv.from),
        "rack spread narrowed: {mv:?}"
    );
    if mv.is_reorder() {
        return;
    }
    let added: Vec<_> = mv.to.iter().filter(|id| !mv.from.contains(id)).collect();
    assert_eq!(added.len(), 1, "more than one replica replaced: {mv:?}");
    let changed = mv.from.iter().zip(&mv.to).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 1, "a data move also reordered: {mv:?}");
    let target = brokers.iter().find(|b| b.candidate.id == *added[0]);
    assert!(target.is_some_and(|b| !b.draining), "bad target: {mv:?}");
}

/// Applies a plan's moves in order, checking each one's `from` matches.
fn apply(partitions: &mut [PartitionReplicas], plan: &Plan) {
    for mv in &plan.moves {
        let part = partitions
            .iter_mut()
            .find(|p| p.topic == mv.topic && p.partition == mv.partition)
            .unwrap();
        assert_eq!(part.replicas, mv.from, "stale move {mv:?}");
        part.replicas = mv.to.clone();
    }
}

/// Plans and applies until a plan is empty, checking every move and the budget; returns
/// the final state and the final (empty) plan.
fn converge(
    brokers: &[Broker<'_>],
    mut partitions: Vec<PartitionReplicas>,
    max_moves: usize,
) -> (Vec<PartitionReplicas>, Plan) {
    for _ in 0..500 {
        let plan = plan(brokers, &partitions, max_moves);
        if plan.moves.is_empty() {
            return (partitions, plan);
        }
        for mv in &plan.moves {
            check_move(brokers, mv);
        }
        let data = plan.moves.iter().filter(|m| !m.is_reorder()).count();
        assert!(data <= max_moves, "{data} data moves over {max_moves}");
        apply(&mut partitions, &plan);
    }
    panic!("no convergence within 500 rounds");
}

/// Replicas (or only preferred leaders) per broker.
fn counts(partitions: &[PartitionReplicas], leaders_only: bool) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for part in partitions {
        let take = if leaders_only { 1 } else { part.replicas.len() };
        for &id in part.replicas.iter().take(take) {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn a_joining_broker_gets_an_even_share_of_replicas_and_leaders() {
    let old = brokers(&[(1, None, false), (2, None, false), (3, None, false)]);
    let mut partitions = placed(&old, 12, 3);
    let all = brokers(&[
        (1, None, false),
        (2, None, false),
        (3, None, false),
        (4, None, false),
    ]);
    let plan = plan(&all, &partitions, usize::MAX);
    assert!(plan.stuck.is_empty());
    for mv in &plan.moves {
        check_move(&all, mv);
    }
    apply(&mut partitions, &plan);
    let even = |each| BTreeMap::from([(1, each), (2, each), (3, each), (4, each)]);
    assert_eq!(counts(&partitions, false), even(9));
    assert_eq!(counts(&partitions, true), even(3));
    assert_eq!(super::plan(&all, &partitions, usize::MAX), Plan::default());
}

#[test]
fn draining_a_broker_moves_all_its_replicas_to_the_others() {
    let live = brokers(&[
        (1, None, false),
        (2, None, false),
        (3, None, false),
        (4, None, false),
    ]);
    let partitions = placed(&live, 12, 3);
    let draining = brokers(&[
        (1, None, false),
        (2, None, true),
        (3, None, false),
        (4, None, false),
    ]);
    let (after, last) = converge(&draining, partitions, usize::MAX);
    assert!(last.stuck.is_empty());
    assert_eq!(
        counts(&after, false),
        BTreeMap::from([(1, 12), (3, 12), (4, 12)])
    );
    assert_eq!(
        counts(&after, true),
        BTreeMap::from([(1, 4), (3, 4), (4, 4)])
    );
}

#[test]
fn draining_below_the_replication_factor_reports_stuck_partitions() {
    let live = brokers(&[(1, None, false), (2, None, false), (3, None, false)]);
    let partitions = placed(&live, 6, 3);
    let draining = brokers(&[(1, None, false), (2, None, true), (3, None, false)]);
    let plan = plan(&draining, &partitions, usize::MAX);
    assert_eq!(plan.stuck.len(), 6);
    let reason = StuckReason::TooFewBrokers {
        eligible: 2,
        replication_factor: 3,
    };
    assert!(plan.stuck.iter().all(|s| s.reason == reason), "{plan:?}");
    for mv in &plan.moves {
        check_move(&draining, mv);
        assert!(mv.is_reorder(), "{mv:?}");
        assert_ne!(mv.to[0], 2, "a draining broker kept leading: {mv:?}");
    }
}

#[test]
fn draining_the_only_broker_of_a_rack_reports_the_rack_spread() {
    let spec = [
        (1, Some("a"), false),
        (2, Some("b"), true),
        (3, Some("a"), false),
    ];
    let plan = plan(&brokers(&spec), &topic("t", vec![vec![1, 2]]), usize::MAX);
    assert!(plan.moves.is_empty(), "{plan:?}");
    let stuck = Stuck {
        topic: "t".to_owned(),
        partition: 0,
        reason: StuckReason::RackSpread,
    };
    assert_eq!(plan.stuck, vec![stuck]);
}

#[test]
fn moves_never_put_both_replicas_in_one_rack() {
    let spec = [
        (1, Some("a"), false),
        (2, Some("a"), false),
        (3, Some("b"), false),
        (4, Some("b"), false),
    ];
    let partitions = placed(&brokers(&spec), 8, 2);
    // Rack b loses broker 3 and rack a gains broker 5: rack b's replicas must stay in b.
    let changed = brokers(&[
        (1, Some("a"), false),
        (2, Some("a"), false),
        (3, Some("b"), true),
        (4, Some("b"), false),
        (5, Some("a"), false),
    ]);
    let (after, last) = converge(&changed, partitions, 1);
    assert!(last.stuck.is_empty());
    for part in &after {
        assert_eq!(rack_count(&changed, &part.replicas), 2, "{part:?}");
        assert!(part.replicas.contains(&4), "{part:?}");
    }
}

#[test]
fn max_moves_limits_data_moves_and_still_converges() {
    let old = brokers(&[(1, None, false), (2, None, false)]);
    let partitions = placed(&old, 10, 2);
    let all = brokers(&[
        (1, None, false),
        (2, None, false),
        (3, None, false),
        (4, None, false),
    ]);
    let first = plan(&all, &partitions, 2);
    assert_eq!(first.moves.iter().filter(|m| !m.is_reorder()).count(), 2);
    let (after, _) = converge(&all, partitions, 2);
    let replicas = counts(&after, false);
    assert!(replicas.values().all(|&c| c == 5), "{replicas:?}");
}

#[test]
fn the_plan_does_not_depend_on_input_order() {
    let all = brokers(&[
        (1, Some("x"), false),
        (2, None, true),
        (3, Some("x"), false),
        (4, None, false),
    ]);
    let mut partitions = topic("a", vec![vec![1, 2], vec![2, 3], vec![1, 3]]);
    partitions.extend(topic("b", vec![vec![2, 1, 3], vec![3]]));
    let forward = plan(&all, &partitions, 3);
    partitions.reverse();
    let mut reversed_brokers = all.clone();
    reversed_brokers.reverse();
    assert_eq!(plan(&reversed_brokers, &partitions, 3), forward);
    assert!(!forward.moves.is_empty());
}

#[test]
fn a_balanced_cluster_needs_no_moves() {
    let live = brokers(&[(1, None, false), (2, None, false), (3, None, false)]);
    let partitions = placed(&live, 9, 2);
    assert_eq!(plan(&live, &partitions, usize::MAX), Plan::default());
}

const GIB: u64 = 1 << 30;

/// Partitions of topic "t" with one replica each, on the given broker, of the given
/// size.
fn single(spec: &[(u32, u64)]) -> Vec<PartitionReplicas> {
    let mut partitions = topic("t", spec.iter().map(|&(id, _)| vec![id]).collect());
    for (part, &(_, bytes)) in partitions.iter_mut().zip(spec) {
        part.bytes = bytes;
    }
    partitions
}

/// Bytes per broker, each replica counting its partition's size.
fn loads(partitions: &[PartitionReplicas]) -> BTreeMap<u32, u64> {
    let mut loads = BTreeMap::new();
    for part in partitions {
        for &id in &part.replicas {
            *loads.entry(id).or_insert(0) += part.bytes;
        }
    }
    loads
}

/// The sum of the squared loads, which every byte trade lowers.
fn squared(loads: &BTreeMap<u32, u64>) -> u128 {
    loads.values().map(|&b| u128::from(b) * u128::from(b)).sum()
}

#[test]
fn a_swap_evens_two_brokers_that_hold_as_many_replicas() {
    let live = brokers(&[(1, None, false), (2, None, false)]);
    let partitions = single(&[(1, 4 * GIB), (1, 4 * GIB), (2, GIB), (2, GIB)]);
    let (after, _) = converge(&live, partitions, usize::MAX);
    assert_eq!(loads(&after), BTreeMap::from([(1, 5 * GIB), (2, 5 * GIB)]));
    assert_eq!(counts(&after, false), BTreeMap::from([(1, 2), (2, 2)]));
}

#[test]
fn big_partitions_end_on_different_brokers() {
    let live = brokers(&[
        (1, None, false),
        (2, None, false),
        (3, None, false),
        (4, None, false),
    ]);
    let spec = [1, 1, 2, 2, 3, 3, 4, 4].map(|id| (id, if id == 1 { 10 * GIB } else { GIB }));
    let (after, _) = converge(&live, single(&spec), usize::MAX);
    let loads = loads(&after);
    // Two 10 GiB partitions cannot split: the best is one per broker, with a 1 GiB one.
    assert_eq!(loads.values().max(), Some(&(11 * GIB)), "{loads:?}");
    assert_eq!(loads.values().filter(|&&b| b == 11 * GIB).count(), 2);
    assert!(counts(&after, false).values().all(|&c| c == 2));
}

#[test]
fn the_broker_with_one_more_replica_gives_one_away() {
    let live = brokers(&[(1, None, false), (2, None, false), (3, None, false)]);
    let small = GIB / 10;
    let spec = [
        (1, 3 * GIB),
        (1, 3 * GIB),
        (1, 3 * GIB),
        (2, 3 * GIB),
        (2, 3 * GIB),
    ];
    let mut partitions = single(&spec);
    partitions.extend(single(&[(3, small), (3, small)]).into_iter().map(|mut p| {
        p.topic = "u".into();
        p
    }));
    let first = plan(&live, &partitions, usize::MAX);
    assert_eq!(first.moves.len(), 1, "{first:?}");
    assert_eq!(first.moves[0].to, [3]);
    assert_eq!(first.moves[0].bytes, 3 * GIB);
    apply(&mut partitions, &first);
    assert_eq!(plan(&live, &partitions, usize::MAX), Plan::default());
}

#[test]
fn differences_within_the_slack_move_nothing() {
    let live = brokers(&[(1, None, false), (2, None, false), (3, None, false)]);
    let mut partitions = placed(&live, 9, 2);
    for (part, mib) in partitions.iter_mut().zip(1..) {
        part.bytes = mib << 20;
    }
    assert_eq!(plan(&live, &partitions, usize::MAX), Plan::default());
}

/// Random brokers (ids 1..=n, rack none or one of three, some draining) and partitions
/// with distinct replicas, RF 1..=min(3, n), and random sizes, over two topics.
fn cluster() -> impl Strategy<Value = (Vec<Broker<'static>>, Vec<PartitionReplicas>)> {
    (1..=8u32).prop_flat_map(|n| {
        let broker = (
            prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
            prop::bool::weighted(0.25),
        );
        let ids: Vec<u32> = (1..=n).collect();
        // Sizes from empty to 8 GiB, so the byte pass has both work and none to do.
        let replicas = (1..=n.min(3) as usize, Just(ids).prop_shuffle(), 0..64u64)
            .prop_map(|(rf, ids, size)| (ids[..rf].to_vec(), size << 27));
        (
            prop::collection::vec(broker, n as usize),
            prop::collection::vec(replicas, 0..20),
        )
            .prop_map(|(spec, lists)| {
                let brokers = spec
                    .into_iter()
                    .zip(1..)
                    .map(|((rack, draining), id)| Broker {
                        candidate: Candidate { id, rack },
                        draining,
                    })
                    .collect();
                let mut partitions = Vec::new();
                for (index, (replicas, bytes)) in lists.into_iter().enumerate() {
                    partitions.push(PartitionReplicas {
                        topic: format!("t{}", index % 2),
                        partition: index as u32 / 2,
                        replicas,
                        bytes,
                    });
                }
                (brokers, partitions)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn plans_keep_invariants_and_converge(
        (brokers, partitions) in cluster(),
        max_moves in 1..6usize,
    ) {
        let (after, last) = converge(&brokers, partitions, max_moves);
        let stuck: BTreeSet<_> = last.stuck.iter().map(|s| (&s.topic, s.partition)).collect();
        let draining: BTreeSet<u32> =
            brokers.iter().filter(|b| b.draining).map(|b| b.candidate.id).collect();
        for part in &after {
            if part.replicas.iter().any(|id| draining.contains(id)) {
                prop_assert!(stuck.contains(&(&part.topic, part.partition)), "{part:?}");
            }
        }
        let plain = brokers.iter().all(|b| b.candidate.rack.is_none() && !b.draining);
        if plain {
            let mut replicas = counts(&after, false);
            for b in &brokers {
                replicas.entry(b.candidate.id).or_insert(0);
            }
            let max = replicas.values().max().copied().unwrap_or(0);
            let min = replicas.values().min().copied().unwrap_or(0);
            prop_assert!(max - min <= 1, "{replicas:?}");
        }
    }

    #[test]
    fn byte_trades_only_ever_even_out_loads(
        n in 2..=6u32,
        rf in 1..=3u32,
        sizes in prop::collection::vec(0..64u64, 1..24),
    ) {
        // Placement leaves counts nearly even: where they are within one, only the byte
        // pass can move anything.
        let live: Vec<_> = (1..=n).map(|id| (id, None, false)).collect();
        let live = brokers(&live);
        let mut partitions = placed(&live, sizes.len() as u32, rf.min(n));
        for (part, size) in partitions.iter_mut().zip(&sizes) {
            part.bytes = size << 27;
        }
        let before = counts(&partitions, false);
        let spread = |c: &BTreeMap<u32, usize>| {
            let max = c.values().max().copied().unwrap_or(0);
            max - c.values().min().copied().unwrap_or(0)
        };
        let (after, _) = converge(&live, partitions.clone(), usize::MAX);
        let counted = counts(&after, false);
        prop_assert!(spread(&counted) <= 1, "{counted:?}");
        if before.len() == live.len() && spread(&before) <= 1 {
            prop_assert!(squared(&loads(&after)) <= squared(&loads(&partitions)));
            prop_assert_eq!(counted.values().max(), before.values().max());
        }
    }
}
