//! The batch-by-batch scan of a segment's bytes that recovery and index rebuilds run,
//! and why it stops.

use crate::batch::{self, BatchHeader};
use crate::error::Error;
use crate::index::{OffsetEntry, TimeEntry};

use super::IndexCursor;

/// Why a scan stopped before the end of a segment's bytes: at the preallocated end of
/// an active segment (where a scan is meant to stop), or at a batch that is not valid.
#[derive(Debug, thiserror::Error)]
pub(super) enum ScanStop {
    /// The zero-filled, preallocated end of an active segment: nothing to cut.
    #[error("preallocated zeros")]
    Preallocated,
    /// The batch header or CRC does not check out.
    #[error(transparent)]
    Invalid(Error),
    /// The batch claims more bytes than the segment holds after it (a torn write).
    #[error("torn batch: {claimed} bytes claimed, {present} present")]
    Torn {
        /// Bytes the batch header claims.
        claimed: usize,
        /// Bytes left in the segment.
        present: usize,
    },
    /// The batch does not continue the offsets of the one before it.
    #[error("batch base offset {found} where {expected} was expected")]
    OffsetGap {
        /// The batch's base offset.
        found: u64,
        /// The offset the previous batch ends at.
        expected: u64,
    },
}

/// What a scan of a segment's batches found.
pub(super) struct Scan {
    /// Bytes of complete, valid, contiguous batches from the start position.
    pub(super) valid_bytes: u64,
    /// Offset after the last valid batch.
    pub(super) next_offset: u64,
    /// Largest timestamp seen, if any batch was.
    pub(super) max_timestamp: Option<i64>,
    /// Base offset of the last valid batch.
    pub(super) last_batch_offset: Option<u64>,
    pub(super) offset_entries: Vec<OffsetEntry>,
    pub(super) time_entries: Vec<TimeEntry>,
    /// Why the scan stopped before the end of the bytes, if it did.
    pub(super) stopped: Option<ScanStop>,
    pub(super) cursor: IndexCursor,
}

/// Walks batches from position 0, checking each header, CRC and offset continuity.
pub(super) fn scan(bytes: &[u8], base_offset: u64, interval: u32) -> Scan {
    let mut out = Scan {
        valid_bytes: 0,
        next_offset: base_offset,
        max_timestamp: None,
        last_batch_offset: None,
        offset_entries: Vec::new(),
        time_entries: Vec::new(),
        stopped: None,
        cursor: IndexCursor::default(),
    };
    let mut position = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let header = match check_batch_at(rest, out.next_offset) {
            Ok(header) => header,
            Err(reason) => {
                out.stopped = Some(reason);
                break;
            }
        };
        let (offset_entry, time_entry) =
            out.cursor
                .observe(&header, position as u64, base_offset, interval);
        out.offset_entries.extend(offset_entry);
        out.time_entries.extend(time_entry);
        out.max_timestamp = Some(
            out.max_timestamp
                .map_or(header.max_timestamp, |m| m.max(header.max_timestamp)),
        );
        out.next_offset = header.next_offset();
        out.last_batch_offset = Some(header.base_offset);
        position += header.total_bytes();
        out.valid_bytes = position as u64;
    }
    out
}

/// Checks the batch at the front of `rest`: header, length, CRC, expected base offset.
fn check_batch_at(rest: &[u8], expected_offset: u64) -> std::result::Result<BatchHeader, ScanStop> {
    if rest.len() >= batch::LOG_OVERHEAD && rest[..batch::LOG_OVERHEAD].iter().all(|&b| b == 0) {
        return Err(ScanStop::Preallocated);
    }
    let header = BatchHeader::parse(rest).map_err(ScanStop::Invalid)?;
    if header.total_bytes() > rest.len() {
        return Err(ScanStop::Torn {
            claimed: header.total_bytes(),
            present: rest.len(),
        });
    }
    batch::check_crc(&rest[..header.total_bytes()], &header).map_err(ScanStop::Invalid)?;
    if header.base_offset != expected_offset {
        return Err(ScanStop::OffsetGap {
            found: header.base_offset,
            expected: expected_offset,
        });
    }
    Ok(header)
}
