//! One segment of a partition log: a `.log` file of batches and its two indexes.
//!
//! A segment is either active (the one being appended to) or sealed (closed, never
//! written again). The active segment's `.log` is mapped once at the segment size, so
//! readers never need a remap; `size` (an atomic, stored after the bytes are written)
//! tells readers how much of it holds complete batches, so they never see half a batch
//! and never touch bytes past what was written. The file is extended sparsely to the
//! segment size: bytes reach the disk only through `pwrite`, so a full disk is an
//! error of the append that met it (ENOSPC), never a fault on a mapped page. Sealing
//! cuts the file to its size, syncs it and writes the index files.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use memmap2::{Mmap, MmapOptions};

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::index::{ActiveIndex, OffsetEntry, SealedIndex, TimeEntry};
use crate::lock::recover;
use crate::records::DecodedBatch;

mod scan;

use scan::{Scan, ScanStop, scan};

/// Width of the zero-padded base offset in segment file names (as Kafka names them).
const NAME_DIGITS: usize = 20;

/// Path of the `.log` file of the segment starting at `base_offset`.
pub fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.log"))
}

/// Path of the offset index of the segment starting at `base_offset`.
pub fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.index"))
}

/// Path of the time index of the segment starting at `base_offset`.
pub fn time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.timeindex"))
}

