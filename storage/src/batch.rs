//! The record batch: Kafka's RecordBatch v2 (magic 2), byte for byte.
//!
//! A batch is encoded once by the producer and then travels as opaque bytes: the
//! broker validates it, stamps the base offset and leader epoch (both outside the
//! CRC), stores it and serves the same bytes to followers and consumers.
//!
//! Layout (all integers big-endian; offsets are byte positions in the batch):
//!
//! ```text
//!  0  base_offset            i64   offset of the first record (stamped by the leader)
//!  8  batch_length           i32   bytes after this field (total length - 12)
//! 12  partition_leader_epoch i32   epoch of the leader that wrote it (stamped)
//! 16  magic                  i8    always 2
//! 17  crc                    u32   CRC-32C (Castagnoli) of bytes 21..end
//! 21  attributes             i16   bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//! 23  last_offset_delta      i32   record_count - 1 for batches we accept
//! 27  base_timestamp         i64   ms since the epoch
//! 35  max_timestamp          i64   ms since the epoch
//! 43  producer_id            i64   -1 without idempotence
//! 51  producer_epoch         i16
//! 53  base_sequence          i32
//! 57  record_count           i32
//! 61  records                ...   varint-encoded records, compressed as a whole per codec
//! ```
//!
//! The CRC covers everything from the attributes to the end, so the length, the
//! leader epoch and the base offset can change without recomputing it, while the
//! length is still checked: a wrong length moves the CRC window and fails it.

use crate::error::{Error, Result};
use crate::validate;

/// Size of the fixed batch header; records start here.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s coverage starts (base offset + the length itself).
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format version we read and write.
pub(crate) const MAGIC: i8 = 2;

pub(crate) const BASE_OFFSET: usize = 0;
pub(crate) const BATCH_LENGTH: usize = 8;
pub(crate) const LEADER_EPOCH: usize = 12;
pub(crate) const MAGIC_POS: usize = 16;
pub(crate) const CRC: usize = 17;
pub(crate) const ATTRIBUTES: usize = 21;
pub(crate) const LAST_OFFSET_DELTA: usize = 23;
pub(crate) const BASE_TIMESTAMP: usize = 27;
pub(crate) const MAX_TIMESTAMP: usize = 35;
pub(crate) const PRODUCER_ID: usize = 43;
pub(crate) const PRODUCER_EPOCH: usize = 51;
pub(crate) const BASE_SEQUENCE: usize = 53;
pub(crate) const RECORD_COUNT: usize = 57;

const _: () = assert!(RECORD_COUNT + 4 == HEADER_BYTES);
const _: () = assert!(CRC + 4 == ATTRIBUTES);

/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;
/// Records a compressed byte may stand for at most (zstd of identical tiny records
/// reaches a few hundred); bounds what a small compressed batch can claim.
const COMPRESSED_RECORDS_PER_BYTE_MAX: usize = 1024;

/// Attribute bit: the batch is part of a transaction (rejected: no transactions yet).
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit: the batch is a control batch (rejected from producers).
const ATTR_CONTROL: i16 = 1 << 5;

/// Compression codec of a batch's records, numbered as Kafka numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// Gzip (deflate with gzip framing).
    Gzip,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard frame format.
    Zstd,
}

impl Compression {
    /// Kafka's codec id in attribute bits 0-2.
    pub(crate) fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Parses a codec id; snappy (2) and unknown ids are unsupported.
    pub(crate) fn from_id(id: u8) -> Result<Self> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(Error::UnsupportedCompression { codec }),
        }
    }
}

/// A compression name that is none of the codecs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: expected none, gzip, lz4 or zstd")]
pub struct UnknownCompression(pub String);

impl std::str::FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(UnknownCompression(other.to_string())),
        }
    }
}

/// The fixed header of a batch, parsed. Cheap to copy; holds no record data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes after the length field; the whole batch is `batch_length + 12` bytes.
    pub batch_length: u32,
    /// Epoch of the leader that appended the batch.
    pub leader_epoch: i32,
    /// CRC-32C stored in the batch.
    pub crc: u32,
    /// Raw attribute bits.
    pub attributes: i16,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: u32,
    /// Timestamp of the first record, ms.
    pub base_timestamp: i64,
    /// Largest record timestamp, ms.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: u32,
}

impl BatchHeader {
    /// Total size of the batch in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Offset right after the batch: the log end offset once it is appended.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Compression codec of the records.
    pub fn compression(&self) -> Result<Compression> {
        Compression::from_id((self.attributes & 0x7) as u8)
    }

