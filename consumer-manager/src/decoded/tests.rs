use super::*;
use proptest::prelude::*;
use pubsub_storage::{BatchBuilder, Compression, Header, ProducerStamp, batch};

const HEADERS: &[Header<'static>] = &[Header {
    key: "h",
    value: Some(b"v"),
}];

fn batch_of(base_offset: u64, count: usize, compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let value = format!("value-{}", base_offset + i as u64);
        builder.push(0, None, Some(value.as_bytes()), HEADERS);
    }
    let mut bytes = builder
        .build(compression, ProducerStamp::NONE)
        .unwrap()
        .unwrap();
    batch::stamp(&mut bytes, base_offset, 0);
    bytes
}

/// Batches of `sizes` records, one after the other from offset 0.
fn log(sizes: &[usize]) -> Bytes {
    let mut bytes = Vec::new();
    let mut offset = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let compression = if i % 2 == 0 {
            Compression::None
        } else {
            Compression::Lz4
        };
        bytes.extend(batch_of(offset, size, compression));
        offset += size as u64;
    }
    Bytes::from(bytes)
}

const ORIGIN: Origin<'static> = Origin {
    topic: "t",
    topic_created_ms: 1,
    partition: 3,
};

/// Records read, and the error's offset, next offset and reason.
type Read = (Vec<ConsumerRecord>, Option<(u64, Option<u64>, String)>);

fn plain(fetched: &Bytes, from: u64) -> Read {
    let mut out = Vec::new();
    let error = decode_fetched(PartitionId(3), fetched, from, &mut out).err();
    (out, error.map(|e| (e.offset, e.next_offset, e.reason)))
}

fn cached(cache: &DecodedBatches, fetched: &Bytes, from: u64) -> Read {
    let mut out = Vec::new();
    let error = cache.decode(&ORIGIN, fetched, from, &mut out).err();
    (out, error.map(|e| (e.offset, e.next_offset, e.reason)))
}

#[test]
fn a_batch_read_again_comes_from_the_cache() {
    let cache = DecodedBatches::default();
    let fetched = log(&[4, 3, 5]);
    assert_eq!(cached(&cache, &fetched, 2), plain(&fetched, 2));
    assert_eq!(cache.batches(), 0, "a batch read once is not kept");
    assert_eq!(cached(&cache, &fetched, 2), plain(&fetched, 2));
    assert_eq!(cache.batches(), 3, "read twice, it is");
    // A later read from inside the second batch: the same records as decoding.
    assert_eq!(cached(&cache, &fetched.slice(..), 5), plain(&fetched, 5));
    assert_eq!(cache.batches(), 3, "nothing decoded twice");
    // Another incarnation of the topic is other bytes.
    let mut out = Vec::new();
    let other = Origin {
        topic_created_ms: 2,
        ..ORIGIN
    };
    cache.decode(&other, &fetched, 0, &mut out).unwrap();
    cache.decode(&other, &fetched, 0, &mut out).unwrap();
    assert_eq!(cache.batches(), 6);
}

#[test]
fn a_batch_that_does_not_decode_fails_as_without_the_cache_and_is_not_kept() {
    let cache = DecodedBatches::default();
    let mut bytes = batch_of(0, 2, Compression::None);
    let mut garbled = batch_of(2, 3, Compression::None);
    garbled[22] |= 1; // claims gzip; restamping seals the CRC again
    batch::restamp_producer(&mut garbled, -1, -1, -1);
    bytes.extend_from_slice(&garbled);
    let mut corrupt = batch_of(5, 1, Compression::None);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // fails its CRC
    bytes.extend_from_slice(&corrupt);
    let fetched = Bytes::from(bytes);
    for from in [0, 1, 2, 5] {
        let (records, error) = cached(&cache, &fetched, from);
        assert_eq!((records, error.clone()), plain(&fetched, from));
        assert!(error.is_some());
    }
    assert_eq!(cache.batches(), 1, "only the good batch is kept");
    let past_garbled = fetched.slice(fetched.len() - corrupt.len()..);
    assert_eq!(cached(&cache, &past_garbled, 5), plain(&past_garbled, 5));
    let truncated = fetched.slice(..fetched.len() - 3);
    assert_eq!(cached(&cache, &truncated, 0), plain(&truncated, 0));
}

#[test]
fn the_oldest_batches_go_first_past_the_bounds() {
    let cache = DecodedBatches::bounded(10, 1 << 20);
    let fetched = log(&[4, 4, 4, 20]);
    for _ in 0..2 {
        assert_eq!(cached(&cache, &fetched, 0), plain(&fetched, 0));
    }
    // The fourth batch alone is past the bound: read, not kept; 12 > 10 evicts one.
    assert_eq!(cache.batches(), 2);
    // Bytes: room for one uncompressed batch of two records, not two.
    let one = batch_of(0, 2, Compression::None).len();
    let cache = DecodedBatches::bounded(100, one * 3 / 2);
    let mut two = batch_of(0, 2, Compression::None);
    two.extend(batch_of(2, 2, Compression::None));
    let two = Bytes::from(two);
    for _ in 0..2 {
        assert_eq!(cached(&cache, &two, 0), plain(&two, 0));
    }
    assert_eq!(cache.batches(), 1);
}

proptest! {
    /// Through the cache, any read of any log gives what decoding it gives, the
    /// first time and every time after.
    #[test]
    fn reads_through_the_cache_match_decoding(
        sizes in proptest::collection::vec(1usize..6, 1..6),
        froms in proptest::collection::vec(0u64..30, 1..5),
        bound in 3usize..40,
    ) {
        let cache = DecodedBatches::bounded(bound, 1 << 20);
        let fetched = log(&sizes);
        for from in froms {
            prop_assert_eq!(cached(&cache, &fetched, from), plain(&fetched, from));
            prop_assert_eq!(cached(&cache, &fetched, from), plain(&fetched, from));
        }
    }
}

/// Marks its drop: stands for a segment's memory map behind fetched bytes.
struct Owner {
    bytes: Vec<u8>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn kept_batches_do_not_hold_the_fetched_buffer() {
    let cache = DecodedBatches::default();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner = Owner {
        bytes: log(&[3, 2]).to_vec(),
        dropped: dropped.clone(),
    };
    let fetched = Bytes::from_owner(owner);
    for _ in 0..2 {
        let (records, error) = cached(&cache, &fetched, 0);
        assert!(error.is_none());
        assert_eq!(records.len(), 5);
    }
    drop(fetched);
    assert_eq!(cache.batches(), 2);
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the cache holds copies, not the fetched buffer"
    );
}

#[test]
fn batches_read_once_are_remembered_within_a_bound() {
    let cache = DecodedBatches {
        max_seen: 2,
        ..DecodedBatches::default()
    };
    let fetched = log(&[1, 1, 1]);
    cached(&cache, &fetched, 0);
    // The first batch was forgotten for the third: read again, it is read once more.
    cached(
        &cache,
        &fetched.slice(..batch_of(0, 1, Compression::None).len()),
        0,
    );
    assert_eq!(cache.batches(), 0);
    let seen = recover(cache.cache.lock()).seen_order.len();
    assert_eq!(seen, 2);
}