/// Parses a segment file stem back into its base offset.
pub fn parse_base_offset(stem: &str) -> Option<u64> {
    (stem.len() == NAME_DIGITS && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

fn offset_key(e: &OffsetEntry) -> i64 {
    i64::from(e.relative_offset)
}

fn time_key(e: &TimeEntry) -> i64 {
    e.timestamp
}

/// Decides which batches get index entries; shared by appends and index rebuilds so
/// both produce the same index.
#[derive(Clone, Copy, Debug, Default)]
struct IndexCursor {
    last_offset_entry_position: u64,
    last_time_entry_position: Option<u64>,
    max_timestamp: Option<i64>,
}

impl IndexCursor {
    fn observe(
        &mut self,
        header: &BatchHeader,
        position: u64,
        base_offset: u64,
        interval: u32,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let relative_offset = (header.base_offset - base_offset) as u32;
        let offset_entry = (position - self.last_offset_entry_position >= u64::from(interval))
            .then(|| {
                self.last_offset_entry_position = position;
                OffsetEntry {
                    relative_offset,
                    position: position as u32,
                }
            });
        let increases = self
            .max_timestamp
            .is_none_or(|max| header.max_timestamp > max);
        let time_entry = (increases
            && self
                .last_time_entry_position
                .is_none_or(|last| position - last >= u64::from(interval)))
        .then(|| {
            self.last_time_entry_position = Some(position);
            TimeEntry {
                timestamp: header.max_timestamp,
                relative_offset,
            }
        });
        if increases {
            self.max_timestamp = Some(header.max_timestamp);
        }
        (offset_entry, time_entry)
    }
}

/// Finds where the batch holding `offset` starts, scanning forward from `position`.
///
/// Returns the byte position of the first batch whose last offset is at or past
/// `offset`, or `committed` if there is none.
fn seek(bytes: &[u8], mut position: usize, offset: u64, path: &Path) -> Result<usize> {
    while position < bytes.len() {
        let header = parse_stored(bytes, position, path)?;
        if header.last_offset() >= offset {
            return Ok(position);
        }
        position += header.total_bytes();
    }
    Ok(bytes.len())
}

/// Collects whole batches from `start` while they fit in `max_bytes` (at least one)
/// and lie below `end_offset`; verifies each one's CRC before it is served.
fn collect(
    bytes: &[u8],
    start: usize,
    max_bytes: usize,
    end_offset: u64,
    path: &Path,
) -> Result<std::ops::Range<usize>> {
    let mut end = start;
    while end < bytes.len() {
        let corrupt = |reason: String| Error::SegmentCorrupt {
            path: path.to_path_buf(),
            position: end as u64,
            reason,
        };
        let header = BatchHeader::parse(&bytes[end..]).map_err(|e| corrupt(e.to_string()))?;
        let total = header.total_bytes();
        if header.last_offset() >= end_offset || (end > start && end - start + total > max_bytes) {
            break;
        }
        if end + total > bytes.len() {
            return Err(corrupt("batch runs past the end of the segment".into()));
        }
        batch::check_crc(&bytes[end..end + total], &header).map_err(|e| corrupt(e.to_string()))?;
        end += total;
    }
    Ok(start..end)
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
fn data_end(file: &File, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)).map_or(len, |hole| hole.min(len))
}

/// Why sealing a segment failed.
#[derive(Debug)]
pub enum SealError {
    /// The segment's fsync failed: its bytes may not be on disk, and the log must stop.
    Sync(Error),
    /// Anything else (a full disk while writing the indexes); sealing may be retried.
    Other(Error),
}

impl From<Error> for SealError {
    fn from(e: Error) -> Self {
        SealError::Other(e)
    }
}

/// A segment being appended to.
pub struct ActiveSegment {
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

impl ActiveSegment {
    /// Opens (creating if missing) the segment at `base_offset` as the active one.
    ///
    /// Checks the existing bytes batch by batch; everything after the first torn,
    /// corrupt or out-of-sequence batch is cut off (the count of dropped bytes is
    /// returned). Both indexes are rebuilt, in memory, from the surviving batches.
    pub fn recover(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now_ms: i64,
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
        file.sync_all().at(&path)?;
        // Index files of an active segment are written only when it is sealed; any
        // found now are left from before a crash (or an older version) and are stale.
        for stale in [
            index_path(dir, base_offset),
            time_index_path(dir, base_offset),
        ] {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&stale),
                _ => {}
            }
        }
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
            indexes: RwLock::new(Some(ActiveIndexes {
                offsets,
                times,
                cursor: scan.cursor,
            })),
        };
        Ok((segment, dropped))
    }

    /// First offset of the segment.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset the next appended batch gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Bytes of complete batches.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Largest record timestamp, or `i64::MIN` when empty.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Wall-clock time the segment was started (for rolling by age).
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The `.log` file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if a batch of `len` bytes fits without exceeding the segment or its indexes.
    pub fn fits(&self, len: usize, config: &LogConfig) -> bool {
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
    pub fn append(&self, bytes: &[u8], header: &BatchHeader, interval: u32) -> Result<()> {
        self.append_parts(bytes, &[], header, interval)
    }

    /// Writes one batch given as its (stamped) head and the rest of its bytes.
    pub fn append_parts(
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
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().at(&self.path)
    }

    /// Closes the segment for writing: cuts the file to its size, syncs it, then
    /// writes both index files with their trailers.
    ///
    /// Readers that still hold this segment keep reading its committed bytes. If the
    /// index files cannot be written (a full disk), the segment stays active with its
    /// indexes and sealing can be tried again; a failed fsync is
    /// [`SealError::Sync`], after which nothing written may be trusted.
    pub fn seal(&self) -> std::result::Result<(), SealError> {
        let size = self.size();
        self.file.set_len(size).at(&self.path)?;
        self.file
            .sync_all()
            .at(&self.path)
            .map_err(SealError::Sync)?;
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
                .write_sealed(&index_path(dir, self.base_offset), size)?;
            indexes
                .times
                .write_sealed(&time_index_path(dir, self.base_offset), size)?;
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
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<std::ops::Range<usize>> {
        let bytes = &self.map[..self.size() as usize];
        let start = seek(
            bytes,
            self.index_lookup(offset).unwrap_or(0),
            offset,
            &self.path,
        )?;
        collect(bytes, start, max_bytes, end_offset, &self.path)
    }

    /// Base offset of the first batch whose max timestamp is at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let start_offset = {
            let guard = recover(self.indexes.read());
            guard
                .as_ref()
                .and_then(|i| i.times.lookup(timestamp.saturating_sub(1), time_key))
                .map_or(self.base_offset, |e| {
                    self.base_offset + u64::from(e.relative_offset)
                })
        };
        let bytes = &self.map[..self.size() as usize];
        let start = seek(
            bytes,
            self.index_lookup(start_offset).unwrap_or(0),
            start_offset,
            &self.path,
        )?;
        first_at_or_after(bytes, start, timestamp, &self.path)
    }

    /// The committed bytes of the segment.
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.size() as usize]
    }
}

