//! One partition's log: an ordered list of segments with one writer and many readers.
//!
//! Readers take the segment list's read lock only long enough to clone an `Arc` of the
//! segment they need, then read its mapped bytes with no lock held, so reads never
//! wait on appends or fsyncs. Appends are serialized by the writer lock. With fsync
//! policy `always`, an appender waits after releasing the writer lock until a sync
//! covers its batch; whoever finds no sync running starts one for everything written
//! so far, so concurrent appenders share one fsync (group commit).
//!
//! - `open`: recovery of the directory when the log is opened.
//! - `append`: producer and follower appends, and rolling segments.
//! - `sync`: group commit, when appended bytes become durable.
//! - `flusher`: syncing sealed segments in the background after a roll.
//! - `recovery_point`: the checkpoint of which closed segments are on disk.
//! - `truncate`: a follower cutting its log back to its leader's.
//! - `retention`: deleting the oldest closed segments.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use crate::batch::BatchHeader;
use crate::config::{FsyncPolicy, LogConfig};
use crate::epochs::EpochCache;
use crate::error::{Error, IoContext, Result};
use crate::lock::recover;
use crate::producers::ProducerStates;
use crate::segment::{self, ActiveSegment, SealedSegment, SegmentRef};

mod append;
mod flusher;
mod open;
mod recovery_point;
mod retention;
mod sync;
mod truncate;

use flusher::Flusher;

use sync::SyncState;

/// Milliseconds since the Unix epoch; injectable so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
}

/// A producer's batch that passed [`Log::validate`]; only that makes one.
#[derive(Clone, Copy, Debug)]
pub struct ValidatedBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

/// Whole batches read from one segment, borrowed from its map without a copy.
///
/// Holding a `ReadSlice` keeps its segment mapped, even if retention deletes it.
#[derive(Clone)]
pub struct ReadSlice {
    segment: Option<SegmentRef>,
    range: std::ops::Range<usize>,
}

impl ReadSlice {
    fn empty() -> Self {
        ReadSlice {
            segment: None,
            range: 0..0,
        }
    }

    /// True when no batch was read.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }
}

impl AsRef<[u8]> for ReadSlice {
    fn as_ref(&self) -> &[u8] {
        match &self.segment {
            Some(segment) => &segment.bytes()[self.range.clone()],
            None => &[],
        }
    }
}

struct Segments {
    sealed: Vec<Arc<SealedSegment>>,
    active: Arc<ActiveSegment>,
}

impl Segments {
    fn log_start_offset(&self) -> u64 {
        self.sealed
            .first()
            .map_or(self.active.base_offset(), |s| s.base_offset())
    }

    /// The segment that holds `offset`, which must be within the log's range.
    fn holding(&self, offset: u64) -> SegmentRef {
        if offset >= self.active.base_offset() {
            return SegmentRef::Active(self.active.clone());
        }
        let index = self.sealed.partition_point(|s| s.base_offset() <= offset);
        SegmentRef::Sealed(self.sealed[index.saturating_sub(1)].clone())
    }
}

/// The part of a [`LogConfig`] that [`Log::alter`] changes on an open log.
#[derive(Clone, Copy, Debug)]
struct Alterable {
    max_batch_bytes: usize,
    fsync: FsyncPolicy,
}

/// One partition's log on disk.
pub struct Log {
    dir: PathBuf,
    /// The config the log was opened with; its `max_batch_bytes` and `fsync` are
    /// superseded by `alterable`.
    config: LogConfig,
    /// The settings that may change while the log is open ([`Log::alter`]).
    alterable: RwLock<Alterable>,
    clock: Clock,
    segments: RwLock<Segments>,
    /// Where each leader epoch starts; changed only under the writer lock.
    epochs: Mutex<EpochCache>,
    /// Idempotent producers' recent sequences; changed only under the writer lock.
    producers: Mutex<ProducerStates>,
    writer: Mutex<()>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Syncs segments sealed without syncing, after the roll.
    flusher: Arc<Flusher>,
    /// Shared with the flusher, whose failed fsync fails the log too.
    failed: Arc<AtomicBool>,
}

impl Drop for Log {
    /// A log closed cleanly has every sealed segment on disk and its recovery point
    /// at the active segment, so the next open checks nothing it need not.
    fn drop(&mut self) {
        self.flusher.wait_idle();
    }
}

impl Log {
    /// The directory holding this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force: as opened, with any [`Log::alter`] applied.
    pub fn config(&self) -> LogConfig {
        let alterable = self.alterable();
        LogConfig {
            max_batch_bytes: alterable.max_batch_bytes,
            fsync: alterable.fsync,
            ..self.config.clone()
        }
    }

