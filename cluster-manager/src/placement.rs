//! Where a new topic's replicas go: a pure function of the live brokers, their racks and
//! a start offset, so every Raft node computes the same placement.
//!
//! The scheme is Kafka's. Brokers are listed alternating between racks (the first broker
//! of each rack, then the second of each, ...). Partition `p`'s first replica, its
//! preferred leader, is broker `(start + p) mod n` of that list, so leaders go round-robin
//! over brokers and racks. The other replicas follow the first at a distance that grows by
//! one every `n` partitions, so the followers of a broker's partitions spread over all
//! other brokers instead of always landing on its neighbour. A follower whose rack already
//! holds a replica is skipped while some rack holds none.
//!
//! The caller passes as `start` the number of partitions that already exist, so
//! consecutive topics start their round-robin where the previous one stopped and leaders
//! stay balanced across topics, not just within one.

use std::collections::{BTreeMap, BTreeSet};

use pubsub_proto::ids::PARTITIONS_MAX;

use crate::command::CommandError;

/// A live broker that may receive replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    /// Broker id.
    pub id: u32,
    /// Its rack, if it declared one.
    pub rack: Option<&'a str>,
}

/// The rack a broker counts as: a broker without a rack is a failure domain of its own.
/// Shared with `balance`, so moving replicas keeps the same notion of failure domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RackKey<'a> {
    /// A declared rack, shared by every broker that names it.
    Named(&'a str),
    /// A broker without a rack: a domain holding only itself.
    Own(u32),
}

impl<'a> Candidate<'a> {
    /// The failure domain this broker belongs to.
    pub(crate) fn rack_key(&self) -> RackKey<'a> {
        self.rack.map_or(RackKey::Own(self.id), RackKey::Named)
    }
}