fn first_at_or_after(
    bytes: &[u8],
    mut position: usize,
    timestamp: i64,
    path: &Path,
) -> Result<Option<u64>> {
    while position < bytes.len() {
        let header = parse_stored(bytes, position, path)?;
        if header.max_timestamp >= timestamp {
            let batch = &bytes[position..position + header.total_bytes()];
            if let Some(offset) = first_record_at_or_after(batch, &header, timestamp, path) {
                return Ok(Some(offset));
            }
        }
        position += header.total_bytes();
    }
    Ok(None)
}

/// Bound on a batch's decompressed records when searching it by time.
const TIME_SEARCH_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// Offset of the first record of `batch` whose timestamp is at or after `timestamp`
/// (as Kafka's offsetsForTimes answers; records in a batch need not be in time
/// order). A batch that cannot be decoded answers with its base offset: an earlier
/// answer only shows the reader a few more records.
fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    timestamp: i64,
    path: &Path,
) -> Option<u64> {
    let decoded = match DecodedBatch::new(batch, TIME_SEARCH_DECOMPRESSED_BYTES_MAX) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::warn!(path = %path.display(), base_offset = header.base_offset, error = %e, "cannot decode a batch searched by time; answering its base offset");
            return Some(header.base_offset);
        }
    };
    for record in decoded.records() {
        match record {
            Ok(record) if record.timestamp >= timestamp => return Some(record.offset),
            Ok(_) => {}
            Err(_) => return Some(header.base_offset),
        }
    }
    None
}

/// Parses a stored batch header; damage is the segment's, never the caller's request.
fn parse_stored(bytes: &[u8], position: usize, path: &Path) -> Result<BatchHeader> {
    let header = BatchHeader::parse(&bytes[position..]).map_err(|e| Error::SegmentCorrupt {
        path: path.to_path_buf(),
        position: position as u64,
        reason: e.to_string(),
    })?;
    if header.total_bytes() > bytes.len() - position {
        return Err(Error::SegmentCorrupt {
            path: path.to_path_buf(),
            position: position as u64,
            reason: "batch runs past the end of the segment".into(),
        });
    }
    Ok(header)
}

/// A closed segment: read-only, with checked indexes.
pub struct SealedSegment {
    base_offset: u64,
    next_offset: u64,
    size: u64,
    max_timestamp: i64,
    path: PathBuf,
    map: Option<Mmap>,
    offsets: SealedIndex<OffsetEntry>,
    times: SealedIndex<TimeEntry>,
}

