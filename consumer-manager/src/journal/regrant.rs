//! Journal partitions won and let go of while the node serves (`Manager::regrant`):
//! only those are read again or dropped; the others go on being written.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{Journal, TOPIC};
use crate::error::{Error, Result};
use crate::lock::recover;
use crate::store::Store;

impl Journal {
    /// Starts writing partitions `won`, each under the epoch of its grant: each is
    /// fenced under its new epoch, its subscriptions' keys (what an earlier turn of
    /// this node left in the trees) are removed, and it is read again from the
    /// journal, as at load.
    pub(crate) async fn take_over(&self, store: &Store, won: &BTreeMap<u32, u64>) -> Result<()> {
        let shards: Vec<u32> = won.keys().copied().filter(|&s| s < self.shards).collect();
        {
            let mut epochs = recover(self.epochs.write());
            for &shard in &shards {
                epochs[shard as usize] = won.get(&shard).copied();
            }
        }
        {
            let mut queued = recover(self.queued.lock());
            for &shard in &shards {
                queued[shard as usize] = self.fresh(shard);
            }
        }
        store.mark_restoring(true)?;
        self.forget(&shards)?;
        if self.exists_now().await? {
            self.fence(&shards).await?;
            self.read_again(&shards).await?;
        }
        store.mark_restoring(false)?;
        Ok(())
    }

    /// Stops writing partitions `lost`, once no snapshot runs. The caller made sure
    /// nothing writes for their subscriptions any more, and that what was written is
    /// stored.
    pub(crate) async fn let_go(&self, lost: &[u32]) {
        let _gate = self.snapshots.write().await;
        {
            let mut epochs = recover(self.epochs.write());
            for &shard in lost {
                if let Some(epoch) = epochs.get_mut(shard as usize) {
                    *epoch = None;
                }
            }
        }
        let mut since = recover(self.since_snapshot.lock());
        for &shard in lost {
            if let Some(bytes) = since.get_mut(shard as usize) {
                *bytes = 0;
            }
        }
    }

    /// Whether the journal topic exists (another node may have created it since this
    /// one loaded); refuses one whose partitions are not the ones writes are placed by.
    async fn exists_now(&self) -> Result<bool> {
        if self.exists.load(Ordering::Acquire) {
            return Ok(true);
        }
        match self.source.describe(TOPIC).await {
            Ok(described) => self.found(&described).map(|()| true),
            Err(Error::TopicNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes every key of the subscriptions of partitions `shards` from the trees.
    fn forget(&self, shards: &[u32]) -> Result<()> {
        for tree in &self.trees {
            for item in tree.iter() {
                let (key, _) = item.map_err(Error::Rebuild)?;
                if shards.contains(&(self.shard_of(&key) as u32)) {
                    tree.remove(key).map_err(Error::Rebuild)?;
                }
            }
        }
        Ok(())
    }
}
