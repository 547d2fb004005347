//! The record walk behind `batch::validate`: proves a producer's records decode before
//! the broker acknowledges them.
//!
//! The CRC only proves the bytes are the ones the producer sealed, not that they are
//! records: a batch claiming gzip whose body is not gzip, or a `record_count` that
//! disagrees with the records inside, passes it, and every consumer of the partition
//! then fails on it forever. Like Kafka's broker (`LogValidator`, CORRUPT_MESSAGE),
//! the leader therefore decompresses the records section and walks every record once
//! before anything is written. The walk is stricter than the decoder in `records.rs`
//! (offset deltas must run exactly 0..n-1, no byte may follow the last record), so a
//! batch it accepts always decodes in full.
//!
//! Cost: one pass over the records, no allocation per record. A compressed batch is
//! decompressed into one buffer, dropped when the walk ends. Errors name the first
//! problem and the record's index in the batch; only they allocate.
//!
//! Not checked, as Kafka does not check them either: record attributes (unused in v2,
//! the decoder ignores them) and timestamps (any delta decodes; Kafka rewrites the
//! batch's max timestamp rather than comparing it with the records').

use crate::batch::{BatchHeader, Compression};
use crate::compression;
use crate::error::{Error, Result};
use crate::records::DECOMPRESSED_BATCH_BYTES_MAX;
use crate::varint::{get_varint, get_varlong};

mod fault;

use fault::RecordFault;

/// How many times its size a compressed batch may expand to.
///
/// Producers that size batches by their compressed estimate (Kafka's do) send records
/// several times the batch limit: text and JSON reach 5-10x under zstd and repetitive
/// logs a few dozen. 64x accepts those and matches what consumers allow at the default
/// 1 MiB batch limit (`DECOMPRESSED_BATCH_BYTES_MAX`), while bounding what one small
/// malicious batch can make the broker allocate.
pub(crate) const DECOMPRESSION_RATIO_MAX: usize = 64;

/// Bytes a batch's records may decompress to on produce: the batch limit times
/// [`DECOMPRESSION_RATIO_MAX`], never more than consumers accept, so nothing is
/// acknowledged that a consumer would refuse to expand.
pub(crate) fn decompressed_bytes_max(max_batch_bytes: usize) -> usize {
    max_batch_bytes
        .saturating_mul(DECOMPRESSION_RATIO_MAX)
        .min(DECOMPRESSED_BATCH_BYTES_MAX)
}

/// Checks that the records section `body` (the batch after its 61-byte header) holds
/// exactly the records `header` announces, each well formed.
///
/// Compressed sections are decompressed first, bounded by
/// [`decompressed_bytes_max`]`(max_batch_bytes)`. Checks, per record: the length fits
/// what remains; the offset delta equals the record's index; key and value lengths are
/// -1 or fit the record; the header count fits the record; header keys are present and
/// UTF-8; header values are -1 or fit; nothing is left over inside the record. Then: no
/// bytes follow the last record, the count matches `record_count`, and the last
/// record's offset delta is `last_offset_delta`.
pub(crate) fn validate_records(
    header: &BatchHeader,
    body: &[u8],
    max_batch_bytes: usize,
) -> Result<()> {
    match header.compression()? {
        Compression::None => walk(header, body),
        codec => {
            let limit = decompressed_bytes_max(max_batch_bytes);
            let records = compression::decompress(codec, body, limit)?;
            walk(header, &records)
        }
    }
}

