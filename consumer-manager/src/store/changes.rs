//! [`Changes`]: one step's writes to a subscription's sled trees.

use std::collections::BTreeMap;
use std::ops::Range;

use super::{StoredCursor, offset_key, partition_key};

/// Changes to one subscription's partitions, written together: per tree, each key's
/// last value (`None`: removed).
///
/// Not a `sled::Batch`: sled 0.34 rolls its log buffer before and after every
/// `apply_batch` (a write and a `sync_file_range` of its own, on its I/O threads), so
/// one batch per tree per step cost several disk writes on top of the flush that
/// makes the step durable. Keys are written one by one instead, in an order that
/// keeps a crash midway harmless (see [`Store::apply`]).
#[derive(Default)]
pub struct Changes {
    pub(super) cursors: Writes,
    pub(super) acks: Writes,
    pub(super) deliveries: Writes,
    pub(super) empty: bool,
}

/// One tree's writes: each key's last value, `None` for a removal.
pub(super) type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

impl Changes {
    /// No changes yet.
    pub fn new() -> Self {
        Changes {
            empty: true,
            ..Changes::default()
        }
    }

    /// Sets a partition's cursor.
    pub fn cursor(&mut self, name: &str, partition: u32, cursor: StoredCursor) {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&cursor.committed.to_be_bytes());
        value[8..].copy_from_slice(&cursor.next.to_be_bytes());
        self.cursors
            .insert(partition_key(name, partition), Some(value.to_vec()));
        self.empty = false;
    }

    /// Records a range of acknowledgements above the committed offset (it replaces
    /// any stored range starting at the same offset).
    pub fn ack_range(&mut self, name: &str, partition: u32, range: Range<u64>) {
        let key = offset_key(name, partition, range.start);
        self.acks
            .insert(key, Some(range.end.to_be_bytes().to_vec()));
        self.empty = false;
    }

    /// Forgets an acknowledgement (the committed offset passed it).
    pub fn forget_ack(&mut self, name: &str, partition: u32, offset: u64) {
        self.acks.insert(offset_key(name, partition, offset), None);
        self.deliveries
            .insert(offset_key(name, partition, offset), None);
        self.empty = false;
    }

    /// Stores how often an offset has been delivered.
    pub fn deliveries(&mut self, name: &str, partition: u32, offset: u64, count: u32) {
        let count = count.to_be_bytes().to_vec();
        self.deliveries
            .insert(offset_key(name, partition, offset), Some(count));
        self.empty = false;
    }

    /// True if nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.empty
    }
}
