//! The active segment: the one being appended to, mapped once at the segment size.
//!
//! `size` (an atomic, stored after the bytes are written) tells readers how much of
//! the map holds complete batches. Recovery after a crash scans the file's data and
//! cuts it at the first torn or corrupt batch; sealing cuts the file to its size
//! and writes the index files (synced then, or later by the log's background flush).

/// Time of each fsync of an active segment, for `pubsubd`'s metrics (a no-op without
/// an exporter); looked up once.
static FSYNC_SECONDS: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| metrics::histogram!("pubsub_fsync_duration_seconds"));

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use super::read::{collect, first_at_or_after, seek};
use super::scan::{Scan, ScanStop, scan};
use super::{IndexCursor, SealError, index_path, log_path, offset_key, time_index_path, time_key};
use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::index::{ActiveIndex, OffsetEntry, TimeEntry};
use crate::lock::recover;

/// A segment being appended to.
pub(crate) struct ActiveSegment {
    base_offset: u64,
    path: PathBuf,
    file: File,
    map: Mmap,
    capacity: u64,
    size: AtomicU64,
    next_offset: AtomicU64,
    /// Base offset of the last batch, for the final time index entry at seal.
    last_batch_offset: AtomicU64,
    max_timestamp: AtomicI64,
    created_ms: i64,
    indexes: RwLock<Option<ActiveIndexes>>,
}

struct ActiveIndexes {
    offsets: ActiveIndex<OffsetEntry>,
    times: ActiveIndex<TimeEntry>,
    cursor: IndexCursor,
}

impl ActiveIndexes {
    /// The in-memory indexes of the batches a recovery scan kept, as many entries as
    /// fit (appends stop adding entries to a full index too).
    fn from_scan(scan: &Scan, config: &LogConfig) -> Self {
        let mut offsets = ActiveIndex::new(config.index_bytes);
        let mut times = ActiveIndex::new(config.index_bytes);
        for entry in &scan.offset_entries {
            if offsets.is_full() {
                break;
            }
            offsets.push(*entry);
        }
        for entry in &scan.time_entries {
            if times.is_full() {
                break;
            }
            times.push(*entry);
        }
        ActiveIndexes {
            offsets,
            times,
            cursor: scan.cursor,
        }
    }
}

