//! Delivery of a subscription's records to a member, in steps so no lock is held
//! across I/O: claim (under the subscription's lock: expired leases, redeliveries,
//! where new records start), fetch (from the partition leaders), resolve (outside the
//! lock: another incarnation of the topic, an undecodable batch, a position past the
//! end), then record (under the lock: leases and new positions, persisted in sled and
//! flushed before the records are returned). Redeliveries are in `redelivery`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pubsub_client::{ConsumerRecord, now_ms};
use pubsub_proto::v1;

use crate::cursor::{Cursor, Holder, Stopped};
use crate::error::{Error, Result};
use crate::manager::{Delivery, Manager, delivered};
use crate::source::{Fetched, ReadOutcome};
use crate::subscription::{State, Subscription};
use crate::undecodable::all_stopped;

/// Bytes per record a subscription's first fetches assume; later ones use what the
/// fetches so far showed ([`Subscription::record_bytes`]).
pub(crate) const FETCH_BYTES_PER_RECORD: u64 = 256;
/// Smallest fetch per partition of one delivery: below this a fetch costs more in
/// round trips than in bytes.
const FETCH_BYTES_MIN: u64 = 64 << 10;
/// Largest fetch per partition of one delivery (and of a redelivery's reads): what one
/// step can take of 100 B records, well below the 32 MiB fetch limit.
pub(crate) const FETCH_BYTES_MAX: u64 = 4 << 20;

/// Offsets claimed for redelivery: partition, offset and delivery attempt.
pub(crate) type Redeliveries = Vec<(u32, u64, u32)>;

/// Where a delivery reads one partition's new records.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The partition.
    pub(crate) partition: u32,
    /// Its first offset never delivered.
    pub(crate) from: u64,
}

/// What a fetch of new records found, once resolved outside the lock: what the
/// record step applies to the partition's cursor.
pub(crate) enum Found {
    /// Records (possibly none).
    Records(Fetched),
    /// Retention removed everything below `log_start`.
    BelowStart { log_start: u64 },
    /// The position lay past the log end (`log_end`); reading resumes at `to`.
    Reset { log_end: u64, to: u64 },
    /// The batch `[offset, next_offset)` cannot be decoded and went to the
    /// dead-letter topic.
    DeadLettered { offset: u64, next_offset: u64 },
    /// The batch cannot be decoded; delivery of new records stops there.
    Stop(Stopped),
}

/// How fetched records are taken into a delivery.
struct Take {
    holder: Holder,
    deadline: Instant,
    /// Records older than this (ms since the epoch) are passed over.
    retention_floor: Option<i64>,
    /// Records the delivery may still take.
    left: usize,
}

/// What applying a find to a cursor leaves for the record step to persist.
enum Persist {
    /// The cursor, and these offsets passed over as acknowledged.
    Passed(Vec<u64>),
    /// A reset of a position past the log end (`log_end`) to `to`.
    Reset { log_end: u64, to: u64 },
    /// Nothing (the stop of a partition is held in memory only).
    Nothing,
}

impl Take {
    /// Applies what a fetch of `partition` found to its cursor; reports what to
    /// deliver or skip into `delivery`.
    fn found(
        &mut self,
        partition: u32,
        cursor: &mut Cursor,
        found: Found,
        delivery: &mut Delivery,
    ) -> Persist {
        match found {
            Found::Records(fetched) => {
                Persist::Passed(self.records(cursor, &fetched.records, delivery))
            }
            Found::BelowStart { log_start } => {
                let from = cursor.committed();
                cursor.skip_below(log_start);
                delivery
                    .skipped
                    .push(skip(partition, from, log_start, "topic retention"));
                Persist::Passed(Vec::new())
            }
            Found::DeadLettered {
                offset,
                next_offset,
            } => {
                let reason = "undecodable batch dead-lettered";
                delivery
                    .skipped
                    .push(skip(partition, offset, next_offset, reason));
                Persist::Passed(cursor.pass_to(next_offset).collect())
            }
            Found::Stop(stopped) => {
                cursor.stop(stopped.offset, stopped.reason);
                Persist::Nothing
            }
            Found::Reset { log_end, to } => Persist::Reset { log_end, to },
        }
    }

