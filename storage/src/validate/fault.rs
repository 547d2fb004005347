//! Why one record of a batch is malformed: the typed reason the record walk returns,
//! made text only when the batch is refused.

use crate::error::Error;

/// What is wrong with one record, before its index is prefixed; built only on failure.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordFault {
    /// The record's length is negative.
    #[error("negative length {0}")]
    NegativeLength(i32),
    /// The record's length runs past the records section.
    #[error("length {length} runs past the end of the records section ({remain} bytes remain)")]
    PastSection {
        /// The record's length.
        length: usize,
        /// Bytes left in the section.
        remain: usize,
    },
    /// A zero length: not even the attributes byte fits.
    #[error("length 0 leaves no room for the attributes")]
    NoAttributes,
    /// The offset delta is not the record's index.
    #[error("offset delta {got}, expected {expected} (deltas run 0..n-1 in order)")]
    OffsetDelta {
        /// The delta stored.
        got: i32,
        /// The record's index.
        expected: u32,
    },
    /// Bytes are left in the record after its last field.
    #[error("length {length} leaves {left} bytes after the last field")]
    Trailing {
        /// The record's length.
        length: usize,
        /// Bytes left over.
        left: usize,
    },
    /// The header count is negative.
    #[error("negative header count {0}")]
    NegativeHeaderCount(i32),
    /// More headers than the record's remaining bytes can hold.
    #[error("header count {count} is more than the {left} bytes left in the record can hold")]
    TooManyHeaders {
        /// The header count.
        count: usize,
        /// Bytes left in the record.
        left: usize,
    },
    /// A header's key or value is malformed.
    #[error("header {index}: {fault}")]
    Header {
        /// The header's index.
        index: usize,
        /// What is wrong with it.
        fault: Box<RecordFault>,
    },
    /// A header's key is null.
    #[error("header {0}: null key")]
    NullHeaderKey(usize),
    /// A header's key is not UTF-8.
    #[error("header {0}: key is not utf-8")]
    HeaderKeyNotUtf8(usize),
    /// A field's length is negative but not -1 (null).
    #[error("{field} length {length} is negative (only -1, null, is allowed)")]
    NegativeField {
        /// The field.
        field: &'static str,
        /// Its length.
        length: i32,
    },
    /// A field runs past the end of the record.
    #[error("{field} length {length} runs past the end of the record ({remain} bytes remain)")]
    FieldPastEnd {
        /// The field.
        field: &'static str,
        /// Its length.
        length: usize,
        /// Bytes left in the record.
        remain: usize,
    },
    /// A field's varint cannot be read.
    #[error("{field}: {}", bare(error))]
    Varint {
        /// The field.
        field: &'static str,
        /// The varint's error.
        error: Box<Error>,
    },
}

/// An error's text without the "malformed batch" prefix (the batch's error adds it).
fn bare(error: &Error) -> String {
    match error {
        Error::MalformedBatch { reason } => reason.clone(),
        other => other.to_string(),
    }
}
