//! Pass 3 of the planner: once every broker holds an even number of replicas (within
//! one), evens out the bytes they hold.
//!
//! While the heaviest and lightest brokers that can trade differ by more than the
//! slack, the heavier hands the lighter one replica, alone when it holds one replica
//! more (counts stay within one), or in exchange for a smaller one (counts stay put).
//! Of all such trades it takes the one that leaves the pair closest to even. A trade
//! moving `d` bytes between brokers `gap` apart lowers the sum of the squared loads by
//! `2d(gap - d)`, and only `0 < d < gap` is taken, so the pass ends; counts never get
//! less even, so the count pass has nothing to add afterwards.

use super::Planner;

/// Two brokers whose bytes differ by at most this much, or by 10% of the mean load
/// when that is more, count as even: evening out less is not worth the copying.
pub(crate) const BYTES_SLACK_MIN: u64 = 256 << 20;

/// A swap copies at most this many bytes per byte it shifts between the two brokers,
/// so two partitions of nearly one size are never swapped for a sliver of balance.
const SWAP_COPY_PER_BYTE_SHIFTED: u64 = 4;

/// One replica of a partition: its size, its index in `parts`, and its list position.
type Replica = (u64, usize, usize);
/// How good a trade is, lowest best: the gap it leaves, the bytes it copies, whether it
/// is a swap, and the indexes of the partitions, for a deterministic order.
type Rank = (u64, u64, bool, usize, usize);

/// A trade between a heavier and a lighter broker: a replica the heavier gives, and
/// perhaps one it takes back.
struct Trade {
    /// The replica moving to the lighter broker.
    give: Replica,
    /// The replica moving back to the heavier broker, if any.
    take: Option<Replica>,
}

impl Planner<'_> {
    /// Pass 3: trades replicas between brokers while their bytes differ by more than
    /// the slack and the budget lasts.
    pub(super) fn spread_bytes(&mut self) {
        if !self.counts_even() {
            return;
        }
        let slack = self.slack();
        while self.budget > 0 {
            let Some((heavy, light, trade)) = self.bytes_step(slack) else {
                return;
            };
            if trade.take.is_some() && self.budget < 2 {
                return;
            }
            let (_, index, pos) = trade.give;
            self.replace(index, pos, light);
            if let Some((_, index, pos)) = trade.take {
                self.replace(index, pos, heavy);
            }
        }
    }

    /// Whether every eligible broker holds within one replica of every other.
    fn counts_even(&self) -> bool {
        let max = self.counts.values().max().copied().unwrap_or(0);
        let min = self.counts.values().min().copied().unwrap_or(0);
        max - min <= 1
    }

    /// The byte difference between two brokers that counts as even.
    fn slack(&self) -> u64 {
        let total: u128 = self.loads.values().map(|&b| u128::from(b)).sum();
        let mean = total / self.loads.len().max(1) as u128;
        u64::try_from(mean / 10)
            .unwrap_or(u64::MAX)
            .max(BYTES_SLACK_MIN)
    }

    /// The next trade: the heaviest broker that can trade with one lighter by more than
    /// the slack, with the lightest such broker.
    fn bytes_step(&self, slack: u64) -> Option<(u32, u32, Trade)> {
        let mut order: Vec<(u64, u32)> = self.loads.iter().map(|(&id, &b)| (b, id)).collect();
        order.sort_unstable();
        let lightest = order.first()?.0;
        for &(high, heavy) in order.iter().rev() {
            if high - lightest <= slack {
                break;
            }
            for &(low, light) in &order {
                if high - low <= slack {
                    break;
                }
                if let Some(trade) = self.trade(heavy, light, high - low) {
                    return Some((heavy, light, trade));
                }
            }
        }
        None
    }

    /// The trade between `heavy` and `light` (`gap` bytes apart) that leaves them
    /// closest to even, then copies the least; `None` if none narrows the gap.
    fn trade(&self, heavy: u32, light: u32, gap: u64) -> Option<Trade> {
        let gives = self.replicas_movable(heavy, light);
        let mut takes = self.replicas_movable(light, heavy);
        takes.sort_unstable();
        let alone = self.counts.get(&heavy) > self.counts.get(&light);
        let mut best: Option<(Rank, Trade)> = None;
        let mut consider = |give: Replica, take: Option<Replica>| {
            let t = take.map_or(0, |(bytes, _, _)| bytes);
            let g = give.0;
            let Some(d) = g.checked_sub(t).filter(|&d| d > 0 && d < gap) else {
                return;
            };
            let copied = g.saturating_add(t);
            if copied > SWAP_COPY_PER_BYTE_SHIFTED.saturating_mul(d) {
                return;
            }
            // Both are below 2^64, so the difference of the u128s fits back.
            let left = u64::try_from((u128::from(gap)).abs_diff(2 * u128::from(d))).unwrap_or(gap);
            let rank = (
                left,
                copied,
                take.is_some(),
                give.1,
                take.map_or(0, |(_, i, _)| i),
            );
            if best.as_ref().is_none_or(|(seen, _)| rank < *seen) {
                best = Some((rank, Trade { give, take }));
            }
        };
        for &give in &gives {
            if alone {
                consider(give, None);
            }
            // The ideal take shifts half the gap; the nearest on each side are best.
            let ideal = give.0.saturating_sub(gap / 2);
            let at = takes.partition_point(|&(bytes, _, _)| bytes < ideal);
            for near in [at.checked_sub(1), Some(at)].into_iter().flatten() {
                if let Some(&take) = takes.get(near) {
                    consider(give, Some(take));
                }
            }
        }
        best.map(|(_, trade)| trade)
    }

    /// Every settled partition with a replica on `src` that may move to `dst`.
    fn replicas_movable(&self, src: u32, dst: u32) -> Vec<Replica> {
        self.held
            .get(&src)
            .into_iter()
            .flatten()
            .filter_map(|&index| {
                let part = &self.parts[index];
                if !self.settled(part) {
                    return None;
                }
                let pos = part.replicas.iter().position(|&id| id == src)?;
                self.can_replace(&part.replicas, pos, dst)
                    .then_some((part.bytes, index, pos))
            })
            .collect()
    }
}
