//! A change of this node's grant while it serves: the subscriptions of journal
//! partitions lost are let go of, those of partitions won are read from the journal
//! and loaded; every other subscription goes on serving, its streams untouched.
//!
//! Letting go is ordered so that nothing acknowledged here is missed by the next
//! owner: the partitions leave the grant (new calls are refused, naming the owner),
//! their subscriptions are marked moved under their own locks (an operation that
//! locks one after writes nothing; its streams end with UNAVAILABLE and clients
//! follow the owner), what was written before is made durable, and only then do the
//! heartbeats stop reporting the partitions, so the cluster managers hand them over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Manager, load_subscriptions};
use crate::error::Result;
use crate::lock::recover;
use crate::ownership::{Grant, shard_of};
use crate::subscription::Subscription;

impl Manager {
    /// Serves `next` from now on, letting go of and taking over only the partitions
    /// that changed. An error leaves the manager to be reloaded whole.
    pub(crate) async fn regrant(&self, next: &Grant) -> Result<()> {
        let current = self.grant().unwrap_or_default();
        let (won, lost) = current.changes_to(next);
        if !lost.is_empty() {
            self.let_go(&lost).await?;
            tracing::info!(partitions = ?lost, "journal partitions let go of");
        }
        if !won.is_empty() {
            self.take_over(&won).await?;
            tracing::info!(partitions = ?won.keys().collect::<Vec<_>>(), "journal partitions taken over");
        }
        Ok(())
    }

    /// Stops serving the subscriptions of partitions `lost` (see the module's
    /// comment for the order).
    async fn let_go(&self, lost: &[u32]) -> Result<()> {
        recover(self.letting_go.lock()).extend(lost.iter().copied());
        let moved: Vec<Arc<Subscription>> = {
            let _admin = recover(self.admin.lock());
            self.set_grant(|grant| grant.without(lost));
            let mut map = recover(self.subscriptions.write());
            let names: Vec<String> = map
                .keys()
                .filter(|name| lost.contains(&shard_of(name)))
                .cloned()
                .collect();
            names.iter().filter_map(|name| map.remove(name)).collect()
        };
        for subscription in &moved {
            mark_moved(subscription);
        }
        // Whatever they wrote before the mark is durable before the partitions go.
        self.store.flush().await?;
        if let Some(journal) = self.store.journal() {
            journal.let_go(lost).await;
        }
        let mut letting_go = recover(self.letting_go.lock());
        lost.iter().for_each(|shard| {
            letting_go.remove(shard);
        });
        Ok(())
    }

    /// Starts serving the subscriptions of partitions `won`: read from the journal
    /// (under the new epochs) into the store, then loaded.
    async fn take_over(&self, won: &BTreeMap<u32, u64>) -> Result<()> {
        let shards: BTreeSet<u32> = won.keys().copied().collect();
        // Reported as held meanwhile: the cluster managers must not count a
        // partition this node is reading as already released.
        recover(self.taking_over.lock()).extend(shards.iter().copied());
        let taken = self.take_over_journal(won, &shards).await;
        recover(self.taking_over.lock()).clear();
        taken
    }

    async fn take_over_journal(
        &self,
        won: &BTreeMap<u32, u64>,
        shards: &BTreeSet<u32>,
    ) -> Result<()> {
        if let Some(journal) = self.store.journal() {
            journal.take_over(&self.store, won).await?;
        }
        let loaded = load_subscriptions(&self.store, |name| shards.contains(&shard_of(name)))?;
        let _admin = recover(self.admin.lock());
        recover(self.subscriptions.write()).extend(loaded);
        self.set_grant(|grant| grant.with(won));
        Ok(())
    }
}

/// Marks a subscription served elsewhere from now on: its members are removed (their
/// streams end) and every later operation on it is refused before writing.
fn mark_moved(subscription: &Subscription) {
    let mut state = subscription.lock_any();
    state.moved = true;
    state.remove_all();
    drop(state);
    subscription.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::manager::ManagerConfig;
    use crate::ownership::Ownership;
    use crate::store::SubscriptionRecord;
    use crate::subscription::Mode;

    /// Two subscription names whose journal partitions differ.
    fn names_apart() -> (String, String) {
        let first = "orders-0".to_string();
        let other = (1..)
            .map(|i| format!("orders-{i}"))
            .find(|name| shard_of(name) != shard_of(&first))
            .unwrap_or_default();
        (first, other)
    }

    fn every_partition(epoch: u64) -> Grant {
        Grant::default().with(&(0..16).map(|shard| (shard, epoch)).collect())
    }

    /// A manager sharing subscriptions, granted nothing yet, with subscriptions
    /// `names` stored (no broker, no journal: the store is what it reads).
    async fn sharing_manager(dir: &std::path::Path, names: &[&str]) -> Manager {
        let mut config = ManagerConfig::new(dir.to_path_buf(), "127.0.0.1:1".into());
        config.journal = false;
        let link = Default::default();
        let ownership = Ownership::new("127.0.0.1:2".into(), Vec::new(), link);
        config.ownership = Some(Arc::new(ownership));
        let manager = Manager::open(config).unwrap();
        *recover(manager.grant.write()) = Some(Grant::default());
        for name in names {
            let mut record = SubscriptionRecord::for_test(1, 1);
            record.name = name.to_string();
            manager.store().put_subscription(&record).unwrap();
        }
        manager.store().flush().await.unwrap();
        manager
    }

    #[tokio::test]
    async fn only_the_partitions_that_changed_are_let_go_of_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let (moving, staying) = names_apart();
        let manager = sharing_manager(dir.path(), &[&moving, &staying]).await;
        assert!(matches!(
            manager.subscription(&moving),
            Err(Error::NotOwner { .. })
        ));
        manager.regrant(&every_partition(1)).await.unwrap();
        let kept = manager.subscription(&staying).unwrap();
        let moved = manager.subscription(&moving).unwrap();
        let mut evicted = {
            let mut state = moved.lock().unwrap();
            state.touch("m", "10.0.0.9:1", Mode::Stream, || manager.new_holder());
            state.members["m"].evicted.subscribe()
        };

        let shard = shard_of(&moving);
        manager
            .regrant(&every_partition(1).without(&[shard]))
            .await
            .unwrap();
        assert!(!manager.held().contains(&shard), "still reported as held");
        assert!(matches!(
            manager.subscription(&moving),
            Err(Error::NotOwner { .. })
        ));
        // An operation that held it before the move writes nothing after; its
        // members were removed, so their streams end.
        assert!(matches!(moved.lock(), Err(Error::NotOwner { .. })));
        assert!(*evicted.borrow_and_update());
        // The rest serves on, the same subscription as before.
        let still = manager.subscription(&staying).unwrap();
        assert!(Arc::ptr_eq(&still, &kept) && kept.lock().is_ok());

        // Granted again under a new epoch: read again from the store.
        let mut again = every_partition(1);
        again = again.with(&[(shard, 2)].into_iter().collect());
        manager.regrant(&again).await.unwrap();
        let back = manager.subscription(&moving).unwrap();
        assert!(!Arc::ptr_eq(&back, &moved) && back.lock().is_ok());
        assert_eq!(manager.grant(), Some(again));
        assert!(Arc::ptr_eq(&manager.subscription(&staying).unwrap(), &kept));
    }
}
