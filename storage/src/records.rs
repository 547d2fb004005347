//! Records inside a batch: the encoder the producer uses and the decoder consumers use.
//!
//! Record layout (Kafka v2; varints are zig-zag):
//!
//! ```text
//! length           varint   bytes after this field
//! attributes       i8       unused, 0
//! timestamp_delta  varlong  ms after the batch's base timestamp
//! offset_delta     varint   position in the batch
//! key_length       varint   -1 for a null key
//! key              bytes
//! value_length     varint   -1 for a null value
//! value            bytes
//! header_count     varint
//!   header_key_length varint, header_key utf-8, header_value_length varint (-1 null), value
//! ```
//!
//! Decoding borrows from the batch (or from its decompressed copy) and checks every
//! length against the bytes that remain before slicing, so any input yields records or
//! a typed error, and nothing is allocated in proportion to a length read from it.

use std::borrow::Cow;

use crate::batch::{self, BatchHeader, Compression, HEADER_BYTES, MAGIC, layout};
use crate::compression;
use crate::error::{Error, Result};
use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varint_len, varlong_len};

/// Identity of an idempotent producer, stamped into each batch it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id assigned by the broker, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record, or -1.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// The stamp of a producer without idempotence.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// One record header: a UTF-8 key and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header name.
    pub key: &'a str,
    /// Header value, or `None` for a null value.
    pub value: Option<&'a [u8]>,
}

/// Accumulates records and encodes them into one batch.
///
/// The producer keeps one builder per partition; `estimated_bytes` lets it close the
/// batch at its size limit. Records are encoded behind room for the batch header, so
/// [`BatchBuilder::finish`] hands the buffer over as the batch without copying it.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    /// The header's room (once a record was pushed), then the encoded records.
    records: Vec<u8>,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size of the batch so far, before compression.
    pub fn estimated_bytes(&self) -> usize {
        HEADER_BYTES + self.body().len()
    }

    /// The encoded records, without the header's room.
    fn body(&self) -> &[u8] {
        self.records.get(HEADER_BYTES..).unwrap_or_default()
    }

    /// Upper bound of the bytes one more record adds (for closing a batch before it
    /// would pass its limit): the varint deltas are counted at their widest.
    pub fn record_bytes(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header<'_>]) -> usize {
        let body = record_body_len(i64::MIN, i32::MIN, key, value, headers);
        body + 5
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let timestamp_delta = timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count as i32;
        let body = record_body_len(timestamp_delta, offset_delta, key, value, headers);
        let buf = &mut self.records;
        if buf.is_empty() {
            buf.resize(HEADER_BYTES, 0);
        }
        put_varint(buf, body as i32);
        buf.push(0);
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i32);
        for header in headers {
            put_bytes(buf, Some(header.key.as_bytes()));
            put_bytes(buf, header.value);
        }
        self.count += 1;
    }

    /// Encodes the batch with base offset 0 and leader epoch -1 (the leader stamps both).
    ///
    /// Returns `None` for an empty builder: an empty batch is not a valid batch.
    pub fn build(&self, codec: Compression, producer: ProducerStamp) -> Result<Option<Vec<u8>>> {
        if self.count == 0 {
            return Ok(None);
        }
        let body = match codec {
            Compression::None => Cow::Borrowed(self.body()),
            codec => Cow::Owned(compression::compress(codec, self.body())?),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.resize(HEADER_BYTES, 0);
        out.extend_from_slice(&body);
        self.write_header(&mut out, codec, producer)?;
        batch::seal_crc(&mut out);
        Ok(Some(out))
    }

    /// [`BatchBuilder::build`] that hands the builder's buffer over as the batch (no
    /// copy of the records when uncompressed) and leaves the builder empty. With
    /// `seal` false the CRC is left for the caller: a producer that stamps its id and
    /// sequence when it sends (`batch::restamp_producer`, which seals) computes the
    /// CRC once instead of twice.
    pub fn finish(
        &mut self,
        codec: Compression,
        producer: ProducerStamp,
        seal: bool,
    ) -> Result<Option<Vec<u8>>> {
        if self.count == 0 {
            return Ok(None);
        }
        let mut out = match codec {
            Compression::None => std::mem::take(&mut self.records),
            codec => {
                let compressed = compression::compress(codec, self.body())?;
                let mut out = Vec::with_capacity(HEADER_BYTES + compressed.len());
                out.resize(HEADER_BYTES, 0);
                out.extend_from_slice(&compressed);
                out
            }
        };
        self.write_header(&mut out, codec, producer)?;
        if seal {
            batch::seal_crc(&mut out);
        }
        self.clear();
        Ok(Some(out))
    }

    /// Fills the header of `out` (header room, then the body) but for the CRC.
    fn write_header(
        &self,
        out: &mut [u8],
        codec: Compression,
        producer: ProducerStamp,
    ) -> Result<()> {
        let batch_length = i32::try_from(out.len() - batch::LOG_OVERHEAD)
            .map_err(|_| Error::malformed("batch larger than 2 GiB"))?;
        out[..HEADER_BYTES].fill(0);
        put_i32(out, layout::BATCH_LENGTH, batch_length);
        put_i32(out, layout::LEADER_EPOCH, -1);
        out[layout::MAGIC_POS] = MAGIC as u8;
        put_i16(out, layout::ATTRIBUTES, i16::from(codec.id()));
        put_i32(out, layout::LAST_OFFSET_DELTA, self.count as i32 - 1);
        put_i64(out, layout::BASE_TIMESTAMP, self.base_timestamp);
        put_i64(out, layout::MAX_TIMESTAMP, self.max_timestamp);
        put_i64(out, layout::PRODUCER_ID, producer.producer_id);
        put_i16(out, layout::PRODUCER_EPOCH, producer.producer_epoch);
        put_i32(out, layout::BASE_SEQUENCE, producer.base_sequence);
        put_i32(out, layout::RECORD_COUNT, self.count as i32);
        Ok(())
    }

    /// Empties the builder, keeping its buffer for the next batch.
    pub fn clear(&mut self) {
        self.records.clear();
        self.count = 0;
    }
}

fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) -> usize {
    let mut n = 1 + varlong_len(timestamp_delta) + varint_len(offset_delta);
    n += bytes_len(key) + bytes_len(value) + varint_len(headers.len() as i32);
    for header in headers {
        n += bytes_len(Some(header.key.as_bytes())) + bytes_len(header.value);
    }
    n
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}

fn put_i16(out: &mut [u8], at: usize, v: i16) {
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put_i32(out: &mut [u8], at: usize, v: i32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut [u8], at: usize, v: i64) {
    out[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Bound on one batch's decompressed records for consumers (`DecodedBatch::new`):
/// 64x the default 1 MiB batch limit. The broker never accepts a batch whose records
/// decompress past it (`validate::decompressed_bytes_max`), so whatever it stores, a
/// consumer using this bound can expand.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

/// A batch opened for reading its records, decompressed if it was compressed.
#[derive(Debug)]
pub struct DecodedBatch<'a> {
    header: BatchHeader,
    records: Cow<'a, [u8]>,
}

impl<'a> DecodedBatch<'a> {
    /// Checks the batch (header, length, CRC) and decompresses its records.
    ///
    /// `max_uncompressed_bytes` bounds the decompressed size.
    pub fn new(bytes: &'a [u8], max_uncompressed_bytes: usize) -> Result<Self> {
        let header = BatchHeader::parse(bytes)?;
        if header.total_bytes() != bytes.len() {
            return Err(Error::malformed(
                "batch length does not match the bytes given",
            ));
        }
        batch::check_crc(bytes, &header)?;
        Self::of_checked(header, bytes, max_uncompressed_bytes)
    }

    /// Decodes a batch that [`batch::batches`] yielded with `header`: its length and
    /// CRC are checked already, so they are not checked twice (a consumer's decode of
    /// every fetched batch). Records are still bounds-checked as they are read.
    pub fn of_checked(
        header: BatchHeader,
        bytes: &'a [u8],
        max_uncompressed_bytes: usize,
    ) -> Result<Self> {
        let body = bytes
            .get(HEADER_BYTES..)
            .ok_or_else(|| Error::malformed("batch shorter than its header"))?;
        let records = match header.compression()? {
            Compression::None => Cow::Borrowed(body),
            codec => Cow::Owned(compression::decompress(
                codec,
                body,
                max_uncompressed_bytes,
            )?),
        };
        Ok(DecodedBatch { header, records })
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Iterates the records; stops at the header's record count.
    pub fn records(&self) -> RecordIter<'_> {
        record_iter(self.header, &self.records)
    }

    /// The header and the (decompressed) records section, borrowed from the batch
    /// when it was not compressed; lets a caller keep the records in its own buffer
    /// type and iterate them with [`record_iter`].
    pub fn into_parts(self) -> (BatchHeader, Cow<'a, [u8]>) {
        (self.header, self.records)
    }
}

/// Iterates the records of a batch's (decompressed) records section.
pub fn record_iter(header: BatchHeader, records: &[u8]) -> RecordIter<'_> {
    RecordIter {
        header,
        rest: records,
        index: 0,
    }
}

/// One record, borrowed from its batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset of the record.
    pub offset: u64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value, if any.
    pub value: Option<&'a [u8]>,
    /// Headers in order.
    pub headers: Vec<Header<'a>>,
}

