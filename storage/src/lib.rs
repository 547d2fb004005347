//! pubsub-storage: one partition's log on disk.
//!
//! A partition is a directory of segments; each segment is a `.log` of Kafka
//! RecordBatch v2 batches with a sparse offset index and a time index, both mmap'd.
//! The crate is synchronous and knows nothing of topics, gRPC or tokio.
//!
//! - [`batch`]: the batch header layout, validation, CRC and offset stamping.
//! - [`records`]: the record encoder ([`BatchBuilder`]) and decoder ([`DecodedBatch`]).
//! - [`validate`]: the record walk that proves a producer's batch decodes.
//! - [`compression`]: gzip, LZ4 and zstd with bounded decompression.
//! - [`segment`]: active and sealed segments, recovery of a torn tail.
//! - [`index`]: the mmap'd offset and time indexes.
//! - [`log`]: the partition log: append, read, roll, truncate, retention, group commit.
//! - [`retention`]: the pure choice of segments to delete.
//! - [`producers`]: idempotent producers' sequences, to drop retries.
//! - [`epochs`]: the leader-epoch checkpoint used to truncate a diverged follower.

pub mod batch;
pub mod compression;
pub mod config;
pub mod epochs;
pub mod error;
pub mod index;
mod lock;
pub mod log;
pub mod producers;
pub mod records;
pub mod retention;
pub mod segment;
pub mod validate;
pub mod varint;

pub use batch::{BatchHeader, Compression};
pub use config::{FsyncPolicy, LogConfig};
pub use error::{Error, Result};
pub use log::{AppendInfo, Clock, Log, ReadSlice, ValidatedBatch};
pub use records::{BatchBuilder, DecodedBatch, Header, ProducerStamp, Record};
pub use retention::RetentionPolicy;
