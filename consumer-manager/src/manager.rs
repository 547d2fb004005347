//! The consumer manager's operations: subscriptions, group membership, delivery
//! (pull), acknowledgements, seeking, and dead letters.
//!
//! Delivery runs in three steps so no lock is held across I/O: claim (under the
//! subscription's lock: expired leases, redeliveries, where new records start), fetch
//! (from the partition leaders), then record (under the lock: leases, the new
//! positions, persisted in sled and flushed before the records are returned).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pubsub_client::now_ms;
use pubsub_client::record::ConsumerRecord;
use pubsub_proto::v1;

use crate::cursor::{AckOutcome, Cursor, Holder, Stopped};
use crate::error::{Error, Result};
use crate::options::{Options, check_subscription_name};
use crate::source::{Fetched, ReadOutcome, Source, header_pairs};
use crate::store::{Changes, Store, SubscriptionRecord};
use crate::subscription::{
    Mode, State, Subscription, check_generation, persist_partition, seek_partition,
};
use crate::undecodable::all_stopped;

/// Fetch size per record wanted, when sizing a delivery's fetches.
const FETCH_BYTES_PER_RECORD: u64 = 256;
/// Smallest and largest fetch per partition of one delivery.
const FETCH_BYTES_MIN: u64 = 64 << 10;
const FETCH_BYTES_MAX: u64 = 4 << 20;

/// Offsets claimed for redelivery: partition, offset and delivery attempt.
type Redeliveries = Vec<(u32, u64, u32)>;

/// Where a delivery reads one partition's new records.
struct Plan {
    partition: u32,
    from: u64,
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

impl Take {
    /// Delivers a partition's fetched records in order while there is room; returns
    /// the offsets passed over (gaps the log does not hold, and records aged out,
    /// which are reported as a skip).
    fn records(
        &mut self,
        cursor: &mut Cursor,
        records: Vec<ConsumerRecord>,
        delivery: &mut Delivery,
    ) -> Vec<u64> {
        let mut passed = Vec::new();
        let mut aged: Option<(u32, u64, u64)> = None;
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
                aged = Some((record.partition, first, record.offset + 1));
                continue;
            }
            if cursor.deliver_new(record.offset, self.holder, self.deadline) {
                self.left -= 1;
                delivery.records.push(delivered(record, 1));
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
struct Claim {
    member_id: String,
    holder: Holder,
    generation: u64,
    /// Seek count of each eligible partition at claim time.
    seeks: BTreeMap<u32, u64>,
}

impl Claim {
    /// Whether what was claimed of `partition` still stands after the fetch: same
    /// generation, the member still reads the partition, and no seek since.
    fn stands(&self, subscription: &Subscription, state: &State, partition: u32) -> bool {
        state.generation == self.generation
            && state.may_read(subscription.options.group, &self.member_id, partition)
            && state
                .cursors
                .get(partition as usize)
                .is_some_and(|c| self.seeks.get(&partition) == Some(&c.seeks()))
    }
}

/// Most records one Read or one stream delivery returns.
pub const MAX_READ_RECORDS: usize = 10_000;
/// Longest a Read waits for records.
const MAX_READ_WAIT: Duration = Duration::from_secs(30);

/// Settings of a consumer manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// A broker to bootstrap from (host:port).
    pub brokers: String,
    /// How often keep-until-consumed topics get their consumed segments deleted.
    pub cleanup_interval: Duration,
}

impl ManagerConfig {
    /// Defaults for a manager storing under `data_dir` and reading from `brokers`.
    pub fn new(data_dir: PathBuf, brokers: String) -> Self {
        ManagerConfig {
            data_dir,
            brokers,
            cleanup_interval: Duration::from_secs(10),
        }
    }
}

/// Who is calling: member id (may be empty) and client address.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Member id given by the caller (empty: derived from the address).
    pub member_id: String,
    /// Client address.
    pub address: String,
}

/// Records delivered by one read, and what was skipped.
#[derive(Default)]
pub struct Delivery {
    /// Records, each leased to the reader.
    pub records: Vec<v1::DeliveredRecord>,
    /// Ranges passed over because of retention.
    pub skipped: Vec<v1::Skip>,
}

/// The consumer manager.
pub struct Manager {
    store: Store,
    source: Source,
    subscriptions: RwLock<HashMap<String, Arc<Subscription>>>,
    /// Serializes Subscribe, Unsubscribe and dead-letter replays.
    pub(crate) admin: tokio::sync::Mutex<()>,
    next_holder: AtomicU64,
    config: ManagerConfig,
}

impl Manager {
    /// Opens the store and reloads every subscription.
    pub fn open(config: ManagerConfig) -> Result<Manager> {
        let store = Store::open(&config.data_dir)?;
        let mut subscriptions = HashMap::new();
        for record in store.subscriptions()? {
            let mut cursors = Vec::with_capacity(record.partitions as usize);
            for partition in 0..record.partitions {
                let cursor = match store.cursor(&record.name, partition)? {
                    Some(loaded) => Cursor::restore(
                        loaded.cursor.committed,
                        loaded.cursor.next,
                        loaded.acked,
                        loaded.deliveries,
                    ),
                    None => Cursor::at(0),
                };
                cursors.push(cursor);
            }
            tracing::info!(subscription = %record.name, topic = %record.topic, "subscription loaded");
            subscriptions.insert(
                record.name.clone(),
                Arc::new(Subscription::new(&record, cursors)),
            );
        }
        Ok(Manager {
            source: Source::new(config.brokers.clone()),
            store,
            subscriptions: RwLock::new(subscriptions),
            admin: tokio::sync::Mutex::new(()),
            next_holder: AtomicU64::new(1),
            config,
        })
    }

