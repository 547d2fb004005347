//! The consumer manager: its subscriptions (created, loaded, removed) and pull reads.
//! The other operations are by concern: `acks` (ack, nack, commit), `seek`,
//! `membership` (join, leave, sessions), `describe` (descriptions and presence),
//! `delivery` and `redelivery`, `history`; every write goes through `persist`.

use pubsub_proto::auth::NodeSecurity;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pubsub_client::ConsumerRecord;
use pubsub_proto::v1;

use crate::cursor::{Cursor, Holder};
use crate::error::{Error, Result};
use crate::journal::Scope;
use crate::lock::recover;
use crate::options::{Options, check_name, check_subscription_name};
use crate::ownership::{Grant, Ownership};
use crate::source::{LocalLog, Source};
use crate::store::{Changes, Store, StoredCursor, SubscriptionRecord};
use crate::subscription::{Deletion, Mode, Subscription, check_generation};

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
    /// Keep subscription state in the journal topic on the brokers (see `journal`),
    /// so it survives this node; off, a sled flush makes writes durable on this
    /// node only (the crate's own tests, which run without brokers).
    pub journal: bool,
    /// Bytes a journal partition takes between snapshots (see `journal`).
    pub journal_snapshot_bytes: u64,
    /// Shares subscriptions with other consumer managers, serving those of the
    /// journal partitions the cluster managers grant it (see `ownership`); `None`
    /// serves every subscription (standalone, or a lone consumer manager).
    pub ownership: Option<Arc<Ownership>>,
    /// The broker in this process (standalone), whose partitions are read without
    /// gRPC; `None` reads every partition over gRPC.
    pub local_log: Option<Arc<dyn LocalLog>>,
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
            journal: true,
            journal_snapshot_bytes: 32 << 20,
            ownership: None,
            local_log: None,
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
    /// Serializes creating and removing subscriptions (the map and their records in
    /// sled together); held over no I/O but sled's in-memory writes.
    admin: Mutex<()>,
    next_holder: AtomicU64,
    config: ManagerConfig,
    /// The journal partitions this manager serves; `None`: every one. Changed as
    /// partitions are won and let go (`regrant`).
    grant: RwLock<Option<Grant>>,
    /// Partitions being let go of: no longer served, still reported as held until
    /// what was written for them is stored (`regrant`).
    pub(crate) letting_go: Mutex<BTreeSet<u32>>,
    /// Partitions being read from the journal to be served: reported as held too.
    taking_over: Mutex<BTreeSet<u32>>,
}

impl Manager {
    /// Opens the store, rebuilds it from the journal (when the configuration keeps
    /// one; only the partitions of `grant`, when given) and loads every subscription.
    pub(crate) async fn load(config: ManagerConfig, grant: Option<Grant>) -> Result<Manager> {
        let store = Store::open(&config.data_dir)?;
        if config.journal {
            let link = config.security.link.clone();
            let source = Source::new(config.brokers.clone(), link, config.local_log.clone());
            let scope = Scope {
                epochs: grant.as_ref().map(Grant::epochs),
                ownership: config.ownership.clone(),
            };
            store
                .attach_journal(source, config.journal_snapshot_bytes, scope)
                .await?;
        }
        let covered = |name: &str| grant.as_ref().is_none_or(|g| g.covers(name));
        let subscriptions = load_subscriptions(&store, covered)?;
        let manager = Self::from_parts(store, config, subscriptions);
        *recover(manager.grant.write()) = grant;
        Ok(manager)
    }

    /// The journal partitions this manager serves; `None`: every one.
    pub(crate) fn grant(&self) -> Option<Grant> {
        recover(self.grant.read()).clone()
    }

    /// Changes the partitions served (`regrant`).
    pub(crate) fn set_grant(&self, change: impl FnOnce(&Grant) -> Grant) {
        let mut grant = recover(self.grant.write());
        if let Some(served) = grant.as_mut() {
            *served = change(served);
        }
    }

    /// The journal partitions this manager answers for to the cluster managers: those
    /// it serves, is letting go of, or is taking over.
    pub(crate) fn held(&self) -> BTreeSet<u32> {
        let mut held = self.grant().map(|g| g.partitions()).unwrap_or_default();
        held.extend(recover(self.letting_go.lock()).iter().copied());
        held.extend(recover(self.taking_over.lock()).iter().copied());
        held
    }

