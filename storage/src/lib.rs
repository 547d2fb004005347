//! pubsub-storage: one partition's log on disk.
//!
//! A partition is a directory of segments; each segment is a `.log` of Kafka
//! RecordBatch v2 batches with a sparse offset index and a time index, both mmap'd.
//! The crate is synchronous and knows nothing of topics, gRPC or tokio.
//!
//! The API is small: [`Log`] with its [`LogConfig`], the record codec
//! ([`BatchBuilder`], [`DecodedBatch`]) and the [`batch`] layout the client and tests
//! read and write raw batches with; the other modules are internal.
//!
//! - [`batch`]: the batch header layout, validation, CRC and offset stamping.
//! - `records`: the record encoder ([`BatchBuilder`]) and decoder ([`DecodedBatch`]).
//! - `validate`: the record walk that proves a producer's batch decodes.
//! - `compression`: gzip, LZ4 and zstd with bounded decompression.
//! - `segment`: active and sealed segments, recovery of a torn tail.
//! - `index`: the mmap'd offset and time indexes.
//! - `log`: the partition log: append, read, roll, truncate, retention, group commit.
//! - `retention`: the pure choice of segments to delete.
//! - `producers`: idempotent producers' sequences, to drop retries.
//! - `epochs`: the leader-epoch checkpoint used to truncate a diverged follower.

#![warn(unreachable_pub)]

pub mod batch;
mod compression;
mod config;
mod epochs;
mod error;
mod index;
mod lock;
mod log;
mod producers;
mod records;
mod retention;
mod segment;
mod validate;
mod varint;

pub use batch::{BatchHeader, Compression};
pub use config::{FsyncPolicy, LogConfig, SEGMENT_BYTES_MAX};
pub use epochs::replace_file;
pub use error::{Error, Result};
pub use log::{AppendInfo, Clock, Log, ReadSlice, ValidatedBatch};
pub use records::{
    BatchBuilder, DECOMPRESSED_BATCH_BYTES_MAX, DecodedBatch, Header, ProducerStamp, Record,
    RecordIter, record_iter,
};
pub use retention::RetentionPolicy;
