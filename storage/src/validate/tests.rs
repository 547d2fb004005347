//! Tests of the record walk: hand-written records that lie in one field each, and
//! property tests that every encoded batch validates and every accepted one decodes.

use super::*;
use crate::batch::{self, HEADER_BYTES, layout};
use crate::records::DecodedBatch;
use crate::records::tests::{build, codec_strategy, record_strategy};
use crate::varint::{put_varint, put_varlong};
use crate::{BatchBuilder, ProducerStamp};
use proptest::prelude::*;

const LIMIT: usize = 1 << 20;

/// One field of a hand-written record, so a test can lie in any of them.
#[derive(Clone, Copy)]
enum F<'a> {
    Byte(u8),
    Varint(i32),
    Varlong(i64),
    Raw(&'a [u8]),
}

fn fields(fields: &[F<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        match field {
            F::Byte(b) => out.push(*b),
            F::Varint(v) => put_varint(&mut out, *v),
            F::Varlong(v) => put_varlong(&mut out, *v),
            F::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

/// A record: its length, then `body`.
fn record(body: &[F<'_>]) -> Vec<u8> {
    let body = fields(body);
    let mut out = fields(&[F::Varint(body.len() as i32)]);
    out.extend_from_slice(&body);
    out
}

/// Record 0: attributes, timestamp delta and offset delta as they should be, then
/// `rest` (key, value, headers) as written.
fn first(rest: &[F<'_>]) -> Vec<u8> {
    record(&[&[F::Byte(0), F::Varlong(0), F::Varint(0)], rest].concat())
}

/// A well-formed record with offset delta `delta`, null key, a 20-byte value and no
/// headers: 27 bytes, so the header's cheap count bound never answers first.
fn good(delta: i32) -> Vec<u8> {
    use F::*;
    let value = b"twenty bytes of data";
    record(&[
        Byte(0),
        Varlong(0),
        Varint(delta),
        Varint(-1),
        Varint(20),
        Raw(value),
        Varint(0),
    ])
}

/// A batch around `records`, claiming `count` records and `codec`, with a valid CRC.
fn sealed(records: &[u8], count: i32, codec: Compression) -> Vec<u8> {
    sealed_body(
        &compression::compress(codec, records).unwrap(),
        count,
        codec,
    )
}

/// A batch whose records section is exactly `body`, with a valid CRC.
fn sealed_body(body: &[u8], count: i32, codec: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(1, None, Some(b"v"), &[]);
    let template = builder
        .build(Compression::None, ProducerStamp::NONE)
        .unwrap();
    let mut bytes = template.unwrap()[..HEADER_BYTES].to_vec();
    bytes.extend_from_slice(body);
    let length = (bytes.len() - batch::LOG_OVERHEAD) as i32;
    bytes[layout::BATCH_LENGTH..][..4].copy_from_slice(&length.to_be_bytes());
    bytes[layout::ATTRIBUTES..][..2].copy_from_slice(&i16::from(codec.id()).to_be_bytes());
    bytes[layout::RECORD_COUNT..][..4].copy_from_slice(&count.to_be_bytes());
    bytes[layout::LAST_OFFSET_DELTA..][..4].copy_from_slice(&(count - 1).to_be_bytes());
    batch::seal_crc(&mut bytes);
    bytes
}

fn concat(records: &[Vec<u8>]) -> Vec<u8> {
    records.concat()
}

/// `batch::validate` refuses `bytes` with an error containing `needle`.
fn check(bytes: &[u8], needle: &str) {
    let err = batch::validate(bytes, LIMIT).expect_err("the batch must be refused");
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

/// The walk alone refuses `bytes`: for sections of a record or two, which the
/// cheap bound in `batch::validate` (7 bytes per counted record) would refuse first.
fn check_walk(bytes: &[u8], needle: &str) {
    let header = BatchHeader::parse(bytes).unwrap();
    let err = validate_records(&header, &bytes[HEADER_BYTES..], LIMIT).unwrap_err();
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

#[test]
fn well_formed_hand_written_records_pass() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = sealed(&concat(&[good(0), good(1), good(2)]), 3, codec);
        batch::validate(&bytes, LIMIT).unwrap();
    }
}

#[test]
fn a_body_that_is_not_what_its_codec_claims_is_refused() {
    let records = concat(&[good(0)]);
    let gzip = compression::compress(Compression::Gzip, &records).unwrap();
    let cases = [
        (&records, Compression::Gzip),
        (&records, Compression::Zstd),
        (&records, Compression::Lz4),
        (&gzip, Compression::Zstd),
    ];
    for (body, codec) in cases {
        check(&sealed_body(body, 1, codec), "cannot decompress batch");
    }
}

#[test]
fn a_record_count_that_disagrees_with_the_records_is_refused() {
    let two = concat(&[good(0), good(1)]);
    for (count, codec) in [
        (3, Compression::None),
        (3, Compression::Zstd),
        (1, Compression::Lz4),
    ] {
        let needle =
            format!("record count {count} in the header but the records section holds 2 records");
        check(&sealed(&two, count, codec), &needle);
    }
}

#[test]
fn a_last_offset_delta_that_disagrees_with_the_records_is_refused() {
    let two = concat(&[good(0), good(1)]);
    let mut bytes = sealed(&two, 2, Compression::None);
    let header = BatchHeader::parse(&bytes).unwrap();
    let lie = BatchHeader {
        last_offset_delta: 5,
        ..header
    };
    let err = validate_records(&lie, &bytes[HEADER_BYTES..], LIMIT).unwrap_err();
    assert!(
        err.to_string()
            .contains("last offset delta 5 but the last record's offset delta is 1"),
        "{err}"
    );
    // Through `batch::validate` the header's own consistency check answers first.
    bytes[layout::LAST_OFFSET_DELTA..][..4].copy_from_slice(&5i32.to_be_bytes());
    batch::seal_crc(&mut bytes);
    check(&bytes, "last offset delta 5 does not match record count 2");
}

#[test]
fn offset_deltas_must_run_from_zero_in_order() {
    let cases = [
        (
            concat(&[good(1), good(2)]),
            "record 0: offset delta 1, expected 0",
        ),
        (
            concat(&[good(0), good(0)]),
            "record 1: offset delta 0, expected 1",
        ),
        (
            concat(&[good(0), good(2)]),
            "record 1: offset delta 2, expected 1",
        ),
        (
            concat(&[good(0), good(-1)]),
            "record 1: offset delta -1, expected 1",
        ),
    ];
    for (records, needle) in cases {
        check(&sealed(&records, 2, Compression::None), needle);
        check(&sealed(&records, 2, Compression::Gzip), needle);
    }
}

#[test]
fn lengths_that_run_past_the_end_are_refused() {
    use F::*;
    let mut long_record = good(1);
    long_record[0] = 120; // zig-zag 60: more than the record's 26 bytes
    check(
        &sealed(&concat(&[good(0), long_record]), 2, Compression::None),
        "record 1: length 60 runs past the end of the records section (26 bytes remain)",
    );
    let cases = [
        (
            first(&[Varint(900), Raw(b"k")]),
            "record 0: key length 900 runs past the end of the record",
        ),
        (
            first(&[Varint(-1), Varint(i32::MAX), Raw(b"v")]),
            "record 0: value length 2147483647 runs past the end of the record",
        ),
        (
            first(&[Varint(-1), Varint(-1), Varint(1), Varint(40), Raw(b"ab")]),
            "record 0: header 0: key length 40 runs past the end of the record",
        ),
    ];
    for (records, needle) in cases {
        check_walk(&sealed(&records, 1, Compression::None), needle);
    }
}

#[test]
fn negative_lengths_are_refused() {
    use F::*;
    let cases = [
        (
            fields(&[Varint(-3), Byte(0), Byte(0), Byte(0)]),
            "record 0: negative length -3",
        ),
        (
            first(&[Varint(-2), Varint(-1), Varint(0)]),
            "record 0: key length -2 is negative",
        ),
        (
            first(&[Varint(-1), Varint(i32::MIN), Varint(0)]),
            "record 0: value length -2147483648 is negative",
        ),
        (
            first(&[Varint(-1), Varint(-1), Varint(-1)]),
            "record 0: negative header count -1",
        ),
        (
            record(&[]),
            "record 0: length 0 leaves no room for the attributes",
        ),
    ];
    for (records, needle) in cases {
        check_walk(&sealed(&records, 1, Compression::None), needle);
    }
}

#[test]
fn broken_headers_are_refused() {
    use F::*;
    // Null key and value, then the header count and headers.
    let with = |tail: &[F<'_>]| first(&[&[Varint(-1), Varint(-1)], tail].concat());
    let cases = [
        (
            with(&[Varint(1_000_000), Varint(1), Raw(b"k"), Varint(-1)]),
            "record 0: header count 1000000 is more than the 3 bytes left in the record can hold",
        ),
        (
            with(&[Varint(1), Varint(-1), Varint(-1)]),
            "record 0: header 0: null key",
        ),
        (
            with(&[Varint(1), Varint(2), Raw(&[0xff, 0xfe]), Varint(-1)]),
            "record 0: header 0: key is not utf-8",
        ),
        (
            with(&[
                Varint(2),
                Varint(1),
                Raw(b"a"),
                Varint(-1),
                Varint(1),
                Raw(b"b"),
                Varint(7),
            ]),
            "record 0: header 1: value length 7 runs past the end of the record",
        ),
        (
            with(&[Varint(0), Raw(b"xy")]),
            "record 0: length 8 leaves 2 bytes after the last field",
        ),
    ];
    for (records, needle) in cases {
        check_walk(&sealed(&records, 1, Compression::None), needle);
    }
}

#[test]
fn truncated_varints_are_refused() {
    use F::*;
    check_walk(
        &sealed(&record(&[Byte(0), Raw(&[0x80])]), 1, Compression::None),
        "record 0: timestamp delta: truncated varint",
    );
    check_walk(
        &sealed(
            &fields(&[Raw(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01])]),
            1,
            Compression::None,
        ),
        "record 0: length: varint",
    );
}

#[test]
fn trailing_bytes_after_the_last_record_are_refused() {
    let mut records = concat(&[good(0), good(1)]);
    records.extend_from_slice(b"\x7fjunk");
    for codec in [Compression::None, Compression::Lz4] {
        check(
            &sealed(&records, 2, codec),
            "5 bytes follow the last of the 2 records the header counts",
        );
    }
}

#[test]
fn records_that_expand_past_the_ratio_are_refused() {
    let mut builder = BatchBuilder::new();
    builder.push(1, None, Some(&vec![0u8; 1 << 20]), &[]);
    let bytes = builder
        .build(Compression::Zstd, ProducerStamp::NONE)
        .unwrap()
        .unwrap();
    let max_batch_bytes = bytes.len().max(4096);
    let err = batch::validate(&bytes, max_batch_bytes).unwrap_err();
    assert!(
        matches!(err, Error::DecompressedTooLarge { limit } if limit == max_batch_bytes * DECOMPRESSION_RATIO_MAX),
        "{err}"
    );
    // With the default 1 MiB limit the same batch is fine.
    batch::validate(&bytes, LIMIT).unwrap();
}

#[test]
fn the_decompression_bound_never_exceeds_what_consumers_accept() {
    assert_eq!(
        decompressed_bytes_max(1 << 20),
        DECOMPRESSED_BATCH_BYTES_MAX
    );
    assert_eq!(
        decompressed_bytes_max(1 << 30),
        DECOMPRESSED_BATCH_BYTES_MAX
    );
    assert_eq!(
        decompressed_bytes_max(usize::MAX),
        DECOMPRESSED_BATCH_BYTES_MAX
    );
    assert_eq!(decompressed_bytes_max(1000), 64_000);
}

/// Decodes every record of an accepted batch with the consumers' decoder.
fn decode_fully(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
    let decoded = DecodedBatch::new(bytes, DECOMPRESSED_BATCH_BYTES_MAX)
        .map_err(|e| TestCaseError::fail(format!("accepted but not decodable: {e}")))?;
    let count = decoded.header().record_count;
    let mut seen = 0u32;
    for record in decoded.records() {
        let record =
            record.map_err(|e| TestCaseError::fail(format!("accepted but record fails: {e}")))?;
        prop_assert_eq!(
            record.offset,
            decoded.header().base_offset + u64::from(seen)
        );
        seen += 1;
    }
    prop_assert_eq!(seen, count);
    Ok(())
}

proptest! {
    #[test]
    fn every_encoded_batch_validates(
        records in proptest::collection::vec(record_strategy(), 1..40),
        codec in codec_strategy(),
    ) {
        let bytes = build(&records, codec);
        let header = batch::validate(&bytes, LIMIT).unwrap();
        prop_assert_eq!(header.record_count as usize, records.len());
        decode_fully(&bytes)?;
    }

    #[test]
    fn a_mutated_record_resealed_is_refused_or_decodes_fully(
        records in proptest::collection::vec(record_strategy(), 1..8),
        codec in codec_strategy(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = build(&records, codec);
        let at = HEADER_BYTES + at.index(bytes.len() - HEADER_BYTES);
        bytes[at] ^= flip;
        batch::seal_crc(&mut bytes);
        if batch::validate(&bytes, LIMIT).is_ok() {
            decode_fully(&bytes)?;
        }
    }
}
