//! Keeps the consumer manager serving across failures of its database. sled 0.34
//! keeps its first error for good, and memory may then be ahead of what is durable,
//! so a failed [`Manager`] is not repaired: it is retired, every handle on its
//! database is dropped (sled locks the directory while it is open), and a new one is
//! loaded from disk as at startup, with a capped backoff while reopening fails. The
//! cluster manager does the same with its Raft storage.
//!
//! Requests, streams and background work borrow the current manager for one
//! operation through [`Supervisor::serve`], which ends the operation with
//! [`Error::Reloading`] (UNAVAILABLE) as soon as the store fails: callers get a prompt
//! answer, never a hang, and the retired manager is let go of quickly. Nothing is
//! acknowledged that was not flushed, since every flush after the failure fails.
//! The slot's lock guards only the swap of an `Arc`, never I/O.
//!
//! When consumer managers share subscriptions (`ownership`), a change of this node's
//! grant of journal partitions is applied to the serving manager (`Manager::regrant`):
//! what it lost is let go of, what it won is read from the journal as its previous
//! owner left it, and every other subscription goes on serving. Should that fail, the
//! manager is loaded again whole, for the new grant.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::lock::recover;
use crate::manager::{Manager, ManagerConfig};
use crate::ownership::Grant;
use crate::store::Store;

/// First wait before reopening the database: a full disk rarely frees itself at once.
const RELOAD_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between reopens, so service resumes within seconds of space coming back.
const RELOAD_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First wait before loading again at startup: the brokers holding the journal
/// usually start alongside.
const LOAD_RETRY: Duration = Duration::from_millis(100);
/// A manager that served this long before failing starts the backoff over: a new
/// failure rather than the same disk still full.
const SERVED_WELL: Duration = Duration::from_secs(30);
/// Longest the supervisor waits for operations to let go of a failed manager before
/// reopening anyway (a reopen fails, and is retried, while the old database is open).
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// How often the supervisor looks whether the failed manager was let go of.
const RELEASE_POLL: Duration = Duration::from_millis(20);

/// Owns the serving [`Manager`] and replaces it, reloaded from disk, when its
/// database fails. Shared by the gRPC service, the streams and the background work.
pub struct Supervisor {
    config: ManagerConfig,
    /// The manager serving; `None` while its replacement is being loaded.
    slot: RwLock<Option<Arc<Manager>>>,
    /// Whether a manager is installed, for the health service: a load balancer or
    /// Kubernetes then stops sending work while the database is reloaded.
    serving: tokio::sync::watch::Sender<bool>,
    /// Whether the last manager retired had failed (requests meanwhile are told the
    /// store is reloading) or was retired for a new grant (they are told it loads).
    retired_failed: AtomicBool,
    /// The partitions of a manager being retired, until it is let go of: still
    /// reported as held, so the cluster managers hand none of it over while its last
    /// writes may still land.
    retiring: RwLock<BTreeSet<u32>>,
    /// The partitions of a manager being loaded, reported as held meanwhile.
    loading: RwLock<BTreeSet<u32>>,
}

/// Waits between attempts to reopen the database: [`RELOAD_BACKOFF_MIN`] doubling up
/// to [`RELOAD_BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: RELOAD_BACKOFF_MIN,
        }
    }
}

impl Backoff {
    /// A backoff whose first wait is `first` (then doubling as usual).
    fn starting(first: Duration) -> Self {
        Backoff { next: first }
    }

    /// The wait before the next attempt; the one after is twice as long, capped.
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(RELOAD_BACKOFF_MAX);
        wait
    }

    /// Starts over from the shortest wait.
    fn reset(&mut self) {
        *self = Backoff::default();
    }
}

impl Supervisor {
    /// Checks that the database opens (an error here, at startup, is reported at
    /// once rather than retried, so a wrong directory is seen); [`Supervisor::supervise`]
    /// then loads every subscription, rebuilding them from the journal on the brokers,
    /// which may not be serving yet. Nothing is served until then ([`Error::Loading`]).
    pub fn open(config: ManagerConfig) -> Result<Supervisor> {
        drop(Store::open(&config.data_dir)?);
        Ok(Supervisor {
            config,
            slot: RwLock::new(None),
            serving: tokio::sync::watch::Sender::new(false),
            retired_failed: AtomicBool::new(false),
            retiring: RwLock::default(),
            loading: RwLock::default(),
        })
    }