impl ActiveSegment {
    /// Opens (creating if missing) the segment at `base_offset` as the active one.
    ///
    /// Checks the existing bytes batch by batch; everything after the first torn,
    /// corrupt or out-of-sequence batch is cut off (the count of dropped bytes is
    /// returned). Both indexes are rebuilt, in memory, from the surviving batches.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        Self::open_file(dir, base_offset, config, now_ms, true)
    }

    /// Starts the segment after a roll at `base_offset`. Its empty file is synced only
    /// if `durable`; otherwise syncing it would queue behind the sealed segment's
    /// background flush, and a crash that loses it loses no record.
    pub(crate) fn start(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now_ms: i64,
        durable: bool,
    ) -> Result<Self> {
        Ok(Self::open_file(dir, base_offset, config, now_ms, durable)?.0)
    }

    fn open_file(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now_ms: i64,
        durable: bool,
    ) -> Result<(Self, u64)> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let (scan, dropped) = scan_file(&file, &path, base_offset, config)?;
        let valid = scan.valid_bytes;
        let capacity = config.segment_bytes.max(valid);
        // Cutting to the valid prefix and growing back zero-fills the rest, so a later
        // recovery can never mistake stale bytes for batches. The growth is sparse: it
        // takes no space, and pre-filling or fallocate would make every later fsync
        // slower (ext4 converts unwritten extents on each one: measured 10x).
        file.set_len(valid).at(&path)?;
        file.set_len(capacity).at(&path)?;
        if durable {
            file.sync_all().at(&path)?;
        }
        remove_stale_indexes(dir, base_offset)?;
        // SAFETY: readers only touch the committed bytes (`size`), which were written
        // through the file (so their pages exist, even on tmpfs), and the file is never
        // cut below `size` while this map lives.
        let map = unsafe { MmapOptions::new().len(capacity as usize).map(&file) }.at(&path)?;
        let created_ms = scan.max_timestamp.map_or(now_ms, |ts| ts.min(now_ms));
        let segment = ActiveSegment {
            base_offset,
            path,
            file,
            map,
            capacity,
            size: AtomicU64::new(valid),
            next_offset: AtomicU64::new(scan.next_offset),
            last_batch_offset: AtomicU64::new(scan.last_batch_offset.unwrap_or(base_offset)),
            max_timestamp: AtomicI64::new(scan.max_timestamp.unwrap_or(i64::MIN)),
            created_ms,
            indexes: RwLock::new(Some(ActiveIndexes::from_scan(&scan, config))),
        };
        Ok((segment, dropped))
    }

    /// First offset of the segment.
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset the next appended batch gets.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Bytes of complete batches.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Largest record timestamp, or `i64::MIN` when empty.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Wall-clock time the segment was started (for rolling by age).
    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// True if a batch of `len` bytes fits without exceeding the segment or its indexes.
    pub(crate) fn fits(&self, len: usize, config: &LogConfig) -> bool {
        let size = self.size();
        if size == 0 {
            return len as u64 <= self.capacity;
        }
        let indexes_full = recover(self.indexes.read())
            .as_ref()
            .is_none_or(|i| i.offsets.is_full() || i.times.is_full());
        !indexes_full && size + len as u64 <= config.segment_bytes.min(self.capacity)
    }

    /// Writes one validated, stamped batch at the end. Caller holds the log's writer lock.
    pub(crate) fn append(&self, bytes: &[u8], header: &BatchHeader, interval: u32) -> Result<()> {
        self.append_parts(bytes, &[], header, interval)
    }

    /// Writes one batch given as its (stamped) head and the rest of its bytes.
    pub(crate) fn append_parts(
        &self,
        head: &[u8],
        tail: &[u8],
        header: &BatchHeader,
        interval: u32,
    ) -> Result<()> {
        let position = self.size();
        let len = (head.len() + tail.len()) as u64;
        assert_eq!(
            header.base_offset,
            self.next_offset(),
            "appended batch must continue the segment"
        );
        assert_eq!(
            len,
            header.total_bytes() as u64,
            "appended bytes must be exactly the batch"
        );
        assert!(
            position + len <= self.capacity,
            "append past the segment capacity"
        );
        // A failure here (ENOSPC, even part-way) leaves nothing a reader or a recovery
        // could take for the batch: `size` has not moved, the next append writes over
        // whatever was written, and recovery cuts a torn tail.
        self.file.write_all_at(head, position).at(&self.path)?;
        self.file
            .write_all_at(tail, position + head.len() as u64)
            .at(&self.path)?;
        {
            let mut guard = recover(self.indexes.write());
            if let Some(indexes) = guard.as_mut() {
                let (offset_entry, time_entry) =
                    indexes
                        .cursor
                        .observe(header, position, self.base_offset, interval);
                if let Some(entry) = offset_entry.filter(|_| !indexes.offsets.is_full()) {
                    indexes.offsets.push(entry);
                }
                if let Some(entry) = time_entry.filter(|_| !indexes.times.is_full()) {
                    indexes.times.push(entry);
                }
            }
        }
        self.max_timestamp
            .fetch_max(header.max_timestamp, Ordering::AcqRel);
        self.last_batch_offset
            .store(header.base_offset, Ordering::Release);
        self.next_offset
            .store(header.next_offset(), Ordering::Release);
        // Published last: a reader that sees the new size sees the whole batch.
        self.size.store(position + len, Ordering::Release);
        Ok(())
    }

    /// Forces the segment's bytes to disk.
    pub(crate) fn sync(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let synced = self.file.sync_data().at(&self.path);
        FSYNC_SECONDS.record(started.elapsed().as_secs_f64());
        synced
    }

    /// Closes the segment for writing: cuts the file to its size, syncs it if
    /// `durable`, then writes both index files with their trailers (synced likewise).
    /// A segment sealed without `durable` is synced later by the log's background
    /// flush, and until then recovery checks it batch by batch.
    ///
    /// Readers that still hold this segment keep reading its committed bytes. If the
    /// index files cannot be written (a full disk), the segment stays active with its
    /// indexes and sealing can be tried again; a failed fsync is
    /// [`SealError::Sync`], after which nothing written may be trusted.
    pub(crate) fn seal(&self, durable: bool) -> std::result::Result<(), SealError> {
        let size = self.size();
        self.file.set_len(size).at(&self.path)?;
        if durable {
            self.file
                .sync_all()
                .at(&self.path)
                .map_err(SealError::Sync)?;
        }
        let mut guard = recover(self.indexes.write());
        if let Some(indexes) = guard.as_mut() {
            let max = self.max_timestamp();
            let needs_final = size > 0
                && indexes.times.last().is_none_or(|last| last.timestamp < max)
                && !indexes.times.is_full();
            if needs_final {
                // The segment's max timestamp must be recoverable from the time index.
                let relative_offset =
                    (self.last_batch_offset.load(Ordering::Acquire) - self.base_offset) as u32;
                indexes.times.push(TimeEntry {
                    timestamp: max,
                    relative_offset,
                });
            }
            let dir = self.path.parent().unwrap_or(Path::new("."));
            indexes
                .offsets
                .write_sealed(&index_path(dir, self.base_offset), size, durable)?;
            indexes
                .times
                .write_sealed(&time_index_path(dir, self.base_offset), size, durable)?;
        }
        // Sealed: no more appends, so no more index entries.
        guard.take();
        Ok(())
    }

    fn index_lookup(&self, offset: u64) -> Option<usize> {
        let relative = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as i64;
        let guard = recover(self.indexes.read());
        let entry = guard.as_ref()?.offsets.lookup(relative, offset_key)?;
        Some(entry.position as usize)
    }

    /// Reads whole batches from the one holding `offset`, below `end_offset`.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<std::ops::Range<usize>> {
        let (bytes, start) = self.seek(offset)?;
        // Every committed byte was checked: by the recovery scan or, for an append,
        // by the validation of the batch before it was written.
        collect(bytes, start, max_bytes, end_offset, &self.path, usize::MAX)
    }

    /// Base offset of the first batch whose max timestamp is at or after `timestamp`.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let start_offset = {
            let guard = recover(self.indexes.read());
            guard
                .as_ref()
                .and_then(|i| i.times.lookup(timestamp.saturating_sub(1), time_key))
                .map_or(self.base_offset, |e| {
                    self.base_offset + u64::from(e.relative_offset)
                })
        };
        let (bytes, start) = self.seek(start_offset)?;
        first_at_or_after(bytes, start, timestamp, &self.path)
    }

    /// The committed bytes, and where in them the batch holding `offset` starts (one
    /// look at `size`, so both agree while appends go on).
    fn seek(&self, offset: u64) -> Result<(&[u8], usize)> {
        let bytes = self.bytes();
        let from = self.index_lookup(offset).unwrap_or(0);
        Ok((bytes, seek(bytes, from, offset, &self.path)?))
    }

    /// The committed bytes of the segment.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[..self.size() as usize]
    }
}

