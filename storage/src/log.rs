//! One partition's log: an ordered list of segments with one writer and many readers.
//!
//! Readers take the segment list's read lock only long enough to clone an `Arc` of the
//! segment they need, then read its mapped bytes with no lock held, so reads never
//! wait on appends or fsyncs. Appends are serialized by the writer lock. With fsync
//! policy `always`, an appender waits after releasing the writer lock until a sync
//! covers its batch; whoever finds no sync running starts one for everything written
//! so far, so concurrent appenders share one fsync (group commit).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::batch::{self, BatchHeader};
use crate::config::{FsyncPolicy, LogConfig};
use crate::epochs::EpochCache;
use crate::error::{Error, IoContext, Result};
use crate::lock::recover;
use crate::producers::{Admission, ProducerStates};
use crate::retention::{self, RetentionPolicy, SegmentFacts};
use crate::segment::{self, ActiveSegment, SealError, SealedSegment, SegmentRef};

mod sync;

use sync::SyncState;

/// Milliseconds since the Unix epoch; injectable so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Bytes at the end of the newest closed segment scanned for producer state on open.
const PRODUCER_SCAN_BYTES: usize = 16 << 20;

/// The system clock.
pub fn system_clock() -> Clock {
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
    failed: AtomicBool,
}

impl Log {
    /// Opens (or creates) the log in `dir` with the system clock.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        Log::open_with_clock(dir, config, system_clock())
    }

    /// Opens (or creates) the log in `dir`, recovering from whatever a crash left.
    ///
    /// Closed segments are checked against their indexes (rebuilt when missing or
    /// damaged; a corrupt closed segment fails the open); the last segment's tail is
    /// checked batch by batch and cut at the first torn or corrupt batch.
    pub fn open_with_clock(dir: &Path, config: LogConfig, clock: Clock) -> Result<Log> {
        config.validate()?;
        std::fs::create_dir_all(dir).at(dir)?;
        let bases = list_segments(dir)?;
        let now = clock();
        let (sealed, active) = match bases.split_last() {
            None => (Vec::new(), ActiveSegment::recover(dir, 0, &config, now)?.0),
            Some((&last, rest)) => {
                let mut sealed = Vec::with_capacity(rest.len());
                for &base in rest {
                    let segment = SealedSegment::open(dir, base, &config)?;
                    check_contiguous(
                        sealed.last().map(|s: &Arc<SealedSegment>| s.next_offset()),
                        &segment,
                    )?;
                    sealed.push(Arc::new(segment));
                }
                let (active, _dropped) = ActiveSegment::recover(dir, last, &config, now)?;
                if let Some(prev) = sealed.last()
                    && prev.next_offset() != active.base_offset()
                {
                    return Err(Error::SegmentCorrupt {
                        path: prev.path().to_path_buf(),
                        position: prev.size(),
                        reason: format!(
                            "segment ends at offset {} but the next one starts at {}",
                            prev.next_offset(),
                            active.base_offset()
                        ),
                    });
                }
                (sealed, active)
            }
        };
        sync_dir(dir)?;
        let durable_offset = active.next_offset();
        let epochs = EpochCache::load(dir, durable_offset)?;
        // The newest closed segment too: batches a producer had in flight when the
        // segment rolled are still ones its retries may repeat.
        let mut producers = ProducerStates::default();
        // Only its tail (batches still in flight at the roll are near its end), found
        // through the offset index, so a 1 GiB segment is not read whole at start.
        let previous = sealed.last().map_or(&[][..], |segment| {
            let bytes = segment.bytes();
            let from = bytes.len().saturating_sub(PRODUCER_SCAN_BYTES);
            let start = segment
                .offset_entries()
                .iter()
                .map(|e| e.position as usize)
                .filter(|&p| p <= from)
                .max()
                .unwrap_or(0);
            bytes.get(start..).unwrap_or_default()
        });
        for bytes in [previous, active.bytes()] {
            for item in batch::batches(bytes) {
                let Ok((header, _)) = item else { break };
                producers.record(&header);
            }
        }
        Ok(Log {
            dir: dir.to_path_buf(),
            alterable: RwLock::new(Alterable {
                max_batch_bytes: config.max_batch_bytes,
                fsync: config.fsync,
            }),
            config,
            clock,
            segments: RwLock::new(Segments {
                sealed,
                active: Arc::new(active),
            }),
            writer: Mutex::new(()),
            epochs: Mutex::new(epochs),
            producers: Mutex::new(producers),
            sync: Mutex::new(SyncState {
                durable_offset,
                running: false,
                generation: 0,
                last_sync: Instant::now(),
            }),
            synced: Condvar::new(),
            failed: AtomicBool::new(false),
        })
    }

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

    /// Validates a producer's batch and appends it with its base offset and leader
    /// epoch stamped, then, per the fsync policy, waits until it is durable.
    pub fn append(&self, batch_bytes: &[u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.append_validated(self.validate(batch_bytes)?, leader_epoch)
    }

    /// Checks a producer's batch (header, CRC, every record) against this log's
    /// limits, so a request of several batches can be checked whole before any of
    /// them is appended, and each walked only once.
    pub fn validate<'a>(&self, batch_bytes: &'a [u8]) -> Result<ValidatedBatch<'a>> {
        let header = batch::validate(batch_bytes, self.alterable().max_batch_bytes)?;
        Ok(ValidatedBatch {
            bytes: batch_bytes,
            header,
        })
    }

    /// Appends a batch [`Log::validate`] accepted, as [`Log::append`] does.
    ///
    /// The caller's bytes are not modified or copied: the stamped header is written
    /// from a stack copy and the rest straight from the batch. Nothing is re-encoded.
    pub fn append_validated(
        &self,
        batch: ValidatedBatch<'_>,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let ValidatedBatch {
            bytes: batch_bytes,
            header,
        } = batch;
        let info = {
            let _writer = self.lock_writer()?;
            self.check_not_failed()?;
            if let Admission::Duplicate(stored) = self.lock_producers().admit(&header)? {
                // A retry whose answer was lost: answer with the stored batch, once durable.
                drop(_writer);
                self.after_append(stored.last_offset + 1)?;
                return Ok(stored);
            }
            let active = self.prepare_active(batch_bytes.len(), header.last_offset_delta)?;
            let base_offset = active.next_offset();
            let mut head = [0u8; batch::HEADER_BYTES];
            head.copy_from_slice(&batch_bytes[..batch::HEADER_BYTES]);
            batch::stamp(&mut head, base_offset, leader_epoch);
            let header = BatchHeader {
                base_offset,
                leader_epoch,
                ..header
            };
            self.note_epoch(leader_epoch, base_offset)?;
            active.append_parts(
                &head,
                &batch_bytes[batch::HEADER_BYTES..],
                &header,
                self.config.index_interval_bytes,
            )?;
            // Only once the bytes are written: a retry of a failed write must be
            // written again, never answered as an already-stored duplicate.
            self.lock_producers().record(&header);
            AppendInfo {
                base_offset,
                last_offset: header.last_offset(),
            }
        };
        self.after_append(info.last_offset + 1)?;
        Ok(info)
    }

    /// Appends batches copied from a leader, which already carry their offsets and
    /// epochs; the first must start at the log end offset and each must follow the last.
    pub fn append_replicated(&self, batches: &[u8]) -> Result<Option<AppendInfo>> {
        let mut appended: Option<AppendInfo> = None;
        {
            let _writer = self.lock_writer()?;
            self.check_not_failed()?;
            // The leader checked each batch against the limit in force when it took
            // it; a lower limit since (an altered topic) must not stop a follower
            // from copying older batches. A batch must still fit in a segment.
            let max_batch_bytes = self
                .alterable()
                .max_batch_bytes
                .max(usize::try_from(self.config.segment_bytes).unwrap_or(usize::MAX));
            for item in batch::batches(batches) {
                let (header, bytes) = item?;
                if bytes.len() > max_batch_bytes {
                    return Err(Error::BatchTooLarge {
                        size: bytes.len(),
                        limit: max_batch_bytes,
                    });
                }
                let active = self.prepare_active(bytes.len(), header.last_offset_delta)?;
                if header.base_offset != active.next_offset() {
                    return Err(Error::NonContiguousOffset {
                        base_offset: header.base_offset,
                        log_end_offset: active.next_offset(),
                    });
                }
                self.note_epoch(header.leader_epoch, header.base_offset)?;
                active.append(bytes, &header, self.config.index_interval_bytes)?;
                self.lock_producers().record(&header);
                let first = appended.map_or(header.base_offset, |a| a.base_offset);
                appended = Some(AppendInfo {
                    base_offset: first,
                    last_offset: header.last_offset(),
                });
            }
        }
        if let Some(info) = appended {
            self.after_append(info.last_offset + 1)?;
        }
        Ok(appended)
    }

    /// Rolls the active segment if it is too old or the batch does not fit; returns the
    /// segment to append to. Caller holds the writer lock.
    fn prepare_active(&self, len: usize, last_offset_delta: u32) -> Result<Arc<ActiveSegment>> {
        let active = self.read_segments().active.clone();
        let too_old = active.size() > 0
            && (self.clock)().saturating_sub(active.created_ms())
                >= self.config.segment_age.as_millis() as i64;
        // Index entries hold offsets relative to the segment's base in 32 bits.
        let relative_end =
            active.next_offset() + u64::from(last_offset_delta) - active.base_offset();
        let offsets_fit = relative_end <= u64::from(u32::MAX);
        if !too_old && offsets_fit && active.fits(len, &self.config) {
            return Ok(active);
        }
        if active.size() == 0 {
            return Err(Error::SegmentFull {
                reason: format!("a {len}-byte batch does not fit in an empty segment"),
            });
        }
        self.roll_locked(&active)
    }

    /// Seals `active` and starts a new segment at its end. Caller holds the writer lock.
    fn roll_locked(&self, active: &Arc<ActiveSegment>) -> Result<Arc<ActiveSegment>> {
        // Seal fully (synced file and index trailers) before the next segment exists:
        // after a crash, the last segment is always the one to recover as active.
        match active.seal() {
            Ok(()) => {}
            Err(SealError::Sync(e)) => {
                // As for any failed fsync: never retry, stop acknowledging.
                tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed while sealing a segment; log stops accepting writes");
                self.fail();
                return Err(e);
            }
            // A full disk: the segment stays active, the next append tries again.
            Err(SealError::Other(e)) => return Err(e),
        }
        let sealed = Arc::new(SealedSegment::open(
            &self.dir,
            active.base_offset(),
            &self.config,
        )?);
        let (next, _) = ActiveSegment::recover(
            &self.dir,
            active.next_offset(),
            &self.config,
            (self.clock)(),
        )?;
        sync_dir(&self.dir)?;
        let next = Arc::new(next);
        let mut segments = self.write_segments();
        segments.sealed.push(sealed);
        segments.active = next.clone();
        tracing::info!(dir = %self.dir.display(), base_offset = next.base_offset(), "rolled segment");
        Ok(next)
    }

    /// Seals the active segment now if it holds anything (for tests and tools).
    pub fn roll(&self) -> Result<()> {
        let _writer = self.lock_writer()?;
        self.check_not_failed()?;
        let active = self.read_segments().active.clone();
        if active.size() > 0 {
            self.roll_locked(&active)?;
        }
        Ok(())
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

    /// Removes every record at or after `offset` (the whole batch holding it, so the
    /// new log end offset may be a little lower). Used by a follower whose log diverged
    /// from a new leader's.
    ///
    /// Invariant for callers: only offsets no reader is reading are truncated (above
    /// the high watermark), since bytes under a concurrent read are cut.
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        let _writer = self.lock_writer()?;
        self.check_not_failed()?;
        let (log_start, log_end) = {
            let s = self.read_segments();
            (s.log_start_offset(), s.active.next_offset())
        };
        if offset >= log_end {
            return Ok(());
        }
        if offset <= log_start {
            return self.reset_locked(offset.min(log_start));
        }
        let mut segments = self.write_segments();
        let keep = segments.holding(offset);
        let (base, position) = match &keep {
            SegmentRef::Active(s) => (
                s.base_offset(),
                s.read(offset, 0, u64::MAX).map(|r| r.start)?,
            ),
            SegmentRef::Sealed(s) => (s.base_offset(), s.position_for_truncation(offset)?),
        };
        let doomed_from = segments.sealed.partition_point(|s| s.base_offset() <= base);
        let mut doomed: Vec<u64> = segments.sealed[doomed_from..]
            .iter()
            .map(|s| s.base_offset())
            .collect();
        if segments.active.base_offset() != base {
            doomed.push(segments.active.base_offset());
        }
        // Newest first: a crash part-way leaves a contiguous prefix of segments.
        for doomed_base in doomed.into_iter().rev() {
            remove_segment_files(&self.dir, doomed_base)?;
        }
        let log = segment::log_path(&self.dir, base);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .at(&log)?;
        file.set_len(position as u64).at(&log)?;
        file.sync_all().at(&log)?;
        drop(file);
        let (active, _) = ActiveSegment::recover(&self.dir, base, &self.config, (self.clock)())?;
        sync_dir(&self.dir)?;
        let kept = segments.sealed.partition_point(|s| s.base_offset() < base);
        segments.sealed.truncate(kept);
        segments.active = Arc::new(active);
        let new_end = segments.active.next_offset();
        drop(segments);
        self.lower_durable_offset(new_end);
        self.lock_epochs().truncate_from(new_end)?;
        self.lock_producers().truncate_from(new_end);
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = new_end, "truncated log");
        Ok(())
    }

    /// Deletes every segment and starts empty at `offset` (a follower whose log lies
    /// entirely outside the leader's range).
    pub fn reset_to(&self, offset: u64) -> Result<()> {
        let _writer = self.lock_writer()?;
        self.check_not_failed()?;
        self.reset_locked(offset)
    }

    fn reset_locked(&self, offset: u64) -> Result<()> {
        let mut segments = self.write_segments();
        for base in segments
            .sealed
            .iter()
            .map(|s| s.base_offset())
            .chain([segments.active.base_offset()])
        {
            remove_segment_files(&self.dir, base)?;
        }
        let (active, _) = ActiveSegment::recover(&self.dir, offset, &self.config, (self.clock)())?;
        sync_dir(&self.dir)?;
        segments.sealed.clear();
        segments.active = Arc::new(active);
        drop(segments);
        {
            let mut state = recover(self.sync.lock());
            state.durable_offset = offset;
            state.generation += 1;
        }
        self.lock_epochs().clear()?;
        *self.lock_producers() = ProducerStates::default();
        tracing::info!(dir = %self.dir.display(), offset, "reset log");
        Ok(())
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

    /// Deletes the closed segments `policy` says have expired; returns how many.
    pub fn apply_retention(&self, policy: RetentionPolicy) -> Result<usize> {
        let now = (self.clock)();
        self.delete_oldest(|segments| {
            let facts: Vec<SegmentFacts> = segments
                .sealed
                .iter()
                .map(|s| SegmentFacts {
                    size: s.size(),
                    max_timestamp: s.max_timestamp(),
                })
                .collect();
            retention::segments_to_delete(&facts, segments.active.size(), policy, now)
        })
    }

    /// Deletes the closed segments that end at or below `offset` (every record in them
    /// is below it); returns how many. The subscriptions' low-water mark uses this.
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        self.delete_oldest(|segments| {
            segments
                .sealed
                .iter()
                .take_while(|s| s.next_offset() <= offset)
                .count()
        })
    }

    /// Deletes the oldest closed segments, as many as `choose` says; the choice and the
    /// deletion happen under the writer lock, so two passes cannot both delete.
    fn delete_oldest(&self, choose: impl FnOnce(&Segments) -> usize) -> Result<usize> {
        let _writer = self.lock_writer()?;
        let removed: Vec<Arc<SealedSegment>> = {
            let mut segments = self.write_segments();
            let count = choose(&segments).min(segments.sealed.len());
            segments.sealed.drain(..count).collect()
        };
        for segment in &removed {
            // Readers holding the segment keep their mapping; the space is freed after.
            remove_segment_files(&self.dir, segment.base_offset())?;
            tracing::info!(path = %segment.path().display(), "retention deleted segment");
        }
        Ok(removed.len())
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

/// Time after which `Log::flush_if_due` should be called again, for interval policies.
pub fn flush_interval(config: &LogConfig) -> Option<Duration> {
    match config.fsync {
        FsyncPolicy::Interval(every) => Some(every),
        _ => None,
    }
}

fn check_contiguous(previous_end: Option<u64>, segment: &SealedSegment) -> Result<()> {
    match previous_end {
        Some(end) if end != segment.base_offset() => Err(Error::SegmentCorrupt {
            path: segment.path().to_path_buf(),
            position: 0,
            reason: format!(
                "segment starts at offset {} but the previous one ends at {end}",
                segment.base_offset()
            ),
        }),
        _ => Ok(()),
    }
}

/// Base offsets of the segments in `dir`, sorted; removes index files without a log.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let Some(base) = segment::parse_base_offset(stem) else {
            continue;
        };
        match ext {
            "log" => logs.push(base),
            "index" | "timeindex" => indexes.push((base, path)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(logs)
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

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
