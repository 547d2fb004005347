//! Integration tests of the partition log: a model-based property test, crash and
//! corruption recovery, retention with an injected clock, and index rebuilds.
#![allow(clippy::unwrap_used, missing_docs)]

mod crash;
mod full_disk;
mod model;
mod recovery;
mod retention;
mod unsynced;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use pubsub_storage::{
    BatchBuilder, Compression, DecodedBatch, FsyncPolicy, Log, LogConfig, ProducerStamp,
};

/// A small configuration so tests roll segments and write many index entries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_bytes: 1024,
        index_interval_bytes: 256,
        max_batch_bytes: 4096,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

/// A batch of `count` records whose values name `tag` and their index.
pub fn batch(tag: u64, count: u32, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let value = format!("{tag}-{i}");
        builder.push(
            timestamp,
            Some(format!("k{i}").as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    builder
        .build(Compression::None, ProducerStamp::NONE)
        .unwrap()
        .unwrap()
}

/// Every record value in the log from `from`, by reading batch after batch.
pub fn read_all(log: &Log, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let slice = log.read(offset, 1 << 20).unwrap();
        if slice.is_empty() {
            return out;
        }
        for item in pubsub_storage::batch::batches(slice.as_ref()) {
            let (header, bytes) = item.unwrap();
            let decoded = DecodedBatch::new(bytes, 1 << 20).unwrap();
            for record in decoded.records() {
                let record = record.unwrap();
                if record.offset >= offset {
                    out.push((
                        record.offset,
                        String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
            offset = header.next_offset();
        }
    }
}

/// A clock the test moves by hand.
pub fn manual_clock(start: i64) -> (Arc<AtomicI64>, pubsub_storage::Clock) {
    let now = Arc::new(AtomicI64::new(start));
    let handle = now.clone();
    (now, Arc::new(move || handle.load(Ordering::SeqCst)))
}

/// Names of the files in a directory, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