    /// The consumer manager's settings (the same for every reload).
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The manager serving now; [`Error::Reloading`] once its database has failed,
    /// until a reloaded one takes its place.
    pub fn current(&self) -> Result<Arc<Manager>> {
        match self.installed() {
            Some(manager) if !manager.store().has_failed() => Ok(manager),
            Some(_) => Err(Error::Reloading),
            None if self.retired_failed.load(Ordering::Acquire) => Err(Error::Reloading),
            None => Err(Error::Loading),
        }
    }

    fn installed(&self) -> Option<Arc<Manager>> {
        // The slot holds only an `Arc`: a panic elsewhere cannot leave it half-set.
        recover(self.slot.read()).clone()
    }

    fn install(&self, manager: Option<Arc<Manager>>) {
        let serving = manager.is_some();
        *recover(self.slot.write()) = manager;
        self.serving.send_replace(serving);
    }

    /// Watches whether a manager serves (false while the database is reloaded).
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Runs one operation on the current manager. It ends with [`Error::Reloading`]
    /// as soon as the manager's store fails, dropping its handle on the manager; an
    /// operation that finished first keeps its answer (whatever it acknowledged was
    /// flushed before the failure).
    pub async fn serve<T, F, Fut>(&self, operation: F) -> Result<T>
    where
        F: FnOnce(Arc<Manager>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let manager = self.current()?;
        let failed = manager.store().failed();
        tokio::select! {
            biased;
            result = operation(manager) => result,
            () = failed => Err(Error::Reloading),
        }
    }

    /// Makes the current manager's writes durable (at shutdown). Nothing is pending
    /// while reloading: what a failed manager held in memory was never acknowledged.
    pub async fn flush(&self) -> Result<()> {
        match self.current() {
            Ok(manager) => manager.store().flush().await,
            Err(_) => Ok(()),
        }
    }

    /// Loads the manager, then replaces it, reloaded, each time its database fails
    /// or its grant changes; runs until dropped (`background` runs it).
    pub async fn supervise(&self) {
        let mut backoff = Backoff::starting(LOAD_RETRY);
        if let Some(ownership) = &self.config.ownership {
            ownership.heard().await;
        }
        let mut since = Instant::now();
        loop {
            if let Some(manager) = self.installed() {
                let failed = tokio::select! {
                    () = manager.store().failed() => true,
                    () = self.regranted(manager.grant()) => false,
                };
                if !failed && self.regrant(&manager).await {
                    continue;
                }
                // The store may have failed while the change was applied.
                let failed = failed || manager.store().has_failed();
                if since.elapsed() >= SERVED_WELL {
                    backoff.reset();
                }
                self.retire(manager, failed).await;
                if failed {
                    tokio::time::sleep(backoff.next()).await;
                }
            }
            self.reload(&mut backoff).await;
            since = Instant::now();
        }
    }

    /// The grant to load a manager for now; `None` without ownership (every
    /// partition).
    fn wanted(&self) -> Option<Grant> {
        let ownership = self.config.ownership.as_ref()?;
        Some(ownership.grant().borrow().clone())
    }

