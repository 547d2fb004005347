//! Pass 4 of the planner: evens out preferred leaders by reordering replica lists,
//! which moves no data.

use std::collections::{BTreeMap, VecDeque};

use super::Planner;

impl Planner<'_> {
    /// Pass 4: evens out preferred leaders by reordering, then records one reorder move
    /// per partition whose list changed.
    pub(super) fn spread_leaders(&mut self) {
        let before: Vec<Vec<u32>> = self.parts.iter().map(|p| p.replicas.clone()).collect();
        self.lead_from_eligible();
        while let Some(path) = self.leader_path() {
            for (index, leader) in path {
                promote(&mut self.parts[index].replicas, leader);
            }
        }
        for (part, from) in self.parts.iter().zip(before) {
            if part.replicas != from {
                self.moves.push(part.moved_from(from));
            }
        }
    }

    /// Preferred leaders per eligible broker, zeros included.
    fn leader_counts(&self) -> BTreeMap<u32, usize> {
        let mut leaders: BTreeMap<u32, usize> = self.counts.keys().map(|&id| (id, 0)).collect();
        for part in &self.parts {
            if let Some(count) = part.replicas.first().and_then(|id| leaders.get_mut(id)) {
                *count += 1;
            }
        }
        leaders
    }

    /// Hands each draining (or unlisted) leader's partition to its eligible replica with
    /// the fewest leaders, so a stuck partition still leads from a broker that stays.
    fn lead_from_eligible(&mut self) {
        let mut leaders = self.leader_counts();
        for index in 0..self.parts.len() {
            let replicas = &self.parts[index].replicas;
            if replicas.first().is_none_or(|&id| self.eligible(id)) {
                continue;
            }
            let best = replicas
                .iter()
                .filter_map(|id| leaders.get(id).map(|&count| (count, *id)))
                .min();
            if let Some((_, leader)) = best {
                promote(&mut self.parts[index].replicas, leader);
                *leaders.entry(leader).or_insert(0) += 1;
            }
        }
    }

    /// A chain of reorders `(partition index, new leader)` that moves one leadership from
    /// a broker to one leading at least two fewer, the busiest start first; `None` when
    /// leader counts can get no more even by reordering.
    fn leader_path(&self) -> Option<Vec<(usize, u32)>> {
        let leaders = self.leader_counts();
        let mut edges: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
        for (index, part) in self.parts.iter().enumerate() {
            let Some((&leader, followers)) = part.replicas.split_first() else {
                continue;
            };
            for &follower in followers.iter().filter(|&&id| self.eligible(id)) {
                edges.entry(leader).or_default().push((index, follower));
            }
        }
        let mut order: Vec<(usize, u32)> = leaders.iter().map(|(&id, &c)| (c, id)).collect();
        order.sort_unstable();
        order
            .iter()
            .rev()
            .find_map(|&(count, src)| path_from(src, count, &leaders, &edges))
    }
}

/// Breadth-first search from `src` (leading `count` partitions) over "leads a partition
/// this broker follows" edges, to the first broker leading at most `count - 2`; returns
/// the reorders along that shortest path.
fn path_from(
    src: u32,
    count: usize,
    leaders: &BTreeMap<u32, usize>,
    edges: &BTreeMap<u32, Vec<(usize, u32)>>,
) -> Option<Vec<(usize, u32)>> {
    let mut parent: BTreeMap<u32, (u32, usize)> = BTreeMap::new();
    let mut queue = VecDeque::from([src]);
    while let Some(node) = queue.pop_front() {
        for &(index, next) in edges.get(&node).into_iter().flatten() {
            if next == src || parent.contains_key(&next) {
                continue;
            }
            parent.insert(next, (node, index));
            if leaders.get(&next).is_some_and(|&c| c + 2 <= count) {
                return Some(unwind(src, next, &parent));
            }
            queue.push_back(next);
        }
    }
    None
}

/// The reorders from `src` to `end` recorded in a search's `parent` links, in order.
fn unwind(src: u32, end: u32, parent: &BTreeMap<u32, (u32, usize)>) -> Vec<(usize, u32)> {
    let mut path = Vec::new();
    let mut node = end;
    while node != src {
        let Some(&(prev, index)) = parent.get(&node) else {
            break;
        };
        path.push((index, node));
        node = prev;
    }
    path.reverse();
    path
}

/// Moves `leader` to the front of `replicas`, keeping the others' order, so the old
/// leader becomes the first fallback.
fn promote(replicas: &mut Vec<u32>, leader: u32) {
    if let Some(pos) = replicas.iter().position(|&id| id == leader) {
        let id = replicas.remove(pos);
        replicas.insert(0, id);
    }
}