/// Scans an active segment's file for valid batches and returns what it found with
/// the count of bytes past them that will be cut.
///
/// Only the file's data is read: the file is sparse past it (extended to the segment
/// size), and reading a hole through a map needs a free page on tmpfs (SIGBUS on a
/// full disk), so the scan stops at the first hole, which reads as zeros anyway.
fn scan_file(
    file: &File,
    path: &Path,
    base_offset: u64,
    config: &LogConfig,
) -> Result<(Scan, u64)> {
    let file_len = file.metadata().at(path)?.len();
    let data_end = data_end(file, file_len);
    if data_end == 0 {
        return Ok((scan(&[], base_offset, config.index_interval_bytes), 0));
    }
    // SAFETY: this process owns the partition directory; the map covers data only and
    // is dropped before the file is cut.
    let map = unsafe { MmapOptions::new().len(data_end as usize).map(file) }.at(path)?;
    let found = scan(&map, base_offset, config.index_interval_bytes);
    let dropped = match &found.stopped {
        Some(reason) if !matches!(reason, ScanStop::Preallocated) => {
            let end = map
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |p| p as u64 + 1);
            let dropped = end.saturating_sub(found.valid_bytes);
            tracing::warn!(path = %path.display(), position = found.valid_bytes, dropped_bytes = dropped, reason = %reason, "truncated a torn or corrupt log tail");
            dropped
        }
        _ => 0,
    };
    Ok((found, dropped))
}

/// Where a file's data ends: its first hole, or its length where the filesystem
/// cannot tell (then holes, if any, read as zeros without allocating).
pub(super) fn data_end(file: &File, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)).map_or(len, |hole| hole.min(len))
}

/// Removes the index files of the segment at `base_offset` that is opened as active.
///
/// Index files of an active segment are written only when it is sealed; any found
/// now are left from before a crash (or an older version) and are stale.
fn remove_stale_indexes(dir: &Path, base_offset: u64) -> Result<()> {
    for stale in [
        index_path(dir, base_offset),
        time_index_path(dir, base_offset),
    ] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&stale),
            _ => {}
        }
    }
    Ok(())
}
