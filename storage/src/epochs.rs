//! The leader-epoch checkpoint: where each leader epoch starts in the log.
//!
//! After a leader change a follower asks the new leader where its own last epoch ends
//! and truncates anything it wrote past that (Kafka's KIP-101), so replicas never keep
//! a divergent suffix. Entries are `(epoch, start offset)`, epochs strictly increasing.
//!
//! File `leader-epoch-checkpoint`, replaced atomically (write, fsync, rename):
//!
//! ```text
//! entries   count * (epoch i32, start_offset u64), big-endian
//! count     u32
//! crc       u32   CRC-32 (crc32fast) of the entries and the count
//! ```
//! A missing or damaged file is rebuilt from the leader epochs the log's batches carry
//! and written again (a log with no batch starts empty); only failing to write it
//! fails the open.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// File name of the checkpoint inside a partition directory.
pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";
const ENTRY_BYTES: usize = 12;

/// Epoch start offsets of one partition log.
#[derive(Debug)]
pub(crate) struct EpochCache {
    path: PathBuf,
    entries: Vec<(i32, u64)>,
}

impl EpochCache {
    /// Loads the checkpoint in `dir`, dropping entries at or past `log_end_offset`.
    ///
    /// A missing or damaged checkpoint is rebuilt by `rebuild`, which gives where each
    /// leader epoch starts in the log (see [`starts`]), and written again: started
    /// empty, the leader would answer a follower's truncation question from nothing
    /// and could have it cut records it must keep.
    pub(crate) fn load(
        dir: &Path,
        log_end_offset: u64,
        rebuild: impl FnOnce() -> Vec<(i32, u64)>,
    ) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let loaded = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).at(&path),
        };
        let mut cache = EpochCache {
            path,
            entries: Vec::new(),
        };
        match loaded {
            Some(entries) => cache.entries = entries,
            None => {
                let entries = rebuild();
                if !entries.is_empty() {
                    tracing::warn!(path = %cache.path.display(), epochs = entries.len(), "missing or damaged leader-epoch checkpoint; rebuilt from the log");
                    cache.replace(entries)?;
                }
            }
        }
        cache.truncate_from(log_end_offset)?;
        Ok(cache)
    }

    /// The newest epoch with records, if any.
    pub(crate) fn last_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Notes that `epoch` has records from `start_offset` on (a batch was appended).
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: u64) -> Result<()> {
        if epoch < 0 || self.entries.last().is_some_and(|&(last, _)| last >= epoch) {
            return Ok(());
        }
        assert!(
            self.entries
                .last()
                .is_none_or(|&(_, start)| start <= start_offset),
            "epoch start offsets never go back"
        );
        let mut entries = self.entries.clone();
        entries.push((epoch, start_offset));
        self.replace(entries)
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated there).
    pub(crate) fn truncate_from(&mut self, offset: u64) -> Result<()> {
        let keep = self.entries.iter().take_while(|e| e.1 < offset).count();
        if keep < self.entries.len() {
            self.replace(self.entries[..keep].to_vec())?;
        }
        Ok(())
    }

    /// Forgets every epoch (the log was reset).
    pub(crate) fn clear(&mut self) -> Result<()> {
        if !self.entries.is_empty() {
            self.replace(Vec::new())?;
        }
        Ok(())
    }

    /// Writes `entries` to the checkpoint, then keeps them: if the write fails (a full
    /// disk), memory still matches the file and the next append tries again.
    fn replace(&mut self, entries: Vec<(i32, u64)>) -> Result<()> {
        persist(&self.path, &entries)?;
        self.entries = entries;
        Ok(())
    }

    /// The largest known epoch at or below `epoch`, and the offset where it ends: the
    /// start of the next epoch, or `log_end_offset` for the newest. `None` when every
    /// known epoch is newer than `epoch` (then the answer is the first epoch's start).
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> (Option<i32>, u64) {
        let index = self.entries.partition_point(|e| e.0 <= epoch);
        let end = self.entries.get(index).map_or(log_end_offset, |e| e.1);
        (index.checked_sub(1).map(|i| self.entries[i].0), end)
    }
}

