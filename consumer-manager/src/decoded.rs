//! Batches decoded lately, for the next subscription that reads them.
//!
//! Subscriptions of one topic read the same batches at different times (a fan-out
//! drifts apart within seconds, so few reads share a fetch in flight), and a delivery
//! step that takes part of a batch decodes it whole again on the next step. Decoding
//! and CRC-checking were a fifth of the consumer manager's time in a 100-subscription
//! fan-out. A batch read a second time is kept here, by topic incarnation, partition,
//! base offset, stored CRC and length, and later reads of those bytes take its records
//! from here (cheap clones: keys and values are slices of the cache's own copy of the
//! batch).
//!
//! The stored CRC covers everything a record is made of, and the base offset, length
//! and topic incarnation are in the key, so a cached batch stands for exactly the
//! bytes read. A batch that does not decode is never kept: every read meets it again.
//! A read served from here does not check the CRC of the bytes it fetched once more:
//! it gets the records that were checked when the batch was first decoded (the
//! broker checks what it stores, and every miss checks again).
//! The cache is bounded (records and value bytes); the oldest batch goes first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pubsub_client::{ConsumerRecord, PartitionId, Undecodable, decode_fetched};
use pubsub_storage::Compression;
use pubsub_storage::batch::BatchHeader;

use crate::lock::recover;

/// Most records kept (about 100 bytes of memory each, besides their bytes).
const MAX_RECORDS: usize = 256 * 1024;
/// Most bytes kept: each batch is a copy of its own (so the cache never holds on to a
/// segment's memory map, nor to the disk space of a segment retention deleted), and a
/// compressed batch's records are also its decompressed copy.
const MAX_BYTES: usize = 64 << 20;

/// Most batches remembered as read once: a batch is kept only when it is read a
/// second time, so a batch only one reader reads costs nothing more than decoding.
const MAX_SEEN: usize = 64 * 1024;

/// Which bytes a batch is: its topic's incarnation, partition, base offset, stored
/// CRC and length.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    topic: String,
    topic_created_ms: u64,
    partition: u32,
    base_offset: u64,
    crc: u32,
    bytes: usize,
}

/// A decoded batch and what it holds.
struct Entry {
    records: Arc<Vec<ConsumerRecord>>,
    bytes_held: usize,
}

#[derive(Default)]
struct Cache {
    batches: HashMap<Key, Entry>,
    /// Keys in the order they came, the oldest first.
    order: VecDeque<Key>,
    records: usize,
    bytes_held: usize,
    /// Batches read once and not kept, the oldest first.
    seen: HashSet<Key>,
    seen_order: VecDeque<Key>,
}

/// What the cache knows of a batch.
enum Known {
    /// Kept: its records.
    Kept(Arc<Vec<ConsumerRecord>>),
    /// Read once before: keep it this time.
    Seen,
    /// Never read (now noted as read once).
    New,
}

/// Decoded batches, shared by every reader of this consumer manager.
pub(crate) struct DecodedBatches {
    cache: Mutex<Cache>,
    max_records: usize,
    max_bytes: usize,
    max_seen: usize,
}

impl Default for DecodedBatches {
    fn default() -> Self {
        DecodedBatches::bounded(MAX_RECORDS, MAX_BYTES)
    }
}

/// What a fetch's bytes are: which topic incarnation and partition they were read from.
pub(crate) struct Origin<'a> {
    /// The topic.
    pub(crate) topic: &'a str,
    /// Its incarnation, as the broker answered.
    pub(crate) topic_created_ms: u64,
    /// The partition.
    pub(crate) partition: u32,
}

impl DecodedBatches {
    /// A cache keeping at most `max_records` records and `max_bytes` of their
    /// keys and values.
    fn bounded(max_records: usize, max_bytes: usize) -> Self {
        DecodedBatches {
            cache: Mutex::default(),
            max_records,
            max_bytes,
            max_seen: MAX_SEEN,
        }
    }