impl SealedSegment {
    /// Opens a sealed segment, rebuilding its indexes if they are missing or damaged.
    ///
    /// Fails with [`Error::SegmentCorrupt`] if its batches do not check out (a sealed
    /// segment was synced when it was closed, so damage there is never a torn write).
    pub fn open(dir: &Path, base_offset: u64, config: &LogConfig) -> Result<Self> {
        let path = log_path(dir, base_offset);
        let file = File::open(&path).at(&path)?;
        let size = file.metadata().at(&path)?.len();
        // SAFETY: sealed segments are never written again while the log is open.
        let map = if size == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file) }.at(&path)?)
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let corrupt = |position: u64, reason: String| Error::SegmentCorrupt {
            path: path.clone(),
            position,
            reason,
        };
        let indexes = (
            SealedIndex::<OffsetEntry>::open(&index_path(dir, base_offset), size)?,
            SealedIndex::<TimeEntry>::open(&time_index_path(dir, base_offset), size)?,
        );
        let (offsets, times, next_offset, max_timestamp) = match indexes {
            (Some(offsets), Some(times)) => {
                // Trust the checked index and verify only the last batches up to the end.
                let start = offsets
                    .lookup(i64::MAX, offset_key)
                    .map_or(0, |e| e.position as usize);
                let expected = offsets
                    .lookup(i64::MAX, offset_key)
                    .map_or(base_offset, |e| base_offset + u64::from(e.relative_offset));
                let tail = scan(&bytes[start.min(bytes.len())..], expected, u32::MAX);
                if let Some(reason) = tail.stopped {
                    return Err(corrupt(start as u64 + tail.valid_bytes, reason.to_string()));
                }
                let max = times
                    .lookup(i64::MAX, time_key)
                    .map_or(i64::MIN, |e| e.timestamp);
                (
                    offsets,
                    times,
                    tail.next_offset,
                    max.max(tail.max_timestamp.unwrap_or(i64::MIN)),
                )
            }
            _ => {
                let full = scan(bytes, base_offset, config.index_interval_bytes);
                if let Some(reason) = full.stopped {
                    return Err(corrupt(full.valid_bytes, reason.to_string()));
                }
                tracing::info!(path = %path.display(), "rebuilt indexes of sealed segment");
                let mut time_entries = full.time_entries;
                let max = full.max_timestamp.unwrap_or(i64::MIN);
                if size > 0 && time_entries.last().is_none_or(|l| l.timestamp < max) {
                    let last = full.last_batch_offset.unwrap_or(base_offset);
                    time_entries.push(TimeEntry {
                        timestamp: max,
                        relative_offset: (last - base_offset) as u32,
                    });
                }
                let offsets =
                    SealedIndex::write(&index_path(dir, base_offset), &full.offset_entries, size);
                let times =
                    SealedIndex::write(&time_index_path(dir, base_offset), &time_entries, size);
                (offsets, times, full.next_offset, max)
            }
        };
        Ok(SealedSegment {
            base_offset,
            next_offset,
            size,
            max_timestamp,
            path,
            map,
            offsets,
            times,
        })
    }

    /// First offset of the segment.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset after the segment's last batch.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Size of the `.log` file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The `.log` file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All bytes of the segment.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn position_of(&self, offset: u64) -> usize {
        let relative = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as i64;
        self.offsets
            .lookup(relative, offset_key)
            .map_or(0, |e| e.position as usize)
    }

    /// Reads whole batches from the one holding `offset`, below `end_offset`.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<std::ops::Range<usize>> {
        let start = seek(self.bytes(), self.position_of(offset), offset, &self.path)?;
        collect(self.bytes(), start, max_bytes, end_offset, &self.path)
    }

    /// Base offset of the first batch whose max timestamp is at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let start_offset = self
            .times
            .lookup(timestamp.saturating_sub(1), time_key)
            .map_or(self.base_offset, |e| {
                self.base_offset + u64::from(e.relative_offset)
            });
        let start = seek(
            self.bytes(),
            self.position_of(start_offset),
            start_offset,
            &self.path,
        )?;
        first_at_or_after(self.bytes(), start, timestamp, &self.path)
    }

    /// Position of the batch holding `offset` (for truncation inside this segment).
    pub fn position_for_truncation(&self, offset: u64) -> Result<usize> {
        seek(self.bytes(), self.position_of(offset), offset, &self.path)
    }

    /// Offset entries of the index (kept for a reopen as active).
    pub fn offset_entries(&self) -> Vec<OffsetEntry> {
        self.offsets.entries()
    }
}

/// A segment of either kind, held by a reader for as long as it uses the bytes.
#[derive(Clone)]
pub enum SegmentRef {
    /// The active segment.
    Active(Arc<ActiveSegment>),
    /// A sealed segment.
    Sealed(Arc<SealedSegment>),
}

impl SegmentRef {
    /// The segment's mapped bytes (committed part only for the active segment).
    pub fn bytes(&self) -> &[u8] {
        match self {
            SegmentRef::Active(s) => s.bytes(),
            SegmentRef::Sealed(s) => s.bytes(),
        }
    }
}
