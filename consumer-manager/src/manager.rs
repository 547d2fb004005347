//! The consumer manager's operations: subscriptions, group membership, pull reads,
//! acknowledgements, commits, seeking, descriptions and presence. Delivery itself is
//! in `delivery` and `redelivery`.

use pubsub_proto::auth::NodeSecurity;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pubsub_client::ConsumerRecord;
use pubsub_proto::v1;

use crate::cursor::{AckOutcome, Cursor, Holder};
use crate::error::{Error, Result};
use crate::lock::recover;
use crate::options::{Options, check_name, check_subscription_name};
use crate::source::Source;
use crate::store::{Changes, Store, SubscriptionRecord};
use crate::subscription::{
    Deletion, Mode, Subscription, check_generation, persist_partition, seek_partition,
};

/// Most records one Read or one stream delivery returns.
pub(crate) const MAX_READ_RECORDS: usize = 10_000;
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
    /// Access control: off, or on with the cluster secret this node presents to the
    /// brokers and cluster managers.
    pub security: NodeSecurity,
    /// Cluster-manager addresses the access rules are watched at (needed with access
    /// control on).
    pub cluster_managers: Vec<String>,
}

impl ManagerConfig {
    /// Defaults for a manager storing under `data_dir` and reading from `brokers`.
    pub fn new(data_dir: PathBuf, brokers: String) -> Self {
        ManagerConfig {
            data_dir,
            brokers,
            cleanup_interval: Duration::from_secs(10),
            security: NodeSecurity::default(),
            cluster_managers: Vec::new(),
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
            source: Source::new(config.brokers.clone(), config.security.link.clone()),
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
        let subscriptions = recover(self.subscriptions.read());
        subscriptions
            .get(name)
            .cloned()
            .ok_or_else(|| Error::SubscriptionNotFound {
                name: name.to_string(),
            })
    }

    /// Every subscription.
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        recover(self.subscriptions.read())
            .values()
            .cloned()
            .collect()
    }

    /// Creates a subscription (or answers with the identical existing one).
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        options: Option<&v1::SubscriptionOptions>,
    ) -> Result<(Arc<Subscription>, bool)> {
        check_subscription_name(name)?;
        check_name("topic name", topic)?;
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
                return Err(Error::SubscriptionExists {
                    name: name.to_string(),
                    topic: existing.topic.clone(),
                });
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
        recover(self.subscriptions.write()).insert(name.to_string(), subscription.clone());
        tracing::info!(subscription = %name, topic, partitions, "subscription created");
        Ok((subscription, true))
    }

    /// Deletes a subscription of `topic`, its offsets and delivery counts.
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let subscription = self.subscription(name)?;
        if !topic.is_empty() && subscription.topic != topic {
            return Err(Error::WrongTopic {
                name: name.to_string(),
                topic: subscription.topic.clone(),
                asked: topic.to_string(),
            });
        }
        self.remove(&subscription, &Deletion::Unsubscribed)?;
        self.store.flush().await?;
        tracing::info!(subscription = %name, "subscription deleted");
        Ok(())
    }

    /// Deletes a subscription and everything stored for it (not yet flushed): members
    /// are removed, so their streams end. The caller holds `admin`. Does nothing if
    /// the name now stands for another subscription.
    pub(crate) fn remove(&self, subscription: &Arc<Subscription>, why: &Deletion) -> Result<()> {
        {
            let mut map = recover(self.subscriptions.write());
            match map.get(&subscription.name) {
                Some(current) if Arc::ptr_eq(current, subscription) => {
                    map.remove(&subscription.name);
                }
                _ => return Ok(()),
            }
        }
        let mut state = subscription.lock_any();
        state.deleted = Some(why.clone());
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
        let mut count = 0;
        {
            let mut state = subscription.lock()?;
            let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for &(partition, offset) in ids {
                let valid = match state.cursors.get(partition as usize) {
                    None if strict => {
                        return Err(no_such_partition(subscription, partition));
                    }
                    None => false,
                    Some(cursor) if offset >= cursor.next() && strict => {
                        return Err(Error::NeverDelivered {
                            subscription: subscription.name.clone(),
                            partition,
                            offset,
                        });
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
                count += acked.len();
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
        subscription.counters.acked(count);
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
            return Err(no_such_partition(&subscription, partition));
        }
        {
            let member_id = member_id_of(&subscription, caller);
            let mut state = subscription.lock()?;
            // Only the caller's own leases, all or nothing: a nack that changes nothing
            // must say so, or the caller believes the record is on its way again.
            let holder = state.members.get(&member_id).map(|m| m.holder);
            let not_held = ids.iter().find(|&&(partition, offset)| {
                let lease = state
                    .cursors
                    .get(partition as usize)
                    .and_then(|c| c.holder_of(offset));
                holder.is_none() || lease != holder
            });
            if let Some((partition, offset)) = not_held {
                return Err(Error::NotHeld {
                    subscription: name.to_string(),
                    partition: *partition,
                    offset: *offset,
                });
            }
            let Some(holder) = holder else {
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
            return Err(no_such_partition(&subscription, partition));
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
            return Err(Error::CommitPastEnd {
                partition,
                offset,
                end: high_watermark,
            });
        }
        let mut changes = Changes::new();
        {
            let member_id = member_id_of(&subscription, caller);
            let mut state = subscription.lock()?;
            check_generation(&subscription, &state, &member_id, generation)?;
            let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                return Err(no_such_partition(&subscription, partition));
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
                return Err(no_such_partition(&subscription, p));
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
                        return Err(Error::SeekOutOfRange {
                            partition: p,
                            offset: o,
                            start,
                            end,
                        });
                    }
                    o
                }
                v1::seek_request::Target::Earliest(false)
                | v1::seek_request::Target::Latest(false) => {
                    return Err(Error::InvalidOption {
                        option: "seek earliest or latest",
                        got: "false".into(),
                        rule: "must be true when set",
                    });
                }
                v1::seek_request::Target::Earliest(true) => {
                    self.source
                        .offset(&subscription.topic, p, Spec::Earliest(true))
                        .await?
                }
                v1::seek_request::Target::Latest(true) => {
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

/// The error for a partition index past the subscription's topic's partitions.
fn no_such_partition(subscription: &Subscription, partition: u32) -> Error {
    Error::NoSuchPartition {
        topic: subscription.topic.clone(),
        partition,
        partitions: subscription.partitions,
    }
}

/// A fetched record as delivered; key, value and headers stay slices of the fetch.
pub(crate) fn delivered(record: ConsumerRecord, attempt: u32) -> v1::DeliveredRecord {
    v1::DeliveredRecord {
        partition: record.partition.0,
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