/// Walks the uncompressed records section, counting records and checking each.
fn walk(header: &BatchHeader, records: &[u8]) -> Result<()> {
    let mut rest = records;
    let mut index: u32 = 0;
    // Bytes left once the counted records are walked: trailing garbage if they are not
    // more records.
    let mut tail_bytes = 0;
    while !rest.is_empty() {
        if index == header.record_count {
            tail_bytes = rest.len();
        }
        if let Err(reason) = walk_record(&mut rest, index) {
            if index >= header.record_count {
                return Err(Error::malformed(format!(
                    "{tail_bytes} bytes follow the last of the {} records the header counts",
                    header.record_count
                )));
            }
            return Err(Error::malformed(format!("record {index}: {reason}")));
        }
        // Each record takes at least two bytes, so the index cannot overflow.
        index += 1;
    }
    if index != header.record_count {
        return Err(Error::malformed(format!(
            "record count {} in the header but the records section holds {index} records",
            header.record_count
        )));
    }
    let Some(last_delta) = index.checked_sub(1) else {
        return Err(Error::malformed("batch holds no records"));
    };
    if header.last_offset_delta != last_delta {
        return Err(Error::malformed(format!(
            "last offset delta {} but the last record's offset delta is {last_delta}",
            header.last_offset_delta
        )));
    }
    Ok(())
}

/// Checks the record at the front of `input` and advances past it.
fn walk_record(input: &mut &[u8], index: u32) -> Result<(), RecordFault> {
    let length = varint(input, "length")?;
    let Ok(length) = usize::try_from(length) else {
        return Err(RecordFault::NegativeLength(length));
    };
    if length > input.len() {
        return Err(RecordFault::PastSection {
            length,
            remain: input.len(),
        });
    }
    let (mut body, rest) = input.split_at(length);
    *input = rest;
    let Some((_attributes, after)) = body.split_first() else {
        return Err(RecordFault::NoAttributes);
    };
    body = after;
    varlong(&mut body, "timestamp delta")?;
    let offset_delta = varint(&mut body, "offset delta")?;
    if i64::from(offset_delta) != i64::from(index) {
        return Err(RecordFault::OffsetDelta {
            got: offset_delta,
            expected: index,
        });
    }
    nullable(&mut body, "key")?;
    nullable(&mut body, "value")?;
    walk_headers(&mut body)?;
    if !body.is_empty() {
        return Err(RecordFault::Trailing {
            length,
            left: body.len(),
        });
    }
    Ok(())
}

/// Checks a record's header count and headers, advancing past them.
fn walk_headers(body: &mut &[u8]) -> Result<(), RecordFault> {
    let count = varint(body, "header count")?;
    let Ok(count) = usize::try_from(count) else {
        return Err(RecordFault::NegativeHeaderCount(count));
    };
    // Each header takes at least two bytes (its key length and its value length).
    if count > body.len() / 2 {
        return Err(RecordFault::TooManyHeaders {
            count,
            left: body.len(),
        });
    }
    for index in 0..count {
        let in_header = |fault| RecordFault::Header {
            index,
            fault: Box::new(fault),
        };
        let Some(key) = nullable(body, "key").map_err(in_header)? else {
            return Err(RecordFault::NullHeaderKey(index));
        };
        if std::str::from_utf8(key).is_err() {
            return Err(RecordFault::HeaderKeyNotUtf8(index));
        }
        nullable(body, "value").map_err(in_header)?;
    }
    Ok(())
}

/// Splits a length-prefixed field (-1 for null) off the front of `body`.
fn nullable<'a>(body: &mut &'a [u8], field: &'static str) -> Result<Option<&'a [u8]>, RecordFault> {
    let length = varint(body, field)?;
    if length == -1 {
        return Ok(None);
    }
    let Ok(length) = usize::try_from(length) else {
        return Err(RecordFault::NegativeField { field, length });
    };
    if length > body.len() {
        return Err(RecordFault::FieldPastEnd {
            field,
            length,
            remain: body.len(),
        });
    }
    let (bytes, rest) = body.split_at(length);
    *body = rest;
    Ok(Some(bytes))
}

#[inline]
fn varint(input: &mut &[u8], field: &'static str) -> Result<i32, RecordFault> {
    get_varint(input).map_err(|e| fault(field, e))
}

#[inline]
fn varlong(input: &mut &[u8], field: &'static str) -> Result<i64, RecordFault> {
    get_varlong(input).map_err(|e| fault(field, e))
}

/// The fault of a varint error, named after its field.
#[cold]
fn fault(field: &'static str, error: Error) -> RecordFault {
    RecordFault::Varint {
        field,
        error: Box::new(error),
    }
}

#[cfg(test)]
mod tests;