    /// The manager's settings.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The brokers.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn new_holder(&self) -> Holder {
        self.next_holder.fetch_add(1, Ordering::Relaxed)
    }

    /// A subscription by name.
    pub fn subscription(&self, name: &str) -> Result<Arc<Subscription>> {
        self.subscriptions
            .read()
            .map_err(|_| Error::Storage("subscription map poisoned".into()))?
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("subscription {name:?} does not exist")))
    }

    /// Every subscription.
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Creates a subscription (or answers with the identical existing one).
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        options: Option<&v1::SubscriptionOptions>,
    ) -> Result<(Arc<Subscription>, bool)> {
        check_subscription_name(name)?;
        pubsub_proto::ids::TopicName::new(topic.to_string())
            .map_err(|e| Error::InvalidArgument(format!("topic name {topic:?}: {e}")))?;
        let options = Options::resolve(topic, name, options)?;
        let _admin = self.admin.lock().await;
        if let Ok(existing) = self.subscription(name) {
            let outlived = existing.topic == topic && {
                let described = self.source.describe(topic).await?;
                let seen = described.topic.map_or(0, |t| t.created_ms);
                self.remove_if_outlived(&existing, seen)?
            };
            // An outlived one (its topic deleted and created again) is gone: the name
            // starts afresh.
            if !outlived {
                if existing.topic == topic && existing.options == options {
                    return Ok((existing, false));
                }
                return Err(Error::AlreadyExists(format!(
                    "subscription {name:?} already exists on topic {:?} with other options; \
                     unsubscribe it first or pick another name",
                    existing.topic
                )));
            }
        }
        let description = self.source.describe(topic).await?;
        let (partitions, topic_created_ms) = description
            .topic
            .map_or((0, 0), |t| (t.partitions.len() as u32, t.created_ms));
        let spec = options.start.spec();
        // Whatever a deleted subscription of this name left behind must not count.
        self.store.delete_subscription(name)?;
        let mut cursors = Vec::with_capacity(partitions as usize);
        let mut changes = Changes::new();
        for partition in 0..partitions {
            let offset = self.source.offset(topic, partition, spec).await?;
            let cursor = Cursor::at(offset);
            persist_partition(
                &self.store,
                &mut changes,
                name,
                partition,
                &cursor,
                offset,
                &[],
            )?;
            cursors.push(cursor);
        }
        let record = SubscriptionRecord {
            name: name.to_string(),
            topic: topic.to_string(),
            partitions,
            options,
            generation: 0,
            dead_lettered: 0,
            replayed: Vec::new(),
            topic_created_ms,
            dead_letter_created_ms: 0,
        };
        self.store.apply(changes)?;
        self.store.put_subscription(&record)?;
        self.store.flush().await?;
        let subscription = Arc::new(Subscription::new(&record, cursors));
        self.subscriptions
            .write()
            .map_err(|_| Error::Storage("subscription map poisoned".into()))?
            .insert(name.to_string(), subscription.clone());
        tracing::info!(subscription = %name, topic, partitions, "subscription created");
        Ok((subscription, true))
    }

    /// Deletes a subscription of `topic`, its offsets and delivery counts.
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let subscription = self.subscription(name)?;
        if !topic.is_empty() && subscription.topic != topic {
            return Err(Error::NotFound(format!(
                "subscription {name:?} is on topic {:?}, not {topic:?}",
                subscription.topic
            )));
        }
        self.remove(&subscription, "unsubscribed")?;
        self.store.flush().await?;
        tracing::info!(subscription = %name, "subscription deleted");
        Ok(())
    }

    /// Deletes a subscription and everything stored for it (not yet flushed): members
    /// are removed, so their streams end. The caller holds `admin`. Does nothing if
    /// the name now stands for another subscription.
    pub(crate) fn remove(&self, subscription: &Arc<Subscription>, why: &str) -> Result<()> {
        {
            let mut map = self
                .subscriptions
                .write()
                .map_err(|_| Error::Storage("subscription map poisoned".into()))?;
            match map.get(&subscription.name) {
                Some(current) if Arc::ptr_eq(current, subscription) => {
                    map.remove(&subscription.name);
                }
                _ => return Ok(()),
            }
        }
        let mut state = subscription.lock_any()?;
        state.deleted = Some(why.to_string());
        let ids: Vec<String> = state.members.keys().cloned().collect();
        for id in ids {
            state.remove(&id, true);
        }
        self.store.delete_subscription(&subscription.name)
    }

    /// Joins a group (or renews a membership): member id, generation, partitions.
    pub async fn join(
        &self,
        name: &str,
        caller: &Caller,
        mode: Mode,
    ) -> Result<v1::JoinGroupResponse> {
        let subscription = self.subscription(name)?;
        let member_id = if caller.member_id.is_empty() {
            format!("{}-{:016x}", mode.as_str(), rand::random::<u64>())
        } else {
            caller.member_id.clone()
        };
        let (response, rebalanced) = {
            let mut state = subscription.lock()?;
            let (_, new) = state.touch(&member_id, &caller.address, mode, || self.new_holder());
            let rebalanced = new && subscription.options.group;
            if rebalanced {
                state.rebalance(subscription.partitions);
                tracing::info!(subscription = %name, member = %member_id, generation = state.generation, "member joined; rebalanced");
                self.store.put_subscription(&subscription.record(&state))?;
            }
            let response = v1::JoinGroupResponse {
                partitions: state.eligible(
                    subscription.options.group,
                    &member_id,
                    subscription.partitions,
                ),
                member_id,
                generation: state.generation,
                session_timeout_ms: subscription.options.session_timeout_ms,
            };
            (response, rebalanced)
        };
        if rebalanced {
            // A generation is never handed out twice, even across a restart.
            self.store.flush().await?;
            subscription.changed.notify_waiters();
        }
        Ok(response)
    }

    /// Removes a member now (leave, stream closed, session expired).
    pub async fn leave(&self, name: &str, member_id: &str) -> Result<()> {
        let subscription = self.subscription(name)?;
        {
            let mut state = subscription.lock()?;
            let group = subscription.options.group;
            if !state.remove(member_id, group) {
                return Ok(());
            }
            if !group {
                subscription.changed.notify_waiters();
                return Ok(());
            }
            state.rebalance(subscription.partitions);
            tracing::info!(subscription = %name, member = %member_id, generation = state.generation, "member left; rebalanced");
            self.store.put_subscription(&subscription.record(&state))?;
        }
        subscription.changed.notify_waiters();
        self.store.flush().await?;
        Ok(())
    }

    /// Pull: up to `max` records for `caller`, waiting up to `wait` for the first.
    pub async fn read(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Delivery> {
        let subscription = self.subscription(name)?;
        let max = max.clamp(1, MAX_READ_RECORDS);
        let wait = wait.min(MAX_READ_WAIT);
        let member_id = member_id_of(&subscription, caller);
        let holder = {
            let mut state = subscription.lock()?;
            if subscription.options.group {
                check_generation(&subscription, &state, &member_id, generation)?;
            }
            state
                .touch(&member_id, &caller.address, Mode::Pull, || {
                    self.new_holder()
                })
                .0
        };
        self.deliver(&subscription, &member_id, holder, max, wait)
            .await
    }

    /// Delivers up to `max` records to a member, waiting up to `wait` for the first.
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
            self.store.flush().await?;
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
            self.store.flush().await?;
            return Err(error);
        }
        // 2c. What is not records (another incarnation, an undecodable batch, a
        // position past the end) is acted on outside the lock.
        let results = self.resolve(subscription, results).await?;
        // 3. Record.
        self.record_new(subscription, &claim, left, results, &mut delivery)?;
        self.store.flush().await?;
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
            subscription.partitions,
        );
        // Start at a different partition each time, so with few credits no
        // partition is always served last.
        if !eligible.is_empty() {
            let turn = subscription.next_turn() % eligible.len();
            eligible.rotate_left(turn);
        }
        let deadline = subscription.lease_deadline();
        let mut claims: Redeliveries = Vec::new();
        for &partition in &eligible {
            let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                continue;
            };
            cursor.expire(now);
            let room = max - claims.len();
            if room == 0 {
                break;
            }
            claims.extend(
                cursor
                    .claim_redeliveries(room, holder, deadline)
                    .into_iter()
                    .map(|(o, a)| (partition, o, a)),
            );
        }
        let plans: Vec<Plan> = if claims.len() == max {
            Vec::new()
        } else {
            eligible
                .iter()
                .filter_map(|&partition| {
                    let cursor = state.cursors.get(partition as usize)?;
                    (cursor.room() > 0 && cursor.stopped().is_none()).then_some(Plan {
                        partition,
                        from: cursor.next(),
                    })
                })
                .collect()
        };
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
        // Ask for about what can be delivered, not a full fetch of every partition.
        let max_bytes =
            (left as u64 * FETCH_BYTES_PER_RECORD).clamp(FETCH_BYTES_MIN, FETCH_BYTES_MAX) as u32;
        let planned = plans.len();
        let mut fetches: FuturesUnordered<_> = plans
            .into_iter()
            .map(|plan| {
                let source = &self.source;
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
        let mut changes = Changes::new();
        let mut state = subscription.lock()?;
        let deadline = subscription.lease_deadline();
        let mut take = Take {
            holder: claim.holder,
            deadline,
            retention_floor,
            left,
        };
        for (plan, found) in results {
            let partition = plan.partition;
            if let Found::DeadLettered { .. } = found {
                // Written whether or not the claim still stands: counted either way.
                state.dead_lettered += 1;
                self.store.put_subscription(&subscription.record(&state))?;
            }
            // A rebalance or a seek while the fetch ran makes what it found stale.
            if !claim.stands(subscription, &state, partition) {
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
            let passed: Vec<u64> = match found {
                Found::Records(fetched) => take.records(cursor, fetched.records, delivery),
                Found::BelowStart { log_start } => {
                    cursor.skip_below(log_start);
                    delivery
                        .skipped
                        .push(skip(partition, before, log_start, "topic retention"));
                    Vec::new()
                }
                Found::DeadLettered {
                    offset,
                    next_offset,
                } => {
                    delivery.skipped.push(skip(
                        partition,
                        offset,
                        next_offset,
                        "undecodable batch dead-lettered",
                    ));
                    cursor.pass_to(next_offset).collect()
                }
                Found::Stop(stopped) => {
                    cursor.stop(stopped.offset, stopped.reason);
                    continue;
                }
                Found::Reset { log_end, to } => {
                    tracing::warn!(subscription = %name, topic = %subscription.topic, partition, committed_offset = before, next_offset = cursor.next(), log_end_offset = log_end, reset_to = to, "position past the partition's end (records lost); reset by the subscription's start option");
                    seek_partition(&self.store, &mut changes, name, partition, cursor, to)?;
                    continue;
                }
            };
            persist_partition(
                &self.store,
                &mut changes,
                name,
                partition,
                cursor,
                before,
                &passed,
            )?;
        }
        self.store.apply(changes)
    }

    /// Fetches claimed redeliveries; records past `max_deliveries` go to the dead-letter
    /// topic and are acknowledged instead of delivered.
    async fn redeliver(
        &self,
        subscription: &Arc<Subscription>,
        claim: &Claim,
        claims: Redeliveries,
        delivery: &mut Delivery,
    ) -> Result<()> {
        let mut by_partition: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
        for (partition, offset, attempt) in claims {
            by_partition
                .entry(partition)
                .or_default()
                .push((offset, attempt));
        }
        let max_deliveries = subscription.options.max_deliveries;
        let mut dead: Vec<ConsumerRecord> = Vec::new();
        let mut attempts: Vec<(u32, u64, u32)> = Vec::new();
        // Fetched and due for delivery, if the claim still stands once fetched.
        let mut found: Vec<(u32, u64, u32, ConsumerRecord)> = Vec::new();
        // Could not be fetched now: offered again.
        let mut unfound: Vec<(u32, u64)> = Vec::new();
        // The log holds no such offset (a later one came instead): acknowledged.
        let mut vanished: Vec<(u32, u64)> = Vec::new();
        let mut below_start: Vec<(u32, u64)> = Vec::new();
        for (partition, mut wanted) in by_partition {
            wanted.sort_unstable();
            let mut index = 0;
            while index < wanted.len() {
                let from = wanted[index].0;
                match self
                    .source
                    .read(
                        &subscription.topic,
                        partition,
                        from,
                        Duration::ZERO,
                        FETCH_BYTES_MAX as u32,
                    )
                    .await
                {
                    Ok(ReadOutcome::Records(fetched))
                        if !fetched.records.is_empty()
                            && subscription.reads_incarnation(fetched.topic_created_ms) =>
                    {
                        let mut records = fetched.records.into_iter().peekable();
                        while index < wanted.len() {
                            let (offset, attempt) = wanted[index];
                            while records.peek().is_some_and(|r| r.offset < offset) {
                                records.next();
                            }
                            let Some(record) = records.next_if(|r| r.offset == offset) else {
                                if records.peek().is_none() {
                                    // Past this fetch: the next one starts here.
                                    break;
                                }
                                vanished.push((partition, offset));
                                index += 1;
                                continue;
                            };
                            if max_deliveries.is_some_and(|max| attempt > max) {
                                attempts.push((partition, offset, attempt));
                                dead.push(record);
                            } else {
                                found.push((partition, offset, attempt, record));
                            }
                            index += 1;
                        }
                    }
                    Ok(ReadOutcome::BelowStart { log_start }) => {
                        below_start.push((partition, log_start));
                        unfound.extend(
                            wanted[index..]
                                .iter()
                                .filter(|&&(o, _)| o >= log_start)
                                .map(|&(o, _)| (partition, o)),
                        );
                        break;
                    }
                    // Nothing of this incarnation to deliver now (a batch that cannot
                    // be decoded, a position past the end): new reads deal with it.
                    Ok(ReadOutcome::Records(_) | ReadOutcome::AboveEnd { .. }) | Err(_) => {
                        unfound.extend(wanted[index..].iter().map(|&(o, _)| (partition, o)));
                        break;
                    }
                }
            }
        }
        if !dead.is_empty()
            && let Err(e) = self.dead_letter(subscription, &dead, &attempts).await
        {
            // Offered again later; the rest of the delivery goes on.
            tracing::warn!(subscription = %subscription.name, error = %e, "cannot write dead letters; will retry");
            unfound.extend(dead.iter().map(|r| (r.partition, r.offset)));
        }
        let mut changes = Changes::new();
        {
            let mut state = subscription.lock()?;
            // A rebalance, a seek or an expiry while fetching moved the lease on: then
            // the record is not this reader's to get.
            for (partition, offset, attempt, record) in found {
                let held = state
                    .cursors
                    .get(partition as usize)
                    .is_some_and(|c| c.holder_of(offset) == Some(claim.holder));
                if held && claim.stands(subscription, &state, partition) {
                    attempts.push((partition, offset, attempt));
                    delivery.records.push(delivered(record, attempt));
                }
            }
            for (partition, offset) in unfound {
                if let Some(cursor) = state.cursors.get_mut(partition as usize) {
                    cursor.unclaim_if(offset, claim.holder);
                }
            }
            for &(partition, offset, attempt) in &attempts {
                changes.deliveries(&subscription.name, partition, offset, attempt);
            }
            let mut gone: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for (partition, offset) in vanished {
                gone.entry(partition).or_default().push(offset);
            }
            for (partition, offsets) in gone {
                if let Some(cursor) = state.cursors.get_mut(partition as usize) {
                    let before = cursor.committed();
                    for &offset in &offsets {
                        cursor.ack(offset);
                    }
                    persist_partition(
                        &self.store,
                        &mut changes,
                        &subscription.name,
                        partition,
                        cursor,
                        before,
                        &offsets,
                    )?;
                }
            }
            for (partition, log_start) in below_start {
                if let Some(cursor) = state.cursors.get_mut(partition as usize) {
                    let from = cursor.committed();
                    cursor.skip_below(log_start);
                    persist_partition(
                        &self.store,
                        &mut changes,
                        &subscription.name,
                        partition,
                        cursor,
                        from,
                        &[],
                    )?;
                    delivery
                        .skipped
                        .push(skip(partition, from, log_start, "topic retention"));
                }
            }
            self.store.apply(changes)?;
        }
        Ok(())
    }

    /// Writes records to the subscription's dead-letter topic, then acknowledges them.
    async fn dead_letter(
        &self,
        subscription: &Arc<Subscription>,
        dead: &[ConsumerRecord],
        attempts: &[(u32, u64, u32)],
    ) -> Result<()> {
        let attempt_of = |partition: u32, offset: u64| {
            attempts
                .iter()
                .find(|&&(p, o, _)| p == partition && o == offset)
                .map_or(0, |&(_, _, a)| a - 1)
        };
        let records = dead
            .iter()
            .map(|record| {
                let mut headers = header_pairs(record);
                headers.push(("pubsub-dlq-topic".into(), subscription.topic.clone().into()));
                headers.push((
                    "pubsub-dlq-partition".into(),
                    record.partition.to_string().into(),
                ));
                headers.push(("pubsub-dlq-offset".into(), record.offset.to_string().into()));
                headers.push((
                    "pubsub-dlq-deliveries".into(),
                    attempt_of(record.partition, record.offset)
                        .to_string()
                        .into(),
                ));
                pubsub_client::ProducerRecord {
                    key: record.key.clone(),
                    value: record.value.clone(),
                    headers,
                    partition: None,
                    timestamp: Some(record.timestamp),
                }
            })
            .collect();
        self.source
            .produce(&subscription.options.dead_letter_topic, 1, records)
            .await?;
        tracing::info!(subscription = %subscription.name, records = dead.len(), topic = %subscription.options.dead_letter_topic, "dead-lettered records");
        let ids: Vec<(u32, u64)> = dead.iter().map(|r| (r.partition, r.offset)).collect();
        {
            let mut state = subscription.lock()?;
            state.dead_lettered += ids.len() as u64;
            self.store.put_subscription(&subscription.record(&state))?;
        }
        // Not strict: a seek meanwhile must not leave a written dead letter unacked
        // (it would be dead-lettered again).
        self.ack_ids(subscription, &ids, false).await
    }

    /// Acknowledges records of a subscription for a caller (generation checked).
    pub async fn ack(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        ids: &[(u32, u64)],
    ) -> Result<()> {
        let subscription = self.subscription(name)?;
        self.check_caller(&subscription, caller, generation)?;
        self.ack_ids(&subscription, ids, true).await
    }

    /// Checks a caller's generation and renews its presence.
    fn check_caller(
        &self,
        subscription: &Subscription,
        caller: &Caller,
        generation: u64,
    ) -> Result<()> {
        let member_id = member_id_of(subscription, caller);
        let mut state = subscription.lock()?;
        check_generation(subscription, &state, &member_id, generation)?;
        if let Some(member) = state.members.get_mut(&member_id) {
            member.last_seen = Instant::now();
        }
        Ok(())
    }

    /// Acknowledges records and waits until the new positions are durable. `strict`
    /// refuses the whole call, changing nothing, if any id names an unknown partition
    /// or an offset never delivered; otherwise (a stream's acks, which may trail a
    /// seek) such ids are skipped.
    pub async fn ack_ids(
        &self,
        subscription: &Arc<Subscription>,
        ids: &[(u32, u64)],
        strict: bool,
    ) -> Result<()> {
        let mut changes = Changes::new();
        {
            let mut state = subscription.lock()?;
            let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for &(partition, offset) in ids {
                let valid = match state.cursors.get(partition as usize) {
                    None if strict => {
                        return Err(Error::InvalidArgument(format!(
                            "partition {partition} does not exist in topic {:?} ({} partitions)",
                            subscription.topic, subscription.partitions
                        )));
                    }
                    None => false,
                    Some(cursor) if offset >= cursor.next() && strict => {
                        return Err(Error::InvalidArgument(format!(
                            "offset {offset} of partition {partition} was never delivered to \
                             subscription {:?}; nothing in this call was acknowledged",
                            subscription.name
                        )));
                    }
                    Some(cursor) => offset < cursor.next(),
                };
                if valid {
                    by_partition.entry(partition).or_default().push(offset);
                }
            }
            for (partition, offsets) in by_partition {
                let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                    continue;
                };
                let before = cursor.committed();
                let acked: Vec<u64> = offsets
                    .into_iter()
                    .filter(|&offset| cursor.ack(offset) == AckOutcome::Acked)
                    .collect();
                if acked.is_empty() {
                    continue;
                }
                persist_partition(
                    &self.store,
                    &mut changes,
                    &subscription.name,
                    partition,
                    cursor,
                    before,
                    &acked,
                )?;
            }
            self.store.apply(changes)?;
        }
        self.store.flush().await?;
        subscription.changed.notify_waiters();
        Ok(())
    }

    /// Gives records back for immediate redelivery.
    pub async fn nack(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        ids: &[(u32, u64)],
    ) -> Result<()> {
        let subscription = self.subscription(name)?;
        self.check_caller(&subscription, caller, generation)?;
        if let Some(&(partition, _)) = ids.iter().find(|(p, _)| *p >= subscription.partitions) {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} does not exist in topic {:?} ({} partitions)",
                subscription.topic, subscription.partitions
            )));
        }
        {
            let member_id = member_id_of(&subscription, caller);
            let mut state = subscription.lock()?;
            // Only the caller's own leases: a member that never read holds none.
            let Some(holder) = state.members.get(&member_id).map(|m| m.holder) else {
                return Ok(());
            };
            for &(partition, offset) in ids {
                if let Some(cursor) = state.cursors.get_mut(partition as usize) {
                    cursor.nack(offset, holder);
                }
            }
        }
        subscription.changed.notify_waiters();
        Ok(())
    }

    /// Kafka-style commit of one partition up to `offset`.
    pub async fn commit(
        &self,
        name: &str,
        caller: &Caller,
        generation: u64,
        partition: u32,
        offset: u64,
    ) -> Result<()> {
        let subscription = self.subscription(name)?;
        if partition >= subscription.partitions {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} does not exist in topic {:?} ({} partitions)",
                subscription.topic, subscription.partitions
            )));
        }
        let high_watermark = self
            .source
            .offset(
                &subscription.topic,
                partition,
                v1::list_offsets_request::Spec::Latest(true),
            )
            .await?;
        if offset > high_watermark {
            return Err(Error::InvalidArgument(format!(
                "cannot commit offset {offset} of partition {partition}: the partition ends at {high_watermark}"
            )));
        }
        let mut changes = Changes::new();
        {
            let member_id = member_id_of(&subscription, caller);
            let mut state = subscription.lock()?;
            check_generation(&subscription, &state, &member_id, generation)?;
            let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                return Err(Error::InvalidArgument(format!("no partition {partition}")));
            };
            let before = cursor.committed();
            cursor.commit_to(offset);
            persist_partition(
                &self.store,
                &mut changes,
                name,
                partition,
                cursor,
                before,
                &[],
            )?;
            self.store.apply(changes)?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Moves a subscription's position (all partitions or one).
    pub async fn seek(
        &self,
        name: &str,
        partition: Option<u32>,
        target: v1::seek_request::Target,
    ) -> Result<Vec<v1::PartitionLag>> {
        let subscription = self.subscription(name)?;
        let partitions: Vec<u32> = match partition {
            Some(p) if p < subscription.partitions => vec![p],
            Some(p) => {
                return Err(Error::InvalidArgument(format!(
                    "partition {p} does not exist in topic {:?} ({} partitions)",
                    subscription.topic, subscription.partitions
                )));
            }
            None => (0..subscription.partitions).collect(),
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            use v1::list_offsets_request::Spec;
            let offset = match target {
                v1::seek_request::Target::Offset(o) => {
                    let start = self
                        .source
                        .offset(&subscription.topic, p, Spec::Earliest(true))
                        .await?;
                    let end = self
                        .source
                        .offset(&subscription.topic, p, Spec::Latest(true))
                        .await?;
                    if !(start..=end).contains(&o) {
                        return Err(Error::InvalidArgument(format!(
                            "cannot seek partition {p} to offset {o}: it holds offsets {start} to {end}"
                        )));
                    }
                    o
                }
                v1::seek_request::Target::Earliest(_) => {
                    self.source
                        .offset(&subscription.topic, p, Spec::Earliest(true))
                        .await?
                }
                v1::seek_request::Target::Latest(_) => {
                    self.source
                        .offset(&subscription.topic, p, Spec::Latest(true))
                        .await?
                }
                v1::seek_request::Target::TimestampMs(ts) => {
                    self.source
                        .offset(&subscription.topic, p, Spec::TimestampMs(ts))
                        .await?
                }
            };
            offsets.push((p, offset));
        }
        let mut changes = Changes::new();
        {
            let mut state = subscription.lock()?;
            for &(p, offset) in &offsets {
                let Some(cursor) = state.cursors.get_mut(p as usize) else {
                    continue;
                };
                seek_partition(&self.store, &mut changes, name, p, cursor, offset)?;
            }
            self.store.apply(changes)?;
        }
        self.store.flush().await?;
        subscription.changed.notify_waiters();
        Ok(offsets
            .into_iter()
            .map(|(p, offset)| v1::PartitionLag {
                partition: p,
                committed_offset: offset,
                ..Default::default()
            })
            .collect())
    }

    /// A subscription's description with per-partition lag (high watermarks asked of
    /// the leaders now) and members.
    pub async fn describe(&self, subscription: &Arc<Subscription>) -> v1::SubscriptionInfo {
        let mut high_watermarks = Vec::with_capacity(subscription.partitions as usize);
        for p in 0..subscription.partitions {
            high_watermarks.push(
                self.source
                    .offset(
                        &subscription.topic,
                        p,
                        v1::list_offsets_request::Spec::Latest(true),
                    )
                    .await
                    .ok(),
            );
        }
        let Ok(state) = subscription.lock() else {
            return v1::SubscriptionInfo::default();
        };
        let partitions = state
            .cursors
            .iter()
            .enumerate()
            .map(|(p, cursor)| {
                let end = high_watermarks.get(p).copied().flatten();
                v1::PartitionLag {
                    partition: p as u32,
                    committed_offset: cursor.committed(),
                    end_offset: end,
                    lag: end.map(|e| e.saturating_sub(cursor.committed())),
                    outstanding: cursor.outstanding(),
                    stopped: cursor.stopped().map(|s| v1::PartitionStopped {
                        offset: s.offset,
                        reason: s.reason.clone(),
                    }),
                }
            })
            .collect();
        v1::SubscriptionInfo {
            name: subscription.name.clone(),
            topic: subscription.topic.clone(),
            options: Some(subscription.options.to_proto()),
            partitions,
            generation: state.generation,
            members: members(subscription, &state, &high_watermarks),
            dead_lettered: state.dead_lettered,
        }
    }

    /// Members connected to a topic's subscriptions (or one subscription).
    pub fn presence(&self, topic: &str, name: &str) -> Result<Vec<v1::MemberInfo>> {
        let mut all = Vec::new();
        for subscription in self.all() {
            if (!topic.is_empty() && subscription.topic != topic)
                || (!name.is_empty() && subscription.name != name)
            {
                continue;
            }
            let state = subscription.lock()?;
            let high_watermarks = state.high_watermarks.clone();
            all.extend(members(&subscription, &state, &high_watermarks));
        }
        all.sort_by(|a, b| (&a.subscription, &a.member_id).cmp(&(&b.subscription, &b.member_id)));
        Ok(all)
    }

    /// Evicts members not heard from within their session timeout.
    pub async fn expire_members(&self) {
        for subscription in self.all() {
            let timeout = subscription.session_timeout();
            let expired = match subscription.lock() {
                Ok(state) => state.expired(timeout, Instant::now()),
                Err(_) => continue,
            };
            for member in expired {
                tracing::info!(subscription = %subscription.name, %member, "session expired");
                if let Err(e) = self.leave(&subscription.name, &member).await {
                    tracing::warn!(subscription = %subscription.name, error = %e, "cannot remove expired member");
                }
            }
        }
    }
}