    /// Parses the header of the batch at the start of `bytes` without checking the CRC.
    ///
    /// Checks that the header is complete, the magic is 2 and the length is plausible;
    /// the body may be shorter than the header claims (that is for the caller to check).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader> {
        if bytes.len() < HEADER_BYTES {
            return Err(Error::malformed(format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte batch header",
                bytes.len()
            )));
        }
        let magic = bytes[MAGIC_POS] as i8;
        if magic != MAGIC {
            return Err(Error::malformed(format!(
                "magic {magic}, only magic {MAGIC} (RecordBatch v2) is supported"
            )));
        }
        let batch_length = i32_at(bytes, BATCH_LENGTH);
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(Error::malformed(format!(
                "batch length {batch_length} is shorter than the header"
            )));
        }
        let base_offset = i64_at(bytes, BASE_OFFSET);
        let last_offset_delta = i32_at(bytes, LAST_OFFSET_DELTA);
        let record_count = i32_at(bytes, RECORD_COUNT);
        if base_offset < 0 || last_offset_delta < 0 || record_count < 0 {
            return Err(Error::malformed(
                "negative base offset, last offset delta or record count",
            ));
        }
        Ok(BatchHeader {
            base_offset: base_offset as u64,
            batch_length: batch_length as u32,
            leader_epoch: i32_at(bytes, LEADER_EPOCH),
            crc: u32_at(bytes, CRC),
            attributes: i16_at(bytes, ATTRIBUTES),
            last_offset_delta: last_offset_delta as u32,
            base_timestamp: i64_at(bytes, BASE_TIMESTAMP),
            max_timestamp: i64_at(bytes, MAX_TIMESTAMP),
            producer_id: i64_at(bytes, PRODUCER_ID),
            producer_epoch: i16_at(bytes, PRODUCER_EPOCH),
            base_sequence: i32_at(bytes, BASE_SEQUENCE),
            record_count: record_count as u32,
        })
    }
}

/// Checks one complete batch (exactly `bytes`) as a producer sent it.
///
/// Verifies the header, the exact length, the CRC, the codec and the record count;
/// rejects transactional and control batches, which this broker does not accept from
/// producers. Then walks every record (`validate::validate_records`, decompressing
/// first if needed): the CRC only proves these are the bytes the producer sealed, not
/// that consumers can decode them. That walk is one pass with no allocation per record
/// (one per compressed batch); replicated batches skip it, their leader did it.
pub fn validate(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader> {
    if bytes.len() > max_batch_bytes {
        return Err(Error::BatchTooLarge {
            size: bytes.len(),
            limit: max_batch_bytes,
        });
    }
    let header = BatchHeader::parse(bytes)?;
    if header.total_bytes() != bytes.len() {
        return Err(Error::malformed(format!(
            "batch length field says {} bytes but {} were given",
            header.total_bytes(),
            bytes.len()
        )));
    }
    check_crc(bytes, &header)?;
    header.compression()?;
    if header.record_count == 0 {
        return Err(Error::malformed("batch holds no records"));
    }
    // A count the body cannot hold would move the log end by billions of offsets.
    let body = bytes.len() - HEADER_BYTES;
    let max_records = match header.compression()? {
        Compression::None => body / RECORD_BYTES_MIN,
        _ => body.saturating_mul(COMPRESSED_RECORDS_PER_BYTE_MAX),
    };
    if header.record_count as usize > max_records {
        return Err(Error::malformed(format!(
            "record count {} is more than {body} bytes of records can hold",
            header.record_count
        )));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(Error::malformed(format!(
            "last offset delta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    if header.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
        return Err(Error::malformed(
            "transactional and control batches are not supported",
        ));
    }
    // Last: the only check whose cost grows with the records.
    validate::validate_records(&header, &bytes[HEADER_BYTES..], max_batch_bytes)?;
    Ok(header)
}

/// Verifies the CRC-32C of a complete batch against its header.
pub(crate) fn check_crc(bytes: &[u8], header: &BatchHeader) -> Result<()> {
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES..]);
    if computed != header.crc {
        return Err(Error::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Writes the base offset and leader epoch into a batch; the CRC stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: u64, leader_epoch: i32) {
    bytes[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    bytes[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Rewrites an encoded batch's idempotent-producer fields and its CRC (the producer
/// numbers a batch when it is sent, and renumbers it after a failed one).
pub fn restamp_producer(
    bytes: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) {
    bytes[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    bytes[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    bytes[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    seal_crc(bytes);
}

/// Writes the batch CRC after the body is complete (encoder side).
pub(crate) fn seal_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
    bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over the complete batches in a buffer of concatenated batches.
///
/// Yields each batch's header and bytes; a truncated final batch, a bad header or a
/// CRC failure ends the iteration with an error. Never allocates.
pub fn batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter { rest: bytes }
}

/// Iterator returned by [`batches`].
pub struct BatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = BatchHeader::parse(self.rest).and_then(|header| {
            let total = header.total_bytes();
            if total > self.rest.len() {
                return Err(Error::malformed(format!(
                    "batch claims {total} bytes but only {} remain",
                    self.rest.len()
                )));
            }
            let (batch, rest) = self.rest.split_at(total);
            check_crc(batch, &header)?;
            self.rest = rest;
            Ok((header, batch))
        });
        if result.is_err() {
            self.rest = &[];
        }
        Some(result)
    }
}

pub(crate) fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    i32_at(b, at) as u32
}

pub(crate) fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// Field positions the encoder writes; kept beside the layout above.
pub(crate) mod layout {
    pub(crate) use super::{
        ATTRIBUTES, BASE_SEQUENCE, BASE_TIMESTAMP, BATCH_LENGTH, LAST_OFFSET_DELTA, LEADER_EPOCH,
        MAGIC_POS, MAX_TIMESTAMP, PRODUCER_EPOCH, PRODUCER_ID, RECORD_COUNT,
    };
}
