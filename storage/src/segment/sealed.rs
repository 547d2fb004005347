//! A sealed segment: closed, read-only, mapped whole, with indexes checked on open
//! (or rebuilt from the batches when missing or damaged).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::Mmap;

use super::active::data_end;
use super::read::{collect, first_at_or_after, seek};
use super::scan::{ScanStop, scan};
use super::{index_path, log_path, offset_key, time_index_path, time_key};
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::index::{OffsetEntry, SealedIndex, TimeEntry};

/// A closed segment: read-only, with checked indexes.
pub(crate) struct SealedSegment {
    base_offset: u64,
    next_offset: u64,
    size: u64,
    max_timestamp: i64,
    path: PathBuf,
    map: Option<Mmap>,
    offsets: SealedIndex<OffsetEntry>,
    times: SealedIndex<TimeEntry>,
    /// Every batch below this position had its CRC checked by this process (a full
    /// scan, its appends while it was active, or an earlier read), so reads serve
    /// those without checking again; a consumer and a follower check each batch too.
    verified_below: AtomicUsize,
}

impl SealedSegment {
    /// Opens a sealed segment, rebuilding its indexes if they are missing or damaged.
    ///
    /// Fails with [`Error::SegmentCorrupt`] if its batches do not check out (a sealed
    /// segment was synced when it was closed, so damage there is never a torn write).
    pub(crate) fn open(dir: &Path, base_offset: u64, config: &LogConfig) -> Result<Self> {
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
        let indexes = (
            SealedIndex::<OffsetEntry>::open(&index_path(dir, base_offset), size)?,
            SealedIndex::<TimeEntry>::open(&time_index_path(dir, base_offset), size)?,
        );
        let Indexed {
            offsets,
            times,
            next_offset,
            max_timestamp,
            verified_below,
        } = match indexes {
            (Some(offsets), Some(times)) => verify_tail(bytes, base_offset, offsets, times, &path)?,
            _ => rebuild_indexes(dir, bytes, base_offset, config, &path)?,
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
            verified_below: AtomicUsize::new(verified_below),
        })
    }

    /// Notes that every batch of the segment was checked (it was appended to as the
    /// active segment in this process, or scanned whole).
    pub(crate) fn mark_verified(&self) {
        self.verified_below
            .store(self.bytes().len(), Ordering::Release);
    }

    /// Opens a sealed segment that may not have reached the disk whole (it was sealed
    /// after the log's recovery point, then the machine stopped): every batch is
    /// checked first, and `None` means one is torn, corrupt or missing, so the caller
    /// cuts the log there instead of failing the open.
    pub(crate) fn open_checked(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
    ) -> Result<Option<Self>> {
        let path = log_path(dir, base_offset);
        let file = File::open(&path).at(&path)?;
        let size = file.metadata().at(&path)?.len();
        // Pages that never reached the disk read back as a hole: never map one.
        if size == 0 || data_end(&file, size) < size {
            return Ok(None);
        }
        // SAFETY: the file has no hole and is not written while the log is opening.
        let map = unsafe { Mmap::map(&file) }.at(&path)?;
        let found = scan(&map, base_offset, u32::MAX);
        if found.stopped.is_some() || found.valid_bytes != size {
            return Ok(None);
        }
        drop(map);
        let segment = Self::open(dir, base_offset, config)?;
        segment.mark_verified();
        Ok(Some(segment))
    }

    /// Forces the segment's file and its index files to disk: the background flush of
    /// a segment sealed without syncing. A file already deleted (retention, a deleted
    /// topic) needs nothing.
    pub(crate) fn sync_files(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for path in [
            self.path.clone(),
            index_path(dir, self.base_offset),
            time_index_path(dir, self.base_offset),
        ] {
            match File::open(&path) {
                Ok(file) => file.sync_all().at(&path)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&path),
            }
        }
        Ok(())
    }

    /// First offset of the segment.
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset after the segment's last batch.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Size of the `.log` file.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The `.log` file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// All bytes of the segment.
    pub(crate) fn bytes(&self) -> &[u8] {
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
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<std::ops::Range<usize>> {
        let start = seek(self.bytes(), self.position_of(offset), offset, &self.path)?;
        let verified = self.verified_below.load(Ordering::Acquire);
        let range = collect(
            self.bytes(),
            start,
            max_bytes,
            end_offset,
            &self.path,
            verified,
        )?;
        // Checked from where the checked prefix ends: a reader going front to back
        // checks each batch once.
        if range.start <= verified {
            self.verified_below.fetch_max(range.end, Ordering::AcqRel);
        }
        Ok(range)
    }

    /// Base offset of the first batch whose max timestamp is at or after `timestamp`.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
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
    pub(crate) fn position_for_truncation(&self, offset: u64) -> Result<usize> {
        seek(self.bytes(), self.position_of(offset), offset, &self.path)
    }

    /// Offset entries of the index (kept for a reopen as active).
    pub(crate) fn offset_entries(&self) -> Vec<OffsetEntry> {
        self.offsets.entries()
    }
}

/// A sealed segment's indexes, with what they and its batches say of its end.
struct Indexed {
    offsets: SealedIndex<OffsetEntry>,
    times: SealedIndex<TimeEntry>,
    next_offset: u64,
    max_timestamp: i64,
    /// Where the batches known good by the open's scan end (all of them after a full
    /// scan, none when only the tail was scanned).
    verified_below: usize,
}

/// Trusts checked indexes and verifies only the batches from the last offset entry to
/// the end of `bytes`.
fn verify_tail(
    bytes: &[u8],
    base_offset: u64,
    offsets: SealedIndex<OffsetEntry>,
    times: SealedIndex<TimeEntry>,
    path: &Path,
) -> Result<Indexed> {
    let last = offsets.lookup(i64::MAX, offset_key);
    let start = last.map_or(0, |e| e.position as usize);
    let expected = last.map_or(base_offset, |e| base_offset + u64::from(e.relative_offset));
    let tail = scan(&bytes[start.min(bytes.len())..], expected, u32::MAX);
    if let Some(reason) = tail.stopped {
        return Err(corrupt(path, start as u64 + tail.valid_bytes, &reason));
    }
    let max = times
        .lookup(i64::MAX, time_key)
        .map_or(i64::MIN, |e| e.timestamp);
    Ok(Indexed {
        offsets,
        times,
        next_offset: tail.next_offset,
        max_timestamp: max.max(tail.max_timestamp.unwrap_or(i64::MIN)),
        verified_below: 0,
    })
}

/// Checks every batch of `bytes` and writes both index files anew (they were missing
/// or damaged), the time index ending with the segment's max timestamp.
fn rebuild_indexes(
    dir: &Path,
    bytes: &[u8],
    base_offset: u64,
    config: &LogConfig,
    path: &Path,
) -> Result<Indexed> {
    let size = bytes.len() as u64;
    let full = scan(bytes, base_offset, config.index_interval_bytes);
    if let Some(reason) = full.stopped {
        return Err(corrupt(path, full.valid_bytes, &reason));
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
    Ok(Indexed {
        offsets: SealedIndex::write(&index_path(dir, base_offset), &full.offset_entries, size),
        times: SealedIndex::write(&time_index_path(dir, base_offset), &time_entries, size),
        next_offset: full.next_offset,
        max_timestamp: max,
        verified_below: bytes.len(),
    })
}

/// A sealed segment whose batches do not check out at `position`.
fn corrupt(path: &Path, position: u64, reason: &ScanStop) -> Error {
    Error::SegmentCorrupt {
        path: path.to_path_buf(),
        position,
        reason: reason.to_string(),
    }
}