    /// Applies the grant wanted now to the serving `manager`; false if it failed
    /// (the manager is then loaded again whole).
    async fn regrant(&self, manager: &Manager) -> bool {
        let Some(next) = self.wanted() else {
            return true;
        };
        tokio::select! {
            biased;
            () = manager.store().failed() => false,
            regranted = manager.regrant(&next) => match regranted {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply this node's new journal partitions; reloading its subscriptions");
                    false
                }
            },
        }
    }

    /// Resolves once this node's grant differs from `loaded` (never without
    /// ownership).
    async fn regranted(&self, loaded: Option<Grant>) {
        let (Some(ownership), Some(loaded)) = (&self.config.ownership, loaded) else {
            return std::future::pending().await;
        };
        let mut grant = ownership.grant();
        let _ = grant.wait_for(|grant| *grant != loaded).await;
    }

    /// The journal partitions the serving manager was loaded for (reported in
    /// heartbeats); none while none serves.
    pub(crate) fn held(&self) -> BTreeSet<u32> {
        let mut held = self.installed().map(|m| m.held()).unwrap_or_default();
        held.extend(recover(self.retiring.read()).iter().copied());
        held.extend(recover(self.loading.read()).iter().copied());
        held
    }

    /// Resolves once a manager serves (startup's load is done).
    pub async fn ready(&self) {
        let mut serving = self.serving.subscribe();
        let _ = serving.wait_for(|&serving| serving).await;
    }

    /// Takes a manager out of service (its database `failed`, or its grant changed)
    /// and closes its database once every operation has let go of it (or
    /// [`RELEASE_WAIT`] has passed).
    async fn retire(&self, manager: Arc<Manager>, failed: bool) {
        *recover(self.retiring.write()) = manager.held();
        self.retired_failed.store(failed, Ordering::Release);
        self.install(None);
        if failed {
            tracing::warn!("consumer manager database failed; reloading it from disk");
        } else {
            tracing::info!("this node's journal partitions changed; reloading its subscriptions");
            // Every operation on it ends now (streams included), as on a failure, and
            // nothing it writes from here on is acknowledged: another node may own
            // some of its subscriptions next.
            manager.store().stop();
        }
        manager.store().wake_flushes().await;
        let deadline = Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&manager) > 1 && Instant::now() < deadline {
            tokio::time::sleep(RELEASE_POLL).await;
        }
        let holders = Arc::strong_count(&manager) - 1;
        if holders > 0 {
            tracing::warn!(
                holders,
                "the failed consumer manager is still in use; reopening anyway"
            );
        }
        // Closing a sled database joins its flusher thread: blocking work.
        let _ = tokio::task::spawn_blocking(move || drop(manager)).await;
        recover(self.retiring.write()).clear();
    }

    /// Opens the database and loads every subscription (rebuilt from the journal),
    /// retrying with [`Backoff`] until it works.
    async fn reload(&self, backoff: &mut Backoff) {
        loop {
            let wanted = self.wanted();
            // Reported as held while being read, as `Manager::held` does for a
            // partition taken over.
            *recover(self.loading.write()) =
                wanted.as_ref().map(Grant::partitions).unwrap_or_default();
            let loaded = Manager::load(self.config.clone(), wanted).await;
            recover(self.loading.write()).clear();
            match loaded {
                Ok(manager) => {
                    self.install(Some(Arc::new(manager)));
                    tracing::info!("consumer manager loaded");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the consumer manager; retrying");
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Changes, StoredCursor, SubscriptionRecord};

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..6).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        backoff.reset();
        assert_eq!(backoff.next(), RELOAD_BACKOFF_MIN);
    }

    /// Stores subscription `s` of topic `t` (2 partitions) with partition 1 committed
    /// up to `committed`, as the brokers-free part of a subscribe would.
    async fn store_subscription(manager: &Manager, committed: u64) {
        let record = SubscriptionRecord::for_test(2, 0);
        let mut changes = Changes::new();
        let cursor = StoredCursor {
            committed,
            next: committed,
        };
        changes.cursor("s", 1, cursor);
        manager.store().apply(changes).unwrap();
        manager.store().put_subscription(&record).unwrap();
        manager.store().flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_database_is_reloaded_from_disk_and_operations_end_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::new(dir.path().to_path_buf(), "127.0.0.1:1".into());
        config.journal = false;
        let supervisor = Arc::new(Supervisor::open(config).unwrap());
        assert!(matches!(supervisor.current(), Err(Error::Loading)));
        let supervising = tokio::spawn({
            let supervisor = supervisor.clone();
            async move { supervisor.supervise().await }
        });
        supervisor.ready().await;
        let first = supervisor.current().unwrap();
        store_subscription(&first, 7).await;
        assert!(first.subscription("s").is_err(), "stored behind its back");
        drop(first);
        // An operation in flight when the store fails ends at once, letting go of it.
        let waiting = tokio::spawn({
            let supervisor = supervisor.clone();
            async move {
                supervisor
                    .serve(|_manager| std::future::pending::<Result<()>>())
                    .await
            }
        });
        tokio::task::yield_now().await;
        let mut serving = supervisor.serving();
        assert!(*serving.borrow_and_update());
        supervisor.current().unwrap().store().fail(&"test");
        assert!(matches!(waiting.await.unwrap(), Err(Error::Reloading)));
        assert!(matches!(supervisor.current(), Err(Error::Reloading)));
        assert!(matches!(
            supervisor.serve(|_| async { Ok(()) }).await,
            Err(Error::Reloading)
        ));
        serving.changed().await.unwrap();
        assert!(!*serving.borrow_and_update(), "not serving while reloading");
        // The reopen succeeds only once the old database is closed (sled's lock), and
        // loads what is on disk.
        let deadline = Instant::now() + Duration::from_secs(10);
        let reloaded = loop {
            if let Ok(manager) = supervisor.current() {
                break manager;
            }
            assert!(Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            *supervisor.serving().borrow(),
            "serving again once reloaded"
        );
        let subscription = reloaded.subscription("s").unwrap();
        let state = subscription.lock().unwrap();
        assert_eq!(state.cursors[1].committed(), 7);
        supervising.abort();
    }
}