    /// Delivers a partition's fetched records in order while there is room; returns
    /// the offsets passed over (gaps the log does not hold, and records aged out,
    /// which are reported as a skip).
    fn records(
        &mut self,
        cursor: &mut Cursor,
        records: &[ConsumerRecord],
        delivery: &mut Delivery,
    ) -> Vec<u64> {
        let mut passed = Vec::new();
        let mut aged: Option<(u32, u64, u64)> = None;
        delivery.records.reserve(records.len().min(self.left));
        for record in records {
            if self.left == 0 || cursor.room() == 0 {
                break;
            }
            if record.offset < cursor.next() {
                continue;
            }
            // Offsets the log does not hold count as acknowledged.
            passed.extend(cursor.next()..record.offset);
            if self
                .retention_floor
                .is_some_and(|floor| record.timestamp < floor)
            {
                cursor.pass_new(record.offset);
                passed.push(record.offset);
                let first = aged.map_or(record.offset, |(_, first, _)| first);
                aged = Some((record.partition.0, first, record.offset + 1));
                continue;
            }
            if cursor.deliver_new(record.offset, self.holder, self.deadline) {
                self.left -= 1;
                delivery.records.push(delivered(record.clone(), 1));
            }
        }
        if let Some((partition, from, to)) = aged {
            delivery
                .skipped
                .push(skip(partition, from, to, "subscription retention"));
        }
        passed
    }
}

/// What a delivery claimed under the lock, to check again once the fetches are back.
pub(crate) struct Claim {
    member_id: String,
    /// The lease holder the delivery is for.
    pub(crate) holder: Holder,
    generation: u64,
    /// Seek count of each eligible partition at claim time.
    seeks: BTreeMap<u32, u64>,
}

impl Claim {
    /// Whether what was claimed of `partition` still stands after the fetch: same
    /// generation, the member still reads the partition, and no seek since.
    pub(crate) fn stands(
        &self,
        subscription: &Subscription,
        state: &State,
        partition: u32,
    ) -> bool {
        state.generation == self.generation
            && state.may_read(subscription.options.group, &self.member_id, partition)
            && state
                .cursors
                .get(partition as usize)
                .is_some_and(|c| self.seeks.get(&partition) == Some(&c.seeks()))
    }
}