    /// The subscriptions served and the journal partitions they are all of, read
    /// together (`regrant` changes both under `admin`), for answers that claim a
    /// partition's every subscription: listings and keep-until-consumed floors.
    pub(crate) fn served(&self) -> (Vec<Arc<Subscription>>, Option<Grant>) {
        let _admin = recover(self.admin.lock());
        (self.all(), self.grant())
    }

    /// OK if this manager serves subscription `name`; otherwise who does.
    pub(crate) fn check_owned(&self, name: &str) -> Result<()> {
        match &*recover(self.grant.read()) {
            Some(grant) if !grant.covers(name) => {
                let ownership = self.config.ownership.as_ref();
                // Granted to this node, and still being read from the journal.
                if ownership.is_some_and(|o| o.granted_here(name)) {
                    return Err(Error::Loading);
                }
                Err(Error::NotOwner {
                    subscription: name.to_string(),
                    owner: ownership.and_then(|o| o.owner_of(name)),
                })
            }
            _ => Ok(()),
        }
    }

    /// Opens the store and loads every subscription, without a journal (tests).
    #[cfg(test)]
    pub(crate) fn open(config: ManagerConfig) -> Result<Manager> {
        let store = Store::open(&config.data_dir)?;
        let subscriptions = load_subscriptions(&store, |_| true)?;
        Ok(Self::from_parts(store, config, subscriptions))
    }

    fn from_parts(
        store: Store,
        config: ManagerConfig,
        subscriptions: HashMap<String, Arc<Subscription>>,
    ) -> Manager {
        tracing::info!(subscriptions = subscriptions.len(), "subscriptions loaded");
        Manager {
            source: Source::new(
                config.brokers.clone(),
                config.security.link.clone(),
                config.local_log.clone(),
            ),
            store,
            subscriptions: RwLock::new(subscriptions),
            admin: Mutex::new(()),
            next_holder: AtomicU64::new(1),
            config,
            grant: RwLock::new(None),
            letting_go: Mutex::default(),
            taking_over: Mutex::default(),
        }
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

    /// A lease holder id never handed out before by this manager.
    pub(crate) fn new_holder(&self) -> Holder {
        self.next_holder.fetch_add(1, Ordering::Relaxed)
    }

    /// A subscription by name.
    pub fn subscription(&self, name: &str) -> Result<Arc<Subscription>> {
        self.check_owned(name)?;
        let found = recover(self.subscriptions.read()).get(name).cloned();
        found.ok_or_else(|| {
            // Let go of since the check: served elsewhere now, not missing.
            match self.check_owned(name) {
                Err(moved) => moved,
                Ok(()) => Error::SubscriptionNotFound {
                    name: name.to_string(),
                },
            }
        })
    }

    /// Every subscription.
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        recover(self.subscriptions.read())
            .values()
            .cloned()
            .collect()
    }