/// Where each leader epoch starts in a log whose batches carry `batches` (leader
/// epoch, base offset), oldest first: at the first batch of each new, larger epoch.
pub(crate) fn starts(batches: impl IntoIterator<Item = (i32, u64)>) -> Vec<(i32, u64)> {
    let mut entries: Vec<(i32, u64)> = Vec::new();
    for (epoch, start) in batches {
        if epoch >= 0 && entries.last().is_none_or(|&(last, _)| last < epoch) {
            entries.push((epoch, start));
        }
    }
    entries
}

fn persist(path: &Path, entries: &[(i32, u64)]) -> Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES + 8);
    for &(epoch, start) in entries {
        bytes.extend_from_slice(&epoch.to_be_bytes());
        bytes.extend_from_slice(&start.to_be_bytes());
    }
    bytes.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    replace_file(path, &bytes)
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new contents,
/// never a mix: write a temporary file, fsync it, rename it over, fsync the directory.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().at(path)
}

fn decode(bytes: &[u8]) -> Option<Vec<(i32, u64)>> {
    let body_len = bytes.len().checked_sub(8)?;
    let (body, trailer) = bytes.split_at(body_len);
    let count = u32::from_be_bytes(trailer[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(trailer[4..].try_into().ok()?);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(body);
    hasher.update(&trailer[..4]);
    if hasher.finalize() != crc || body.len() != count.checked_mul(ENTRY_BYTES)? {
        return None;
    }
    Some(
        body.chunks_exact(ENTRY_BYTES)
            .map(|c| {
                let epoch = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                let mut start = [0u8; 8];
                start.copy_from_slice(&c[4..]);
                (epoch, u64::from_be_bytes(start))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_end_where_the_next_one_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::load(dir.path(), 0, Vec::new).unwrap();
        cache.assign(1, 0).unwrap();
        cache.assign(1, 5).unwrap();
        cache.assign(3, 10).unwrap();
        cache.assign(2, 12).unwrap();
        assert_eq!(cache.end_offset_for(1, 20), (Some(1), 10));
        assert_eq!(cache.end_offset_for(2, 20), (Some(1), 10));
        assert_eq!(cache.end_offset_for(3, 20), (Some(3), 20));
        assert_eq!(cache.end_offset_for(0, 20), (None, 0));
        let reloaded = EpochCache::load(dir.path(), 20, Vec::new).unwrap();
        assert_eq!(reloaded.entries, [(1, 0), (3, 10)]);
        let cut = EpochCache::load(dir.path(), 10, Vec::new).unwrap();
        assert_eq!(
            cut.entries,
            [(1, 0)],
            "entries at or past the log end are dropped"
        );
    }

    #[test]
    fn a_damaged_checkpoint_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::load(dir.path(), 0, Vec::new).unwrap();
        cache.assign(4, 0).unwrap();
        cache.assign(6, 30).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        // The log's batches: epochs 4 and 6, a batch without an epoch, one past the end.
        let batches = [(4, 0), (4, 10), (-1, 20), (6, 30), (6, 40), (7, 100)];
        let rebuilt = EpochCache::load(dir.path(), 100, || starts(batches)).unwrap();
        assert_eq!(rebuilt.entries, [(4, 0), (6, 30)]);
        // Written again: the next load reads it without the log.
        let reloaded = EpochCache::load(dir.path(), 100, || panic!("not needed")).unwrap();
        assert_eq!(reloaded.entries, [(4, 0), (6, 30)]);
        // A missing one too.
        std::fs::remove_file(&path).unwrap();
        let rebuilt = EpochCache::load(dir.path(), 100, || starts(batches)).unwrap();
        assert_eq!(rebuilt.entries, [(4, 0), (6, 30)]);
        assert!(path.exists());
    }
}
