//! Where existing replicas should go: a pure planner that takes the brokers (with their
//! racks and whether they are draining) and every partition's replica list, and returns
//! the moves that rebalance them. Like `placement`, it does no I/O and reads no clock, so
//! every node computes the same plan from the same state.
//!
//! The planner works on a copy of the state and applies each move to it as it goes, in
//! four passes, one per goal in priority order:
//!
//! 1. **Drain.** Every replica on a draining broker (or on a broker the input does not
//!    list) is replaced by the eligible broker with the fewest replicas whose rack keeps
//!    the partition's rack spread. A partition with no such broker is reported as stuck.
//! 2. **Spread replicas.** While some broker holds at least two replicas more than
//!    another, one replica moves from the fuller to the emptier broker (fullest and
//!    emptiest first; of its partitions, the one whose size best evens the two brokers'
//!    bytes, then a follower before a leader). Each such move lowers the sum of the
//!    squared counts, so the pass ends. Partitions still on a draining broker are left
//!    alone, as are moves that would narrow a partition's rack spread.
//! 3. **Spread bytes** (`bytes.rs`). Once counts are even (within one), while two
//!    brokers' bytes differ by more than a slack (10% of the mean, at least
//!    [`bytes::BYTES_SLACK_MIN`]), a replica moves from the heavier to the lighter, or
//!    two swap, keeping counts even; each step lowers the sum of the squared bytes, so
//!    this pass ends too. Sizes are the leaders' reports, as recent as those are.
//! 4. **Spread leaders** (`leaders.rs`). Preferred leaders move by reordering replica
//!    lists, which moves no data: first a draining leader hands over to an eligible
//!    replica, then leadership shifts along a chain of partitions (A leads one where B
//!    follows, B leads one where C follows, ...) from a broker leading at least two more
//!    partitions than the chain's end. When no such chain exists, leader counts are as
//!    even as the replica sets allow.
//!
//! Every data move replaces exactly one replica, in place, so the replication factor and
//! the list order stay put. Passes 1 to 3 share `max_moves`; reorders are free. The plan
//! ends in a state where, unless `max_moves` cut it short, no pass finds anything to do,
//! so planning again on the applied state yields no moves.

use std::collections::{BTreeMap, BTreeSet};

use crate::placement::{Candidate, RackKey};

mod bytes;
mod leaders;
#[cfg(test)]
mod tests;

/// A broker as the planner sees it: placement's candidate plus whether it is leaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Broker<'a> {
    /// Its id and rack, the same pair placement takes.
    pub candidate: Candidate<'a>,
    /// Being decommissioned: its replicas move off and none move on.
    pub draining: bool,
}

/// One partition's replicas, the input the planner rebalances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionReplicas {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: u32,
    /// Replica broker ids; the first is the preferred leader.
    pub replicas: Vec<u32>,
    /// Log size as reported (0 when unknown): what moving one replica copies.
    pub bytes: u64,
}

/// One step of a plan: a partition's replica list before and after, so the caller can
/// check it still applies (compare-and-set) before it acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Move {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: u32,
    /// The replica list the move starts from.
    pub from: Vec<u32>,
    /// The replica list after it: one broker replaced, or the same brokers reordered.
    pub to: Vec<u32>,
    /// The partition's size: what each added replica copies.
    pub bytes: u64,
}

impl Move {
    /// Whether the move only changes the preferred leader, so it copies no data.
    #[cfg(test)]
    pub(crate) fn is_reorder(&self) -> bool {
        let mut from = self.from.clone();
        let mut to = self.to.clone();
        from.sort_unstable();
        to.sort_unstable();
        from == to
    }
}

/// Why a partition cannot leave its draining brokers, so an operator knows what to add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StuckReason {
    /// Fewer eligible (non-draining) brokers than the partition's replication factor.
    TooFewBrokers {
        /// Non-draining brokers.
        eligible: usize,
        /// The partition's replica count.
        replication_factor: usize,
    },
    /// Every eligible broker outside the partition would lower its number of racks.
    RackSpread,
}