/// Replica lists for `partitions` partitions of `replication_factor` replicas each, over
/// `brokers` (which must be the live ones; their order does not matter). Each list's first
/// broker is the preferred leader.
pub(crate) fn place(
    brokers: &[Candidate<'_>],
    partitions: u32,
    replication_factor: u32,
    start: u64,
) -> Result<Vec<Vec<u32>>, CommandError> {
    let n = brokers.len();
    if replication_factor == 0 || replication_factor as usize > n {
        return Err(CommandError::ReplicationFactorTooLarge {
            replication_factor,
            live_brokers: n as u32,
        });
    }
    let ordered = rack_alternated(brokers);
    assert_eq!(ordered.len(), n, "rack alternation keeps every broker");
    let rack_count = ordered
        .iter()
        .map(Candidate::rack_key)
        .collect::<BTreeSet<_>>()
        .len();
    let n64 = n as u64;
    let start_index = start % n64;
    let start_shift = (start / n64) % n64;
    let mut placement = Vec::with_capacity(partitions.min(PARTITIONS_MAX) as usize);
    for p in 0..u64::from(partitions) {
        let first = ((start_index + p) % n64) as usize;
        let shift = ((start_shift + (start_index + p) / n64) % n64) as usize;
        let replicas = replicas_from(&ordered, first, shift, replication_factor, rack_count);
        assert_eq!(replicas.len(), replication_factor as usize);
        placement.push(replicas);
    }
    Ok(placement)
}

/// One partition's replicas, starting at `ordered[first]`.
fn replicas_from(
    ordered: &[Candidate<'_>],
    first: usize,
    shift: usize,
    replication_factor: u32,
    rack_count: usize,
) -> Vec<u32> {
    let n = ordered.len();
    let mut replicas = vec![ordered[first].id];
    let mut racks = BTreeSet::from([ordered[first].rack_key()]);
    // Two passes over the other n - 1 brokers: the first skips racks already used
    // (while some rack is unused), the second takes whoever is left.
    let mut k = 0;
    while replicas.len() < replication_factor as usize && k < 2 * n {
        let candidate = ordered[follower_index(first, shift, k, n)];
        k += 1;
        if replicas.contains(&candidate.id) {
            continue;
        }
        let rack = candidate.rack_key();
        if racks.len() < rack_count && racks.contains(&rack) {
            continue;
        }
        replicas.push(candidate.id);
        racks.insert(rack);
    }
    replicas
}

/// Index of the `k`-th follower candidate of a partition led by `ordered[first]`: never
/// `first` itself, and every other index once per `n - 1` steps.
fn follower_index(first: usize, shift: usize, k: usize, n: usize) -> usize {
    if n == 1 {
        return first;
    }
    (first + 1 + (shift + k) % (n - 1)) % n
}

/// Brokers ordered rack by rack in turn: `[r1 b1, r2 b3, r3 b5, r1 b2, r2 b4, r3 b6]`, each
/// rack's brokers by id, racks by name (brokers without a rack after named ones).
fn rack_alternated<'a>(brokers: &[Candidate<'a>]) -> Vec<Candidate<'a>> {
    let mut by_rack: BTreeMap<RackKey<'a>, Vec<Candidate<'a>>> = BTreeMap::new();
    for broker in brokers {
        by_rack.entry(broker.rack_key()).or_default().push(*broker);
    }
    for members in by_rack.values_mut() {
        members.sort_by_key(|b| b.id);
        members.dedup_by_key(|b| b.id);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut ordered = Vec::with_capacity(brokers.len());
    for round in 0..deepest {
        for members in by_rack.values() {
            if let Some(broker) = members.get(round) {
                ordered.push(*broker);
            }
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[(u32, Option<&'static str>)]) -> Vec<Candidate<'static>> {
        racks
            .iter()
            .map(|&(id, rack)| Candidate { id, rack })
            .collect()
    }

    fn counts(placement: &[Vec<u32>], leaders_only: bool) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for replicas in placement {
            let take = if leaders_only { 1 } else { replicas.len() };
            for id in &replicas[..take] {
                *counts.entry(*id).or_insert(0) += 1;
            }
        }
        counts
    }

    fn assert_even(counts: &BTreeMap<u32, usize>, brokers: usize, each: usize) {
        assert_eq!(counts.len(), brokers, "{counts:?}");
        assert!(counts.values().all(|&c| c == each), "{counts:?}");
    }

    #[test]
    fn leaders_and_replicas_spread_evenly_without_racks() {
        let live = brokers(&[(1, None), (2, None), (3, None)]);
        let placement = place(&live, 6, 2, 0).unwrap();
        assert_eq!(placement.len(), 6);
        assert_even(&counts(&placement, true), 3, 2);
        assert_even(&counts(&placement, false), 3, 4);
        for replicas in &placement {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
        }
        // Followers of one broker's partitions land on different brokers.
        let followers_of_1: BTreeSet<u32> = placement
            .iter()
            .filter(|r| r[0] == 1)
            .map(|r| r[1])
            .collect();
        assert_eq!(followers_of_1, BTreeSet::from([2, 3]));
    }

    #[test]
    fn consecutive_topics_continue_the_leader_round_robin() {
        let live = brokers(&[(1, None), (2, None), (3, None)]);
        let mut leaders = BTreeMap::new();
        for existing in 0..6 {
            let placement = place(&live, 1, 1, existing).unwrap();
            *leaders.entry(placement[0][0]).or_insert(0) += 1;
        }
        assert_even(&leaders, 3, 2);
    }

    #[test]
    fn replicas_cover_every_rack() {
        let live = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack = |id: u32| live.iter().find(|b| b.id == id).unwrap().rack;
        let placement = place(&live, 12, 3, 0).unwrap();
        for replicas in &placement {
            let racks: BTreeSet<_> = replicas.iter().map(|&id| rack(id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
        assert_even(&counts(&placement, true), 6, 2);
        assert_even(&counts(&placement, false), 6, 6);
    }

    #[test]
    fn uneven_racks_still_get_one_replica_per_rack_first() {
        let live = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        for replicas in place(&live, 8, 2, 0).unwrap() {
            assert!(replicas.contains(&4), "{replicas:?} misses rack b");
        }
    }

    #[test]
    fn replication_factor_above_live_brokers_is_refused() {
        let live = brokers(&[(1, None), (2, None)]);
        let error = place(&live, 1, 3, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "replication factor 3 exceeds the 2 live broker(s)"
        );
        assert!(place(&[], 1, 1, 0).is_err());
    }

    #[test]
    fn a_single_broker_holds_every_replica() {
        let live = brokers(&[(7, None)]);
        assert_eq!(place(&live, 3, 1, 5).unwrap(), vec![vec![7]; 3]);
    }
}
