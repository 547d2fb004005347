//! One hosted partition: its log and the high watermark consumers read below.
//!
//! The log is synchronous; every call that may touch the disk runs on tokio's
//! blocking pool. The high watermark is published on a watch channel so long-polling
//! fetches wake as soon as records become visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use bytes::Bytes;
use pubsub_storage::{Log, ReadSlice};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Marks "no leader" in [`Partition`]'s leader field.
pub const NO_LEADER: u32 = u32::MAX;

/// A partition replica hosted by this broker.
pub struct Partition {
    log: Arc<Log>,
    high_watermark: watch::Sender<u64>,
    /// The partition's leader as the metadata says, or [`NO_LEADER`].
    leader: AtomicU32,
    /// The leader epoch stamped into batches this replica appends as leader.
    leader_epoch: AtomicI32,
}

/// Batches read for a fetch, with the partition's offsets at the time of the read.
pub struct FetchedBatches {
    /// Whole batches, concatenated; a zero-copy view of the segment's map.
    pub records: Bytes,
    /// The high watermark when the read was made.
    pub high_watermark: u64,
    /// The log start offset when the read was made.
    pub log_start_offset: u64,
}

impl Partition {
    /// Wraps an opened log. Without replication every stored record is committed, so
    /// the high watermark starts at the log end.
    pub fn new(log: Log) -> Self {
        let end = log.log_end_offset();
        Partition {
            log: Arc::new(log),
            high_watermark: watch::Sender::new(end),
            leader: AtomicU32::new(NO_LEADER),
            leader_epoch: AtomicI32::new(0),
        }
    }

    /// Records who leads the partition and in which epoch, from the metadata.
    pub fn set_leadership(&self, leader: Option<u32>, leader_epoch: i32) {
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.leader
            .store(leader.unwrap_or(NO_LEADER), Ordering::Release);
    }

    /// The partition's leader, if it has one.
    pub fn leader(&self) -> Option<u32> {
        Some(self.leader.load(Ordering::Acquire)).filter(|&l| l != NO_LEADER)
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// The partition's log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Offsets below this are visible to consumers.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// Appends producer batches in order; returns each batch's base offset.
    ///
    /// Returns once the fsync policy is satisfied, so with `always` every returned
    /// offset is on disk. The high watermark then moves past the appended batches.
    pub async fn append(&self, batches: Vec<Bytes>) -> Result<Vec<u64>> {
        let log = self.log.clone();
        let epoch = self.leader_epoch();
        let (offsets, end) = blocking(move || {
            let mut offsets = Vec::with_capacity(batches.len());
            let mut end = 0;
            for batch in &batches {
                let info = log.append(batch, epoch)?;
                offsets.push(info.base_offset);
                end = info.last_offset + 1;
            }
            Ok((offsets, end))
        })
        .await?;
        self.high_watermark.send_if_modified(|hw| {
            let moved = end > *hw;
            *hw = (*hw).max(end);
            moved
        });
        Ok(offsets)
    }

    /// Reads batches from `offset` below the high watermark, waiting until
    /// `deadline` for some to arrive if none are there yet.
    pub async fn fetch(
        &self,
        offset: u64,
        max_bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Result<FetchedBatches> {
        let mut watermark = self.high_watermark.subscribe();
        loop {
            let high_watermark = *watermark.borrow_and_update();
            let log = self.log.clone();
            let slice: ReadSlice =
                blocking(move || Ok(log.read_below(offset, max_bytes, high_watermark)?)).await?;
            if !slice.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(FetchedBatches {
                    records: Bytes::from_owner(slice),
                    high_watermark,
                    log_start_offset: self.log.log_start_offset(),
                });
            }
            match tokio::time::timeout_at(deadline, watermark.changed()).await {
                Ok(Ok(())) | Err(_) => continue,
                // The partition was dropped (topic deleted) while we waited.
                Ok(Err(_)) => return Err(Error::TopicNotFound("(deleted while fetching)".into())),
            }
        }
    }

    /// First offset at or after `timestamp`, or the high watermark if none.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let log = self.log.clone();
        let high_watermark = self.high_watermark();
        let found = blocking(move || Ok(log.offset_for_timestamp(timestamp)?)).await?;
        Ok(found.map_or(high_watermark, |o| o.min(high_watermark)))
    }
}

/// Runs disk work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