/// A partition that still has a replica on a draining broker and no valid way off it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stuck {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: u32,
    /// Why no move can fix it.
    pub reason: StuckReason,
}

/// The planner's answer: moves to apply in order, and partitions it could not fix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Moves in the order they must be applied (each `from` is the previous state).
    pub moves: Vec<Move>,
    /// Partitions left on draining brokers, by topic and partition.
    pub stuck: Vec<Stuck>,
}

/// The moves that drain, then even out replicas, then even out preferred leaders, with
/// at most `max_moves` data moves (reorders are not counted). Deterministic: the order
/// of `brokers` and `partitions` does not matter. Broker ids should be unique, as should
/// (topic, partition) pairs; a replica on a broker missing from `brokers` is treated as
/// on a draining broker without a rack.
pub(crate) fn plan(
    brokers: &[Broker<'_>],
    partitions: &[PartitionReplicas],
    max_moves: usize,
) -> Plan {
    let mut planner = Planner::new(brokers, partitions, max_moves);
    planner.drain();
    planner.spread_replicas();
    planner.spread_bytes();
    planner.spread_leaders();
    planner.finish()
}

/// A partition in the planner's working copy of the state.
struct Part<'a> {
    /// Topic name, borrowed from the input.
    topic: &'a str,
    /// Partition index.
    partition: u32,
    /// Current replica list, updated as moves are planned.
    replicas: Vec<u32>,
    /// Log size, as reported.
    bytes: u64,
}

impl Part<'_> {
    /// The move that took this partition from `from` to its current replicas.
    fn moved_from(&self, from: Vec<u32>) -> Move {
        Move {
            topic: self.topic.to_owned(),
            partition: self.partition,
            from,
            to: self.replicas.clone(),
            bytes: self.bytes,
        }
    }
}

/// The working state of one `plan` call: the state as the planned moves leave it.
struct Planner<'a> {
    /// Every listed broker's failure domain.
    racks: BTreeMap<u32, RackKey<'a>>,
    /// Replicas per eligible (listed, non-draining) broker, zeros included.
    counts: BTreeMap<u32, usize>,
    /// Bytes of the replicas on each eligible broker, zeros included.
    loads: BTreeMap<u32, u64>,
    /// Partitions sorted by topic and partition, so iteration is deterministic.
    parts: Vec<Part<'a>>,
    /// Per broker, the indexes in `parts` of the partitions it holds a replica of, so
    /// finding a replica to move off a broker scans its partitions only.
    held: BTreeMap<u32, BTreeSet<usize>>,
    /// Data moves still allowed.
    budget: usize,
    /// Moves planned so far.
    moves: Vec<Move>,
}

impl<'a> Planner<'a> {
    /// The working copy of the input, sorted, with replica counts.
    fn new(brokers: &[Broker<'a>], partitions: &'a [PartitionReplicas], budget: usize) -> Self {
        let racks = brokers
            .iter()
            .map(|b| (b.candidate.id, b.candidate.rack_key()))
            .collect();
        let mut counts: BTreeMap<u32, usize> = brokers
            .iter()
            .filter(|b| !b.draining)
            .map(|b| (b.candidate.id, 0))
            .collect();
        let mut parts: Vec<Part<'a>> = partitions
            .iter()
            .map(|p| Part {
                topic: &p.topic,
                partition: p.partition,
                replicas: p.replicas.clone(),
                bytes: p.bytes,
            })
            .collect();
        parts.sort_by(|a, b| (a.topic, a.partition).cmp(&(b.topic, b.partition)));
        let mut loads: BTreeMap<u32, u64> = counts.keys().map(|&id| (id, 0)).collect();
        let mut held: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
        for (index, part) in parts.iter().enumerate() {
            for id in &part.replicas {
                held.entry(*id).or_default().insert(index);
                if let Some(count) = counts.get_mut(id) {
                    *count += 1;
                }
                if let Some(load) = loads.get_mut(id) {
                    *load = load.saturating_add(part.bytes);
                }
            }
        }
        Planner {
            racks,
            counts,
            loads,
            parts,
            held,
            budget,
            moves: Vec::new(),
        }
    }

    /// Whether a broker may hold replicas: listed and not draining.
    fn eligible(&self, id: u32) -> bool {
        self.counts.contains_key(&id)
    }

    /// Whether every replica of a partition sits on an eligible broker.
    fn settled(&self, part: &Part<'_>) -> bool {
        part.replicas.iter().all(|&id| self.eligible(id))
    }

    /// A broker's failure domain; a broker without one is a domain of its own.
    fn rack(&self, id: u32) -> RackKey<'a> {
        self.racks.get(&id).copied().unwrap_or(RackKey::Own(id))
    }

