//! Records as the application sees them, and decoding fetched batches into them.
//!
//! Keys, values and header values of uncompressed batches are `Bytes` slices of the
//! fetched buffer: no copy per record. Compressed batches are decompressed once, with
//! the decompressed size bounded.

use bytes::Bytes;
use std::borrow::Cow;

use pubsub_proto::ids::PartitionId;
use pubsub_storage::batch::BatchHeader;
use pubsub_storage::{DecodedBatch, batch, record_iter};

/// Bound on one batch's decompressed size: 64x the default 1 MiB batch limit. The same
/// constant as the broker's, which refuses to store any batch that expands past it.
pub(crate) const DECOMPRESSED_BATCH_BYTES_MAX: usize = pubsub_storage::DECOMPRESSED_BATCH_BYTES_MAX;

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    /// Optional key; records with the same key go to the same partition, in order.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// Explicit partition, overriding the key hash.
    pub partition: Option<PartitionId>,
    /// Create time in ms; now if unset.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with just a value.
    pub fn value(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// A record read from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Partition it was read from.
    pub partition: PartitionId,
    /// Its offset in the partition.
    pub offset: u64,
    /// Create time, ms since the epoch.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, if any.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A fetched batch whose records cannot be decoded (written by an incompatible
/// version, or corrupted in a way its CRC did not catch), and where it lies.
#[derive(Clone, Debug)]
pub struct Undecodable {
    /// The first offset it stands for: its base offset, or the fetch offset when the
    /// batch header itself is unreadable.
    pub offset: u64,
    /// The offset right after it, when its header could be read: where reading can
    /// resume past it. `None` when not even the batch's extent is known.
    pub next_offset: Option<u64>,
    /// The batch's raw bytes as stored (empty when its extent is unknown).
    pub batch: Bytes,
    /// Why it cannot be decoded.
    pub reason: String,
}

/// Decodes the concatenated batches of a fetch response into records at or after
/// `from_offset`, appending them to `out`; returns the offset to fetch next.
///
/// A batch is taken whole or not at all: at the first one that cannot be decoded,
/// the records of the batches before it stay in `out` and the batch is returned as
/// the error, so a caller can deliver what precedes it and then decide what to do
/// with it (report it, skip it, dead-letter it).
pub fn decode_fetched(
    partition: PartitionId,
    fetched: &Bytes,
    from_offset: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64, Undecodable> {
    let mut next = from_offset;
    for item in batch::batches(fetched) {
        let (header, bytes) = item.map_err(|e| Undecodable {
            offset: next,
            next_offset: None,
            batch: Bytes::new(),
            reason: e.to_string(),
        })?;
        let kept = out.len();
        if let Err(reason) = decode_batch(partition, fetched, header, bytes, from_offset, out) {
            out.truncate(kept);
            return Err(Undecodable {
                offset: header.base_offset,
                next_offset: Some(header.next_offset()),
                batch: fetched.slice_ref(bytes),
                reason: reason.to_string(),
            });
        }
        next = next.max(header.next_offset());
    }
    Ok(next)
}

/// Appends the records of one batch (a slice of `fetched`) at or after `from_offset`.
fn decode_batch(
    partition: PartitionId,
    fetched: &Bytes,
    header: BatchHeader,
    bytes: &[u8],
    from_offset: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), pubsub_storage::Error> {
    // `batch::batches` checked the length and CRC: checking them again cost 5% of a
    // consumer's time.
    let decoded = DecodedBatch::of_checked(header, bytes, DECOMPRESSED_BATCH_BYTES_MAX)?;
    let (header, records) = decoded.into_parts();
    let owner = match records {
        Cow::Borrowed(records) => fetched.slice_ref(records),
        Cow::Owned(records) => Bytes::from(records),
    };
    for record in record_iter(header, &owner) {
        let record = record?;
        if record.offset < from_offset {
            continue;
        }
        out.push(ConsumerRecord {
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.map(|k| owner.slice_ref(k)),
            value: record.value.map(|v| owner.slice_ref(v)),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(|v| owner.slice_ref(v))))
                .collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_storage::{BatchBuilder, Compression, ProducerStamp};

    fn batch(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(0, None, Some(value.as_bytes()), &[]);
        }
        let mut bytes = builder
            .build(Compression::None, ProducerStamp::NONE)
            .unwrap()
            .unwrap();
        batch::stamp(&mut bytes, base_offset, 0);
        bytes
    }

    #[test]
    fn records_before_an_undecodable_batch_are_kept_and_the_batch_is_named() {
        let mut garbled = batch(2, &["c", "d", "e"]);
        // Claim gzip; restamping seals the CRC again, as a writer would.
        garbled[22] |= 1;
        batch::restamp_producer(&mut garbled, -1, -1, -1);
        let mut fetched = batch(0, &["a", "b"]);
        fetched.extend_from_slice(&garbled);
        fetched.extend_from_slice(&batch(5, &["f"]));
        let fetched = Bytes::from(fetched);
        let mut out = Vec::new();
        let undecodable = decode_fetched(PartitionId(7), &fetched, 1, &mut out).unwrap_err();
        let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [1]);
        assert_eq!(undecodable.offset, 2);
        assert_eq!(undecodable.next_offset, Some(5));
        assert_eq!(&undecodable.batch[..], &garbled[..]);
        assert!(
            undecodable.reason.contains("gzip"),
            "{}",
            undecodable.reason
        );
    }

    #[test]
    fn an_unreadable_header_names_the_fetch_position_without_an_extent() {
        let mut fetched = batch(0, &["a"]);
        fetched.extend_from_slice(&[9u8; 70]);
        let mut out = Vec::new();
        let undecodable =
            decode_fetched(PartitionId(0), &Bytes::from(fetched), 0, &mut out).unwrap_err();
        assert_eq!(out.len(), 1);
        assert_eq!(undecodable.offset, 1);
        assert_eq!(undecodable.next_offset, None);
        assert!(undecodable.batch.is_empty());
    }
}
