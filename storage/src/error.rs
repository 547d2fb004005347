//! The one error type of the storage crate: every way a batch, a segment or a log
//! operation can fail, with the ids and paths a person needs to act on it.

use std::path::PathBuf;

/// Result alias used throughout the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while encoding, decoding, writing or reading a log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes that should hold a record batch do not (bad length, magic, field or layout).
    #[error("malformed batch: {reason}")]
    MalformedBatch {
        /// What exactly is wrong, for a person to read.
        reason: String,
    },
    /// The batch CRC-32C does not match its contents.
    #[error("batch crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC carried in the batch header.
        stored: u32,
        /// CRC computed over the batch body.
        computed: u32,
    },
    /// A batch is larger than the configured maximum.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Size of the batch in bytes.
        size: usize,
        /// Configured limit in bytes.
        limit: usize,
    },
    /// The batch uses a compression codec we do not support.
    #[error("unsupported compression codec {codec} (supported: none, gzip, lz4, zstd)")]
    UnsupportedCompression {
        /// The codec id found in the attributes (Kafka numbering).
        codec: u8,
    },
    /// A compressed batch would decompress to more bytes than allowed.
    #[error("batch decompresses to more than {limit} bytes")]
    DecompressedTooLarge {
        /// The bound that was hit.
        limit: usize,
    },
    /// Compression failed.
    #[error("cannot compress batch: {0}")]
    Compress(#[source] std::io::Error),
    /// Decompression failed: the compressed bytes are corrupt.
    #[error("cannot decompress batch: {0}")]
    Decompress(#[source] std::io::Error),
    /// A follower appended a batch whose offsets do not continue the log.
    #[error("batch base offset {base_offset} does not follow the log end offset {log_end_offset}")]
    NonContiguousOffset {
        /// Base offset carried by the batch.
        base_offset: u64,
        /// The log end offset the batch should have started at.
        log_end_offset: u64,
    },
    /// A read asked for an offset outside `[log_start_offset, log_end_offset]`.
    #[error(
        "offset {offset} is out of range: valid offsets are {log_start_offset}..={log_end_offset}"
    )]
    OffsetOutOfRange {
        /// The requested offset.
        offset: u64,
        /// First offset still stored.
        log_start_offset: u64,
        /// Offset the next appended record will get.
        log_end_offset: u64,
    },
    /// A closed segment in the middle of the log is damaged; the log refuses to open.
    #[error("segment {path} is corrupt at byte {position}: {reason}")]
    SegmentCorrupt {
        /// The damaged `.log` file.
        path: PathBuf,
        /// Byte position of the first bad batch.
        position: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An idempotent producer's batch does not continue its sequence.
    #[error("out of order sequence: {reason}")]
    OutOfOrderSequence {
        /// Which producer, and what was expected.
        reason: String,
    },
    /// A segment or index would exceed its addressable size.
    #[error("segment full: {reason}")]
    SegmentFull {
        /// Which limit was hit.
        reason: String,
    },
    /// An earlier fsync failed; the log stops acknowledging writes until reopened from disk.
    #[error("log {path} is failed after an fsync error and must be reopened from disk")]
    LogFailed {
        /// Directory of the failed log.
        path: PathBuf,
    },
    /// The filesystem holding `path` is full (ENOSPC) or the quota is spent (EDQUOT).
    /// Nothing of the failed write was acknowledged; writes succeed again once space
    /// is freed, and reads keep working meanwhile.
    #[error("no space left on the device holding {path}")]
    DiskFull {
        /// The file that could not grow.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Records were cut from the log (a truncation by a new leader) before they became
    /// durable, so their append cannot be acknowledged; the producer should retry.
    #[error(
        "records below offset {end_offset} of {path} were cut before they were durable (log end {log_end_offset})"
    )]
    AppendLost {
        /// Directory of the log.
        path: PathBuf,
        /// End of the append that was waiting.
        end_offset: u64,
        /// The log end offset after the cut.
        log_end_offset: u64,
    },
    /// An invalid configuration value.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// An I/O error on a named file.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds a [`Error::MalformedBatch`] from anything printable.
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Error::MalformedBatch {
            reason: reason.into(),
        }
    }
}

/// Attaches a path to an `io::Error`, so every I/O failure names its file.
pub(crate) trait IoContext<T> {
    /// Wraps the error with the path it concerns.
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| io_error(path, source))
    }
}

/// Names the file of an I/O error, and tells a full disk apart from other failures so
/// callers can answer it as a resource limit rather than an internal error.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> Error {
    let path = path.to_path_buf();
    if matches!(
        source.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        Error::DiskFull { path, source }
    } else {
        Error::Io { path, source }
    }
}