    /// Changes the largest batch accepted and the fsync policy of the open log (a
    /// topic's settings were altered). The segment layout stays as opened: only those
    /// two may differ between `config` and the log's, else `InvalidConfig`.
    pub fn alter(&self, config: &LogConfig) -> Result<()> {
        config.validate()?;
        let layout = |c: &LogConfig| {
            (
                c.segment_bytes,
                c.segment_age,
                c.index_bytes,
                c.index_interval_bytes,
            )
        };
        if layout(config) != layout(&self.config) {
            return Err(Error::InvalidConfig(
                "only max_batch_bytes and fsync change on an open log".into(),
            ));
        }
        *recover(self.alterable.write()) = Alterable {
            max_batch_bytes: config.max_batch_bytes,
            fsync: config.fsync,
        };
        Ok(())
    }

    /// The alterable settings now in force.
    fn alterable(&self) -> Alterable {
        // The lock guards two plain values, assigned whole, so a poisoned one still
        // holds a consistent pair.
        *recover(self.alterable.read())
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.read_segments().log_start_offset()
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.read_segments().active.next_offset()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.read_segments().sealed.len() + 1
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        let segments = self.read_segments();
        segments.sealed.iter().map(|s| s.size()).sum::<u64>() + segments.active.size()
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (at least one batch, so a consumer always progresses), within one segment.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadSlice> {
        self.read_below(offset, max_bytes, u64::MAX)
    }

    /// Like [`Log::read`], but serves only batches that end below `end_offset` (the
    /// high watermark, for consumers).
    pub fn read_below(&self, offset: u64, max_bytes: usize, end_offset: u64) -> Result<ReadSlice> {
        let (segment, log_end_offset) = {
            let segments = self.read_segments();
            let log_start_offset = segments.log_start_offset();
            let log_end_offset = segments.active.next_offset();
            if offset < log_start_offset || offset > log_end_offset {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    log_start_offset,
                    log_end_offset,
                });
            }
            (segments.holding(offset), log_end_offset)
        };
        if offset >= log_end_offset.min(end_offset) {
            return Ok(ReadSlice::empty());
        }
        let range = match &segment {
            SegmentRef::Active(s) => s.read(offset, max_bytes, end_offset)?,
            SegmentRef::Sealed(s) => s.read(offset, max_bytes, end_offset)?,
        };
        Ok(ReadSlice {
            segment: Some(segment),
            range,
        })
    }

    /// Base offset of the first batch whose records reach `timestamp` (ms), or `None`
    /// if every stored record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let (sealed, active) = {
            let segments = self.read_segments();
            (segments.sealed.clone(), segments.active.clone())
        };
        for segment in &sealed {
            if let Some(offset) = segment.offset_for_timestamp(timestamp)? {
                return Ok(Some(offset));
            }
        }
        active.offset_for_timestamp(timestamp)
    }

    /// Records that `epoch` has records from `offset` on. Caller holds the writer lock.
    fn note_epoch(&self, epoch: i32, offset: u64) -> Result<()> {
        self.lock_epochs().assign(epoch, offset)
    }

    fn lock_producers(&self) -> MutexGuard<'_, ProducerStates> {
        recover(self.producers.lock())
    }

    fn lock_epochs(&self) -> MutexGuard<'_, EpochCache> {
        recover(self.epochs.lock())
    }

    /// The newest leader epoch with records in this log.
    pub fn last_epoch(&self) -> Option<i32> {
        self.lock_epochs().last_epoch()
    }

    /// The largest epoch at or below `epoch` that this log has, and where it ends.
    pub fn epoch_end_offset(&self, epoch: i32) -> Result<(Option<i32>, u64)> {
        let end = self.log_end_offset();
        Ok(self.lock_epochs().end_offset_for(epoch, end))
    }

    /// Starts a new leader epoch at the current log end (this replica became leader).
    pub fn begin_epoch(&self, epoch: i32) -> Result<()> {
        let _writer = self.lock_writer()?;
        let end = self.log_end_offset();
        self.note_epoch(epoch, end)
    }

    /// The writer lock; a write that panicked under it (see `lock.rs`) fails the log.
    fn lock_writer(&self) -> Result<MutexGuard<'_, ()>> {
        let locked = self.writer.lock();
        if locked.is_err() {
            self.fail();
            return Err(self.failed_error());
        }
        Ok(recover(locked))
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Segments> {
        recover(self.segments.read())
    }

    fn write_segments(&self) -> std::sync::RwLockWriteGuard<'_, Segments> {
        recover(self.segments.write())
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// True once an fsync failed: the log accepts nothing until reopened from disk.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn failed_error(&self) -> Error {
        Error::LogFailed {
            path: self.dir.clone(),
        }
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            Err(self.failed_error())
        } else {
            Ok(())
        }
    }

    /// Deletes the whole log directory (topic deletion).
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).at(&dir)
    }
}

/// Removes a segment's files, the `.log` first so a crash leaves only orphan indexes.
fn remove_segment_files(dir: &Path, base: u64) -> Result<()> {
    for path in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&path),
        }
    }
    Ok(())
}

/// Syncs a directory, so the files created, renamed or removed in it stay so after a
/// crash.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