impl Manager {
    /// Delivers up to `max` records to a member, waiting up to `wait` for the first.
    /// The caller counts what it sends (`SubscriptionCounters::delivered`).
    pub async fn deliver(
        &self,
        subscription: &Arc<Subscription>,
        member_id: &str,
        holder: Holder,
        max: usize,
        wait: Duration,
    ) -> Result<Delivery> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let changed = subscription.changed.notified();
            let delivery = self
                .deliver_once(subscription, member_id, holder, max, until)
                .await?;
            if !delivery.records.is_empty()
                || !delivery.skipped.is_empty()
                || tokio::time::Instant::now() >= until
            {
                return Ok(delivery);
            }
            // Nothing new: wait for a nack or release, or look again shortly (leases
            // expire on their own clock).
            let _ = tokio::time::timeout_at(
                until.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                changed,
            )
            .await;
        }
    }

    async fn deliver_once(
        &self,
        subscription: &Arc<Subscription>,
        member_id: &str,
        holder: Holder,
        max: usize,
        until: tokio::time::Instant,
    ) -> Result<Delivery> {
        // 1. Claim.
        let (claims, plans, claim) = self.claim(subscription, member_id, holder, max)?;
        let mut delivery = Delivery::default();
        // 2a. Redeliveries: fetch the claimed records; dead-letter those out of attempts.
        if !claims.is_empty() {
            self.redeliver(subscription, &claim, claims, &mut delivery)
                .await?;
        }
        // 2b. New records: long-poll every planned partition, take what arrives first.
        let left = max.saturating_sub(delivery.records.len());
        if left == 0 || plans.is_empty() {
            // Delivery counts of the redeliveries are durable before they go out.
            self.store().flush().await?;
            return Ok(delivery);
        }
        let wait = if delivery.records.is_empty() {
            until.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::ZERO
        };
        let (results, failure) = self.fetch_new(subscription, plans, left, wait).await;
        if delivery.records.is_empty()
            && delivery.skipped.is_empty()
            && let Some(error) = failure
        {
            // Every partition failed even after the source's retries: say why.
            self.store().flush().await?;
            return Err(error);
        }
        // 2c. What is not records (another incarnation, an undecodable batch, a
        // position past the end) is acted on outside the lock.
        let results = self.resolve(subscription, results).await?;
        // 3. Record.
        self.record_new(subscription, &claim, left, results, &mut delivery)?;
        self.store().flush().await?;
        Ok(delivery)
    }

    /// Step 1 of a delivery, under the lock: expires leases, claims redeliveries, and
    /// plans where each eligible partition's new records start. Fails when every
    /// partition the member may read is stopped at a batch that cannot be decoded.
    fn claim(
        &self,
        subscription: &Arc<Subscription>,
        member_id: &str,
        holder: Holder,
        max: usize,
    ) -> Result<(Redeliveries, Vec<Plan>, Claim)> {
        let mut state = subscription.lock()?;
        let now = Instant::now();
        let mut eligible = state.eligible(
            subscription.options.group,
            member_id,
            subscription.partitions(),
        );
        // Start at a different partition each time, so with few credits no
        // partition is always served last.
        if !eligible.is_empty() {
            let turn = subscription.next_turn() % eligible.len();
            eligible.rotate_left(turn);
        }
        let deadline = subscription.lease_deadline();
        let (claims, plans) = plan(&mut state.cursors, &eligible, holder, max, now, deadline);
        if claims.is_empty()
            && plans.is_empty()
            && let Some(error) = all_stopped(subscription, &state, &eligible)
        {
            return Err(error);
        }
        let claim = Claim {
            member_id: member_id.to_string(),
            holder,
            generation: state.generation,
            seeks: eligible
                .iter()
                .filter_map(|&p| Some((p, state.cursors.get(p as usize)?.seeks())))
                .collect(),
        };
        Ok((claims, plans, claim))
    }

    /// Step 2b: long-polls every planned partition; takes what arrives first and
    /// whatever else is ready then. The error is that of the first failure, when
    /// every fetch failed.
    async fn fetch_new(
        &self,
        subscription: &Subscription,
        plans: Vec<Plan>,
        left: usize,
        wait: Duration,
    ) -> (Vec<(Plan, ReadOutcome)>, Option<Error>) {
        let planned = plans.len();
        let max_bytes = fetch_bytes(left, subscription.record_bytes(), planned);
        let mut fetches: FuturesUnordered<_> = plans
            .into_iter()
            .map(|plan| {
                let source = self.source();
                let topic = subscription.topic.as_str();
                async move {
                    let result = source
                        .read(topic, plan.partition, plan.from, wait, max_bytes)
                        .await;
                    (plan, result)
                }
            })
            .collect();
        let mut results = Vec::new();
        let mut failure = None;
        let mut failed = 0;
        while let Some((plan, result)) = fetches.next().await {
            let found = match &result {
                Ok(ReadOutcome::Records(f)) => !f.records.is_empty() || f.undecodable.is_some(),
                Ok(ReadOutcome::BelowStart { .. } | ReadOutcome::AboveEnd { .. }) => true,
                Err(_) => false,
            };
            if let Ok(ReadOutcome::Records(fetched)) = &result {
                subscription.observe_fetch(fetched.bytes, fetched.records.len());
            }
            match result {
                Ok(outcome) => results.push((plan, outcome)),
                Err(e) => {
                    tracing::debug!(subscription = %subscription.name, partition = plan.partition, error = %e, "read failed");
                    failed += 1;
                    failure.get_or_insert(e);
                }
            }
            if found {
                // Take whatever else is ready now, then stop waiting on idle partitions.
                while let Some(Some((plan, Ok(outcome)))) =
                    futures::FutureExt::now_or_never(fetches.next())
                {
                    results.push((plan, outcome));
                }
                break;
            }
        }
        (results, failure.filter(|_| failed == planned))
    }

    /// Step 2c, outside the lock: records of another incarnation of the topic end the
    /// subscription (or, from a broker behind on metadata, are dropped); a batch that
    /// cannot be decoded is dead-lettered or stops its partition; a position past the
    /// partition's end gets the offset it is reset to.
    async fn resolve(
        &self,
        subscription: &Arc<Subscription>,
        results: Vec<(Plan, ReadOutcome)>,
    ) -> Result<Vec<(Plan, Found)>> {
        let mut resolved = Vec::with_capacity(results.len());
        for (plan, outcome) in results {
            let found = match outcome {
                ReadOutcome::Records(fetched) => {
                    if !self
                        .observe_incarnation(subscription, fetched.topic_created_ms)
                        .await?
                    {
                        continue;
                    }
                    match fetched.undecodable {
                        None => Found::Records(fetched),
                        Some(batch) => {
                            let resolved = self
                                .resolve_undecodable(subscription, plan.partition, batch)
                                .await;
                            let Some(found) = resolved else { continue };
                            found
                        }
                    }
                }
                ReadOutcome::BelowStart { log_start } => Found::BelowStart { log_start },
                ReadOutcome::AboveEnd { log_end } => {
                    let target = self
                        .reset_target(subscription, plan.partition, log_end)
                        .await?;
                    let Some(to) = target else { continue };
                    Found::Reset { log_end, to }
                }
            };
            resolved.push((plan, found));
        }
        Ok(resolved)
    }

    /// Step 3, under the lock: applies what was found to each partition whose claim
    /// still stands, and persists it (the caller flushes).
    fn record_new(
        &self,
        subscription: &Arc<Subscription>,
        claim: &Claim,
        left: usize,
        results: Vec<(Plan, Found)>,
        delivery: &mut Delivery,
    ) -> Result<()> {
        let name = &subscription.name;
        let retention_floor = subscription
            .options
            .retention_ms
            .map(|ms| now_ms().saturating_sub(ms as i64));
        let mut take = Take {
            holder: claim.holder,
            deadline: subscription.lease_deadline(),
            retention_floor,
            left,
        };
        self.write_unflushed(subscription, |state, writes| {
            for (plan, found) in results {
                let partition = plan.partition;
                if let Found::DeadLettered { .. } = found {
                    // Written whether or not the claim still stands: counted either way.
                    state.dead_lettered += 1;
                    subscription.counters.dead_lettered(1);
                    writes.record();
                }
                // A rebalance or a seek while the fetch ran makes what it found stale.
                if !claim.stands(subscription, state, partition) {
                    continue;
                }
                if let Found::Records(fetched) = &found
                    && let Some(hw) = state.high_watermarks.get_mut(partition as usize)
                {
                    *hw = Some(fetched.high_watermark);
                }
                let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                    continue;
                };
                let before = cursor.committed();
                match take.found(partition, cursor, found, delivery) {
                    Persist::Passed(passed) => writes.cursor(partition, cursor, before, &passed)?,
                    Persist::Reset { log_end, to } => {
                        tracing::warn!(subscription = %name, topic = %subscription.topic, partition, committed_offset = before, next_offset = cursor.next(), log_end_offset = log_end, reset_to = to, "position past the partition's end (records lost); reset by the subscription's start option");
                        cursor.seek(to);
                        writes.reset(partition, cursor)?;
                    }
                    Persist::Nothing => {}
                }
            }
            Ok(())
        })
    }
}