    /// Whether replacing `replicas[pos]` with `dst` keeps every invariant: `dst` is
    /// eligible and new to the partition, and the rack spread does not narrow. The
    /// other replicas' racks stay; the partition loses the replaced broker's rack
    /// unless another replica shares it, and gains `dst`'s unless one already has it,
    /// so the count does not drop if it gains one or loses none.
    fn can_replace(&self, replicas: &[u32], pos: usize, dst: u32) -> bool {
        if !self.eligible(dst) || replicas.contains(&dst) {
            return false;
        }
        let mut others = replicas
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != pos)
            .map(|(_, &id)| self.rack(id));
        let (src, dst) = (self.rack(replicas[pos]), self.rack(dst));
        let mut others_have_dst = false;
        let mut others_have_src = false;
        for rack in &mut others {
            others_have_dst |= rack == dst;
            others_have_src |= rack == src;
        }
        !others_have_dst || others_have_src
    }

    /// Records and applies a data move of `parts[index].replicas[pos]` onto `dst`.
    fn replace(&mut self, index: usize, pos: usize, dst: u32) {
        let part = &mut self.parts[index];
        let from = part.replicas.clone();
        let src = std::mem::replace(&mut part.replicas[pos], dst);
        self.moves.push(part.moved_from(from));
        if let Some(count) = self.counts.get_mut(&src) {
            *count -= 1;
        }
        if let Some(count) = self.counts.get_mut(&dst) {
            *count += 1;
        }
        if let Some(load) = self.loads.get_mut(&src) {
            *load = load.saturating_sub(part.bytes);
        }
        if let Some(load) = self.loads.get_mut(&dst) {
            *load = load.saturating_add(part.bytes);
        }
        if let Some(held) = self.held.get_mut(&src) {
            held.remove(&index);
        }
        self.held.entry(dst).or_default().insert(index);
        self.budget -= 1;
    }

    /// Pass 1: moves every replica it can off draining (or unlisted) brokers.
    fn drain(&mut self) {
        for index in 0..self.parts.len() {
            while self.budget > 0 {
                let Some((pos, dst)) = self.drain_step(index) else {
                    break;
                };
                self.replace(index, pos, dst);
            }
        }
    }

    /// The first replica of `parts[index]` on an ineligible broker that can move, and the
    /// eligible broker with the fewest replicas (then the fewest bytes, then the lowest
    /// id) it can move to.
    fn drain_step(&self, index: usize) -> Option<(usize, u32)> {
        let replicas = &self.parts[index].replicas;
        (0..replicas.len())
            .filter(|&pos| !self.eligible(replicas[pos]))
            .find_map(|pos| {
                self.counts
                    .iter()
                    .filter(|&(&dst, _)| self.can_replace(replicas, pos, dst))
                    .min_by_key(|&(&dst, &count)| (count, self.load(dst), dst))
                    .map(|(&dst, _)| (pos, dst))
            })
    }

    /// Pass 2: moves replicas from fuller to emptier brokers while the budget lasts.
    fn spread_replicas(&mut self) {
        while self.budget > 0 {
            let Some((index, pos, dst)) = self.spread_step() else {
                return;
            };
            self.replace(index, pos, dst);
        }
    }

    /// The next replica-spreading move: the fullest broker that can give a replica to one
    /// holding at least two fewer, the emptiest such receiver first.
    fn spread_step(&self) -> Option<(usize, usize, u32)> {
        let mut order: Vec<(usize, u32)> = self.counts.iter().map(|(&id, &c)| (c, id)).collect();
        order.sort_unstable();
        let emptiest = order.first()?.0;
        for &(high, src) in order.iter().rev() {
            if high < emptiest + 2 {
                break;
            }
            let racks = self.racks_taken(src);
            for &(low, dst) in &order {
                if high < low + 2 {
                    break;
                }
                if !racks.may_take(self.rack(src), self.rack(dst)) {
                    continue;
                }
                if let Some((index, pos)) = self.movable(src, dst) {
                    return Some((index, pos, dst));
                }
            }
        }
        None
    }

    /// How the settled partitions on `src` constrain where one of its replicas can go,
    /// so receivers in a rack none of them can take are skipped without a scan.
    fn racks_taken(&self, src: u32) -> RacksTaken<'a> {
        let mut taken = RacksTaken::default();
        let src_rack = self.rack(src);
        for &index in self.held.get(&src).into_iter().flatten() {
            let part = &self.parts[index];
            if !self.settled(part) {
                continue;
            }
            taken.partitions += 1;
            let others: BTreeSet<RackKey<'a>> = part
                .replicas
                .iter()
                .filter(|&&id| id != src)
                .map(|&id| self.rack(id))
                .collect();
            taken.src_rack_shared |= others.contains(&src_rack);
            for rack in others {
                *taken.by_others.entry(rack).or_insert(0) += 1;
            }
        }
        taken
    }

    /// A settled partition with a replica on `src` that may move to `dst`: the one whose
    /// size leaves the two brokers' bytes closest, then one where `src` only follows, so
    /// fewer preferred leaders change.
    fn movable(&self, src: u32, dst: u32) -> Option<(usize, usize)> {
        let gap = i128::from(self.load(src)) - i128::from(self.load(dst));
        self.held
            .get(&src)?
            .iter()
            .map(|&index| (index, &self.parts[index]))
            .filter(|(_, part)| self.settled(part))
            .filter_map(|(index, part)| {
                let pos = part.replicas.iter().position(|&id| id == src)?;
                let after = (gap - 2 * i128::from(part.bytes)).unsigned_abs();
                self.can_replace(&part.replicas, pos, dst)
                    .then_some((after, pos == 0, index, pos))
            })
            .min()
            .map(|(_, _, index, pos)| (index, pos))
    }

    /// Bytes on an eligible broker (0 for any other).
    fn load(&self, id: u32) -> u64 {
        self.loads.get(&id).copied().unwrap_or(0)
    }

    /// The plan: the moves so far and every partition still on an ineligible broker
    /// that no move can fix.
    fn finish(self) -> Plan {
        let eligible = self.counts.len();
        let stuck = (0..self.parts.len())
            .filter(|&index| !self.settled(&self.parts[index]))
            .filter(|&index| self.drain_step(index).is_none())
            .map(|index| {
                let part = &self.parts[index];
                let replication_factor = part.replicas.len();
                let reason = if eligible < replication_factor {
                    StuckReason::TooFewBrokers {
                        eligible,
                        replication_factor,
                    }
                } else {
                    StuckReason::RackSpread
                };
                Stuck {
                    topic: part.topic.to_owned(),
                    partition: part.partition,
                    reason,
                }
            })
            .collect();
        Plan {
            moves: self.moves,
            stuck,
        }
    }
}

/// The racks the other replicas of a broker's settled partitions occupy.
#[derive(Default)]
struct RacksTaken<'a> {
    /// Settled partitions on the broker.
    partitions: usize,
    /// Whether some partition has another replica in the broker's own rack: moving
    /// that replica anywhere keeps the spread.
    src_rack_shared: bool,
    /// Per rack, how many of the partitions have another replica there.
    by_others: BTreeMap<RackKey<'a>, usize>,
}

impl RacksTaken<'_> {
    /// Whether some partition could move its replica into `dst`'s rack without
    /// narrowing its spread (`can_replace`'s rack rule, over all partitions at once).
    fn may_take(&self, src: RackKey<'_>, dst: RackKey<'_>) -> bool {
        src == dst
            || self.src_rack_shared
            || self.by_others.get(&dst).copied().unwrap_or(0) < self.partitions
    }
}
