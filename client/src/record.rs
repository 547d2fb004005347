//! Records as the application sees them, and decoding fetched batches into them.
//!
//! Keys, values and header values of uncompressed batches are `Bytes` slices of the
//! fetched buffer: no copy per record. Compressed batches are decompressed once, with
//! the decompressed size bounded.

use bytes::Bytes;
use std::borrow::Cow;

use pubsub_storage::records::record_iter;
use pubsub_storage::{DecodedBatch, batch};

use crate::error::{Error, Result};

/// Bound on one batch's decompressed size: 64x the default 1 MiB batch limit. The same
/// constant as the broker's, which refuses to store any batch that expands past it.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize =
    pubsub_storage::records::DECOMPRESSED_BATCH_BYTES_MAX;

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
    pub partition: Option<u32>,
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
    pub partition: u32,
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

/// Decodes the concatenated batches of a fetch response into records at or after
/// `from_offset`, appending them to `out`; returns the offset to fetch next.
pub fn decode_fetched(
    partition: u32,
    fetched: &Bytes,
    from_offset: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64> {
    let mut next = from_offset;
    for item in batch::batches(fetched) {
        let (_, bytes) = item.map_err(|e| Error::Decode(e.to_string()))?;
        let decoded = DecodedBatch::new(bytes, DECOMPRESSED_BATCH_BYTES_MAX)
            .map_err(|e| Error::Decode(e.to_string()))?;
        let (header, records) = decoded.into_parts();
        let owner = match records {
            Cow::Borrowed(records) => fetched.slice_ref(records),
            Cow::Owned(records) => Bytes::from(records),
        };
        for record in record_iter(header, &owner) {
            let record = record.map_err(|e| Error::Decode(e.to_string()))?;
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
        next = next.max(header.next_offset());
    }
    Ok(next)
}