/// Iterator over the records of a [`DecodedBatch`].
pub struct RecordIter<'a> {
    header: BatchHeader,
    rest: &'a [u8],
    index: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.header.record_count {
            return None;
        }
        self.index += 1;
        let result = decode_record(&self.header, &mut self.rest);
        if result.is_err() {
            self.index = self.header.record_count;
        }
        Some(result)
    }
}

fn decode_record<'a>(header: &BatchHeader, input: &mut &'a [u8]) -> Result<Record<'a>> {
    let length = get_varint(input)?;
    let mut body = take(input, length)?;
    let _attributes = take(&mut body, 1)?;
    let timestamp_delta = get_varlong(&mut body)?;
    let offset_delta = get_varint(&mut body)?;
    if offset_delta < 0 || offset_delta as u32 > header.last_offset_delta {
        return Err(Error::malformed(format!(
            "record offset delta {offset_delta} outside the batch"
        )));
    }
    let key = get_nullable(&mut body)?;
    let value = get_nullable(&mut body)?;
    let header_count = get_varint(&mut body)?;
    if header_count < 0 {
        return Err(Error::malformed("negative header count"));
    }
    let mut headers = Vec::new();
    for _ in 0..header_count {
        let key = get_nullable(&mut body)?.ok_or_else(|| Error::malformed("null header key"))?;
        let key =
            std::str::from_utf8(key).map_err(|_| Error::malformed("header key is not utf-8"))?;
        let value = get_nullable(&mut body)?;
        headers.push(Header { key, value });
    }
    if !body.is_empty() {
        return Err(Error::malformed("trailing bytes inside a record"));
    }
    Ok(Record {
        offset: header.base_offset + offset_delta as u64,
        timestamp: header.base_timestamp.wrapping_add(timestamp_delta),
        key,
        value,
        headers,
    })
}

fn get_nullable<'a>(input: &mut &'a [u8]) -> Result<Option<&'a [u8]>> {
    let len = get_varint(input)?;
    if len == -1 {
        return Ok(None);
    }
    take(input, len).map(Some)
}

/// Splits `len` bytes off the front of `input`, checking the length first.
fn take<'a>(input: &mut &'a [u8], len: i32) -> Result<&'a [u8]> {
    let len = usize::try_from(len).map_err(|_| Error::malformed("negative length"))?;
    if len > input.len() {
        return Err(Error::malformed(format!(
            "length {len} exceeds the {} bytes remaining",
            input.len()
        )));
    }
    let (head, tail) = input.split_at(len);
    *input = tail;
    Ok(head)
}

#[cfg(test)]
pub(crate) mod tests {

    #[test]
    fn finish_hands_over_the_batch_build_would_copy() {
        for codec in [Compression::None, Compression::Zstd] {
            let stamp = ProducerStamp {
                producer_id: 7,
                producer_epoch: 1,
                base_sequence: 40,
            };
            let mut builder = BatchBuilder::new();
            for i in 0..50u32 {
                let value = i.to_be_bytes();
                builder.push(1_000 + i64::from(i), Some(b"k"), Some(&value), &[]);
            }
            let built = builder.build(codec, stamp).unwrap().unwrap();
            let finished = builder.finish(codec, stamp, true).unwrap().unwrap();
            assert_eq!(built, finished, "{codec:?}");
            assert!(builder.is_empty() && builder.finish(codec, stamp, true).unwrap().is_none());
            // Unsealed, then stamped by the sender: one CRC, the same bytes.
            for i in 0..50u32 {
                let value = i.to_be_bytes();
                builder.push(1_000 + i64::from(i), Some(b"k"), Some(&value), &[]);
            }
            let mut unsealed = builder
                .finish(codec, ProducerStamp::NONE, false)
                .unwrap()
                .unwrap();
            batch::restamp_producer(&mut unsealed, 7, 1, 40);
            assert_eq!(unsealed, built);
            assert!(DecodedBatch::new(&unsealed, 1 << 20).is_ok());
        }
    }
    use super::*;
    use proptest::prelude::*;

