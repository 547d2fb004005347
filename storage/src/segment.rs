//! One segment of a partition log: a `.log` file of batches and its two indexes.
//!
//! A segment is either active (the one being appended to) or sealed (closed, never
//! written again). The active segment's `.log` is mapped once at the segment size, so
//! readers never need a remap; `size` (an atomic, stored after the bytes are written)
//! tells readers how much of it holds complete batches, so they never see half a batch
//! and never touch bytes past what was written. The file is extended sparsely to the
//! segment size: bytes reach the disk only through `pwrite`, so a full disk is an
//! error of the append that met it (ENOSPC), never a fault on a mapped page. Sealing
//! cuts the file to its size and writes the index files; they are synced then
//! (fsync `always`) or by the log's background flush.
//!
//! - `active`: the segment being appended to, and its recovery after a crash.
//! - `sealed`: a closed segment, its indexes checked or rebuilt on open.
//! - `read`: finding and collecting batches in a segment's bytes, by offset or time.
//! - `scan`: the batch-by-batch check behind recovery and index rebuilds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::BatchHeader;
use crate::error::Error;
use crate::index::{OffsetEntry, TimeEntry};

mod active;
mod read;
mod scan;
mod sealed;

pub(crate) use active::ActiveSegment;
pub(crate) use sealed::SealedSegment;

/// Width of the zero-padded base offset in segment file names (as Kafka names them).
const NAME_DIGITS: usize = 20;

/// Path of the `.log` file of the segment starting at `base_offset`.
pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.log"))
}

/// Path of the offset index of the segment starting at `base_offset`.
pub(crate) fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.index"))
}

/// Path of the time index of the segment starting at `base_offset`.
pub(crate) fn time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.timeindex"))
}

/// Parses a segment file stem back into its base offset.
pub(crate) fn parse_base_offset(stem: &str) -> Option<u64> {
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

/// Why sealing a segment failed.
#[derive(Debug)]
pub(crate) enum SealError {
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

/// A segment of either kind, held by a reader for as long as it uses the bytes.
#[derive(Clone)]
pub(crate) enum SegmentRef {
    /// The active segment.
    Active(Arc<ActiveSegment>),
    /// A sealed segment.
    Sealed(Arc<SealedSegment>),
}

impl SegmentRef {
    /// The segment's mapped bytes (committed part only for the active segment).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            SegmentRef::Active(s) => s.bytes(),
            SegmentRef::Sealed(s) => s.bytes(),
        }
    }
}