    /// Creates a subscription (or answers with the identical existing one). Broker
    /// calls run before `admin` is taken; it covers only the check and the writes,
    /// and the flush waits outside it.
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        options: Option<&v1::SubscriptionOptions>,
    ) -> Result<(Arc<Subscription>, bool)> {
        check_subscription_name(name)?;
        check_name("topic name", topic)?;
        self.check_owned(name)?;
        let options = Options::resolve(topic, name, options)?;
        if let Some(existing) = self.existing(topic, name, &options).await? {
            return Ok((existing, false));
        }
        let description = self.source.describe(topic).await?;
        let (partitions, topic_created_ms) = description
            .topic
            .map_or((0, 0), |t| (t.partitions.len() as u32, t.created_ms));
        let spec = options.start.spec();
        let mut offsets = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            offsets.push(self.source.offset(topic, partition, spec).await?);
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
        let subscription = {
            let _admin = recover(self.admin.lock());
            // Let go of meanwhile (`regrant` holds `admin` for it): not created here.
            self.check_owned(name)?;
            // Created meanwhile by another call: answer as for an existing one.
            if let Ok(existing) = self.subscription(name) {
                return same_or_exists(existing, topic, &record.options).map(|s| (s, false));
            }
            self.create(record, &offsets)?
        };
        self.store.flush().await?;
        tracing::info!(subscription = %name, topic, partitions, "subscription created");
        Ok((subscription, true))
    }

    /// The subscription `name` if it exists for `topic` with these options (an error
    /// if it differs); `None` if there is none, or the one there belonged to an older
    /// incarnation of the topic and was removed (the name then starts afresh).
    async fn existing(
        &self,
        topic: &str,
        name: &str,
        options: &Options,
    ) -> Result<Option<Arc<Subscription>>> {
        let Ok(existing) = self.subscription(name) else {
            return Ok(None);
        };
        if existing.topic == topic {
            let described = self.source.describe(topic).await?;
            let seen = described.topic.map_or(0, |t| t.created_ms);
            let _admin = recover(self.admin.lock());
            if self.remove_if_outlived(&existing, seen)? {
                return Ok(None);
            }
        }
        same_or_exists(existing, topic, options).map(Some)
    }

    /// Stores a new subscription at `offsets` (one per partition) and serves it; not
    /// yet flushed. The caller holds `admin`.
    fn create(&self, record: SubscriptionRecord, offsets: &[u64]) -> Result<Arc<Subscription>> {
        let name = record.name.as_str();
        // Whatever a deleted subscription of this name left behind must not count.
        self.store.delete_subscription(name)?;
        let mut changes = Changes::new();
        let mut cursors = Vec::with_capacity(offsets.len());
        for (partition, &offset) in offsets.iter().enumerate() {
            let stored = StoredCursor {
                committed: offset,
                next: offset,
            };
            changes.cursor(name, partition as u32, stored);
            cursors.push(Cursor::at(offset));
        }
        self.store.apply(changes)?;
        self.store.put_subscription(&record)?;
        let subscription = Arc::new(Subscription::new(&record, cursors));
        recover(self.subscriptions.write()).insert(name.to_string(), subscription.clone());
        Ok(subscription)
    }

    /// Deletes a subscription of `topic`, its offsets and delivery counts.
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<()> {
        {
            let _admin = recover(self.admin.lock());
            let subscription = self.subscription(name)?;
            if !topic.is_empty() && subscription.topic != topic {
                return Err(Error::WrongTopic {
                    name: name.to_string(),
                    topic: subscription.topic.clone(),
                    asked: topic.to_string(),
                });
            }
            self.remove(&subscription, &Deletion::Unsubscribed)?;
        }
        self.store.flush().await?;
        tracing::info!(subscription = %name, "subscription deleted");
        Ok(())
    }

    /// As [`Manager::remove`], taking `admin` for it.
    pub(crate) fn remove_now(
        &self,
        subscription: &Arc<Subscription>,
        why: &Deletion,
    ) -> Result<()> {
        let _admin = recover(self.admin.lock());
        self.remove(subscription, why)
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
        state.remove_all();
        self.store.delete_subscription(&subscription.name)
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
        let delivery = self
            .deliver(&subscription, &member_id, holder, max, wait)
            .await?;
        subscription.counters.delivered(&delivery.records);
        Ok(delivery)
    }
}

/// `existing` if it is the subscription asked for (same topic and options), else
/// the error saying the name is taken. The start position is not compared: it only
/// places a new subscription, so a reader joining an existing one (a Kafka group
/// joined with `pubsub subscribe`, say) need not know where it started.
fn same_or_exists(
    existing: Arc<Subscription>,
    topic: &str,
    options: &Options,
) -> Result<Arc<Subscription>> {
    let asked = Options {
        start: existing.options.start,
        ..options.clone()
    };
    if existing.topic == topic && existing.options == asked {
        return Ok(existing);
    }
    Err(Error::SubscriptionExists {
        name: existing.name.clone(),
        topic: existing.topic.clone(),
    })
}

/// The member id a caller reads as: its own, or for an anonymous reader of a shared
/// subscription one derived from its address (so Read and Ack find the same member).
pub(crate) fn member_id_of(subscription: &Subscription, caller: &Caller) -> String {
    if subscription.options.group || !caller.member_id.is_empty() {
        caller.member_id.clone()
    } else {
        format!("pull-{}", caller.address)
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

mod regrant;

/// The stored subscriptions whose names `wanted` accepts, with their cursors.
pub(crate) fn load_subscriptions(
    store: &Store,
    wanted: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Arc<Subscription>>> {
    let mut subscriptions = HashMap::new();
    for record in store.subscriptions()? {
        if !wanted(&record.name) {
            continue;
        }
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
        tracing::debug!(subscription = %record.name, topic = %record.topic, "subscription loaded");
        subscriptions.insert(
            record.name.clone(),
            Arc::new(Subscription::new(&record, cursors)),
        );
    }
    Ok(subscriptions)
}