/// The decision of a claim, over the cursors alone: in `eligible` order (the caller
/// rotates it), expires the leases past `now`, claims up to `max` redeliveries for
/// `holder` (leased until `deadline`, their attempts counted), and, if that leaves
/// room, plans where each partition with room in its window and not stopped reads
/// new records.
pub(crate) fn plan(
    cursors: &mut [Cursor],
    eligible: &[u32],
    holder: Holder,
    max: usize,
    now: Instant,
    deadline: Instant,
) -> (Redeliveries, Vec<Plan>) {
    let mut claims: Redeliveries = Vec::new();
    for &partition in eligible {
        let Some(cursor) = cursors.get_mut(partition as usize) else {
            continue;
        };
        cursor.expire(now);
        let room = max - claims.len();
        if room == 0 {
            break;
        }
        let claimed = cursor.claim_redeliveries(room, holder, deadline);
        claims.extend(claimed.into_iter().map(|(o, a)| (partition, o, a)));
    }
    if claims.len() == max {
        return (claims, Vec::new());
    }
    let plans = eligible
        .iter()
        .filter_map(|&partition| {
            let cursor = cursors.get(partition as usize)?;
            (cursor.room() > 0 && cursor.stopped().is_none()).then_some(Plan {
                partition,
                from: cursor.next(),
            })
        })
        .collect();
    (claims, plans)
}

/// Bytes to ask of each of `planned` partitions for `left` records of about
/// `record_bytes` each: about what can be delivered (a quarter more, as batches
/// straddle), split between the partitions, not a full fetch of each. What a step
/// cannot take is fetched again (and its CRC checked again) by the next one.
fn fetch_bytes(left: usize, record_bytes: u64, planned: usize) -> u32 {
    let wanted = (left as u64).saturating_mul(record_bytes) / 4 * 5;
    let each = wanted / planned.max(1) as u64;
    each.clamp(FETCH_BYTES_MIN, FETCH_BYTES_MAX) as u32
}

/// A skip as reported to readers.
pub(crate) fn skip(partition: u32, from: u64, to: u64, reason: &str) -> v1::Skip {
    v1::Skip {
        partition,
        from_offset: from,
        to_offset: to,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