    /// Decodes the concatenated batches `fetched` into the records at or after `from`,
    /// appended to `out`, exactly as [`decode_fetched`] does (the same records, the
    /// same error at the first batch that cannot be decoded), taking batches decoded
    /// before from the cache and keeping the ones decoded now.
    pub(crate) fn decode(
        &self,
        origin: &Origin<'_>,
        fetched: &Bytes,
        from: u64,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<(), Undecodable> {
        let partition = PartitionId(origin.partition);
        let mut rest = fetched.clone();
        let mut next = from;
        while !rest.is_empty() {
            let header = match BatchHeader::parse(&rest) {
                Ok(header) if header.total_bytes() <= rest.len() => header,
                // Incomplete or unreadable: the decoder says how, as it would have.
                _ => return decode_fetched(partition, &rest, next, out).map(|_| ()),
            };
            let key = Key {
                topic: origin.topic.to_string(),
                topic_created_ms: origin.topic_created_ms,
                partition: origin.partition,
                base_offset: header.base_offset,
                crc: header.crc,
                bytes: header.total_bytes(),
            };
            let records = match self.known(&key) {
                Known::Kept(records) => records,
                Known::New => {
                    // Read once so far: decoded straight into `out`, as without a cache.
                    let batch = rest.slice(..key.bytes);
                    if decode_fetched(partition, &batch, from, out).is_err() {
                        return decode_fetched(partition, &rest, next, out).map(|_| ());
                    }
                    next = next.max(header.next_offset());
                    rest = rest.slice(key.bytes..);
                    continue;
                }
                Known::Seen => {
                    // Decoded from a copy: the records must not keep the fetched
                    // buffer (in process, a segment's memory map) alive.
                    let batch = Bytes::copy_from_slice(&rest[..key.bytes]);
                    let mut decoded = Vec::new();
                    if decode_fetched(partition, &batch, 0, &mut decoded).is_err() {
                        return decode_fetched(partition, &rest, next, out).map(|_| ());
                    }
                    // A compressed batch's records are slices of its decompressed
                    // copy (the compressed one is let go); others, of the copy.
                    let compressed = header.compression().is_ok_and(|c| c != Compression::None);
                    let held = if compressed {
                        record_bytes(&decoded)
                    } else {
                        key.bytes
                    };
                    self.put(key.clone(), decoded, held)
                }
            };
            out.reserve(records.len());
            out.extend(records.iter().filter(|r| r.offset >= from).cloned());
            next = next.max(header.next_offset());
            rest = rest.slice(key.bytes..);
        }
        Ok(())
    }

    /// What is known of a batch; one never read is noted as read once.
    fn known(&self, key: &Key) -> Known {
        let mut cache = recover(self.cache.lock());
        if let Some(entry) = cache.batches.get(key) {
            return Known::Kept(entry.records.clone());
        }
        if cache.seen.contains(key) {
            return Known::Seen;
        }
        if cache.seen.len() >= self.max_seen
            && let Some(oldest) = cache.seen_order.pop_front()
        {
            cache.seen.remove(&oldest);
        }
        cache.seen.insert(key.clone());
        cache.seen_order.push_back(key.clone());
        Known::New
    }

    /// Keeps a batch just decoded (unless it alone is past the bounds); returns it.
    fn put(
        &self,
        key: Key,
        records: Vec<ConsumerRecord>,
        bytes_held: usize,
    ) -> Arc<Vec<ConsumerRecord>> {
        let records = Arc::new(records);
        if records.len() > self.max_records || bytes_held > self.max_bytes {
            return records;
        }
        // What leaves the cache is freed after the lock is let go.
        let mut gone = Vec::new();
        {
            let mut cache = recover(self.cache.lock());
            let cache = &mut *cache;
            while cache.records + records.len() > self.max_records
                || cache.bytes_held + bytes_held > self.max_bytes
            {
                let Some(oldest) = cache.order.pop_front() else {
                    break;
                };
                if let Some(entry) = cache.batches.remove(&oldest) {
                    cache.records -= entry.records.len();
                    cache.bytes_held -= entry.bytes_held;
                    gone.push(entry);
                }
            }
            let entry = Entry {
                records: records.clone(),
                bytes_held,
            };
            match cache.batches.insert(key.clone(), entry) {
                // Another reader kept the same batch meanwhile: the same counts.
                Some(replaced) => gone.push(replaced),
                None => {
                    cache.order.push_back(key);
                    cache.records += records.len();
                    cache.bytes_held += bytes_held;
                }
            }
        }
        drop(gone);
        records
    }

    /// Batches kept.
    #[cfg(test)]
    fn batches(&self) -> usize {
        recover(self.cache.lock()).batches.len()
    }
}

/// Bytes of the records' keys, values and header values.
fn record_bytes(records: &[ConsumerRecord]) -> usize {
    let len = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
    records
        .iter()
        .map(|r| {
            len(&r.key)
                + len(&r.value)
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + len(v))
                    .sum::<usize>()
        })
        .sum()
}

#[cfg(test)]
mod tests;