    /// A record's timestamp, key, value and headers, owned, for strategies.
    pub(crate) type OwnedRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    /// Encodes `records` into one batch.
    pub(crate) fn build(records: &[OwnedRecord], codec: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (ts, key, value, headers) in records {
            let headers: Vec<Header<'_>> = headers
                .iter()
                .map(|(k, v)| Header {
                    key: k,
                    value: v.as_deref(),
                })
                .collect();
            builder.push(*ts, key.as_deref(), value.as_deref(), &headers);
        }
        builder.build(codec, ProducerStamp::NONE).unwrap().unwrap()
    }

    pub(crate) fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
        (
            0i64..4_000_000_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    "[a-z]{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
        )
    }

    pub(crate) fn codec_strategy() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Lz4),
            Just(Compression::Zstd)
        ]
    }

    proptest! {
        #[test]
        fn batches_roundtrip(records in proptest::collection::vec(record_strategy(), 1..30), codec in codec_strategy()) {
            let mut bytes = build(&records, codec);
            let header = batch::validate(&bytes, 1 << 20).unwrap();
            prop_assert_eq!(header.record_count as usize, records.len());
            batch::stamp(&mut bytes, 1000, 7);
            let decoded = DecodedBatch::new(&bytes, 1 << 20).unwrap();
            prop_assert_eq!(decoded.header().base_offset, 1000);
            prop_assert_eq!(decoded.header().leader_epoch, 7);
            let got: Vec<Record<'_>> = decoded.records().collect::<Result<_>>().unwrap();
            prop_assert_eq!(got.len(), records.len());
            for (i, (record, want)) in got.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, 1000 + i as u64);
                prop_assert_eq!(record.timestamp, want.0);
                prop_assert_eq!(record.key, want.1.as_deref());
                prop_assert_eq!(record.value, want.2.as_deref());
                prop_assert_eq!(record.headers.len(), want.3.len());
            }
        }

        #[test]
        fn any_bytes_decode_to_records_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = batch::validate(&bytes, 1 << 20);
            if let Ok(decoded) = DecodedBatch::new(&bytes, 1 << 16) {
                for record in decoded.records() {
                    let _ = record;
                }
            }
            for batch in batch::batches(&bytes) {
                let _ = batch;
            }
        }

        #[test]
        fn corrupting_a_valid_batch_never_panics(
            records in proptest::collection::vec(record_strategy(), 1..5),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = build(&records, Compression::None);
            for (index, byte) in flips {
                let at = index.index(bytes.len());
                bytes[at] ^= byte | 1;
            }
            // The CRC must catch the corruption unless it only touched unprotected fields.
            if let Ok(decoded) = DecodedBatch::new(&bytes, 1 << 16) {
                for record in decoded.records() {
                    let _ = record;
                }
            }
        }
    }

    #[test]
    fn crc_mismatch_is_reported() {
        let mut bytes = build(&[(1, None, Some(b"v".to_vec()), vec![])], Compression::None);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(
            batch::validate(&bytes, 1 << 20),
            Err(Error::CrcMismatch { .. })
        ));
    }

    #[test]
    fn oversize_batch_is_rejected_before_parsing() {
        let bytes = build(&[(1, None, Some(vec![0; 2000]), vec![])], Compression::None);
        assert!(matches!(
            batch::validate(&bytes, 1000),
            Err(Error::BatchTooLarge { .. })
        ));
    }

    #[test]
    fn a_record_count_the_body_cannot_hold_is_rejected() {
        let mut bytes = build(&[(1, None, Some(b"v".to_vec()), vec![])], Compression::None);
        let lie = i32::MAX;
        bytes[layout::RECORD_COUNT..layout::RECORD_COUNT + 4].copy_from_slice(&lie.to_be_bytes());
        bytes[layout::LAST_OFFSET_DELTA..layout::LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(lie - 1).to_be_bytes());
        batch::seal_crc(&mut bytes);
        let err = batch::validate(&bytes, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("record count"), "{err}");
    }

    #[test]
    fn empty_builder_builds_nothing() {
        assert!(
            BatchBuilder::new()
                .build(Compression::None, ProducerStamp::NONE)
                .unwrap()
                .is_none()
        );
    }
}
