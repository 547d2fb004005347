//! Reading a segment's bytes: the batch holding an offset, whole batches up to a byte
//! budget (each CRC checked before it is first served), and the first record at a
//! time.
//!
//! Active and sealed segments share these; they differ only in how they find a
//! starting position (an in-memory or an mmap'd index).

use std::path::Path;

use crate::batch::{self, BatchHeader};
use crate::error::{Error, Result};
use crate::records::DecodedBatch;

/// Finds where the batch holding `offset` starts, scanning forward from `position`.
///
/// Returns the byte position of the first batch whose last offset is at or past
/// `offset`, or `committed` if there is none.
pub(super) fn seek(bytes: &[u8], mut position: usize, offset: u64, path: &Path) -> Result<usize> {
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
/// and lie below `end_offset`; verifies the CRC of each one that does not end at or
/// below `verified_below` (bytes this process already checked) before it is served.
pub(super) fn collect(
    bytes: &[u8],
    start: usize,
    max_bytes: usize,
    end_offset: u64,
    path: &Path,
    verified_below: usize,
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
        if end + total > verified_below {
            batch::check_crc(&bytes[end..end + total], &header)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        end += total;
    }
    Ok(start..end)
}

pub(super) fn first_at_or_after(
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