/// The member id a caller reads as: its own, or for an anonymous reader of a shared
/// subscription one derived from its address (so Read and Ack find the same member).
fn member_id_of(subscription: &Subscription, caller: &Caller) -> String {
    if subscription.options.group || !caller.member_id.is_empty() {
        caller.member_id.clone()
    } else {
        format!("pull-{}", caller.address)
    }
}

/// Member descriptions of a subscription; `high_watermarks` give the lag.
fn members(
    subscription: &Subscription,
    state: &crate::subscription::State,
    high_watermarks: &[Option<u64>],
) -> Vec<v1::MemberInfo> {
    state
        .members
        .iter()
        .map(|(id, member)| {
            let partitions: Vec<u32> = if subscription.options.group {
                state.assignment.get(id).cloned().unwrap_or_default()
            } else {
                state
                    .cursors
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.holders().any(|h| h == member.holder))
                    .map(|(p, _)| p as u32)
                    .collect()
            };
            let lag_of = |p: &u32| {
                let committed = state.cursors.get(*p as usize).map_or(0, Cursor::committed);
                high_watermarks
                    .get(*p as usize)
                    .copied()
                    .flatten()
                    .map_or(0, |hw| hw.saturating_sub(committed))
            };
            let lag = if subscription.options.group {
                partitions.iter().map(lag_of).sum()
            } else {
                (0..subscription.partitions).map(|p| lag_of(&p)).sum()
            };
            v1::MemberInfo {
                member_id: id.clone(),
                subscription: subscription.name.clone(),
                client_address: member.address.clone(),
                connected_since_ms: member.since_ms,
                partitions,
                lag,
                mode: member.mode.as_str().to_string(),
            }
        })
        .collect()
}

fn skip(partition: u32, from: u64, to: u64, reason: &str) -> v1::Skip {
    v1::Skip {
        partition,
        from_offset: from,
        to_offset: to,
        reason: reason.to_string(),
    }
}

/// A fetched record as delivered; key, value and headers stay slices of the fetch.
pub fn delivered(record: ConsumerRecord, attempt: u32) -> v1::DeliveredRecord {
    v1::DeliveredRecord {
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|(key, value)| v1::RecordHeader { key, value })
            .collect(),
        delivery_attempt: attempt,
    }
}
