//! The one encoding of Raft payloads, log entries and snapshots: JSON via serde, with
//! the input length checked before anything is parsed.
//!
//! JSON is slower and larger than a binary format, but metadata is small, it needs no
//! extra dependency, and a stuck cluster can be inspected with `sled` tooling by eye.
//! serde_json allocates in proportion to the input it has read, so bounding the input
//! bounds the allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest payload decoded: the gRPC message limit, which also bounds what a peer sends.
pub(crate) const PAYLOAD_BYTES_MAX: usize = pubsub_proto::MAX_MESSAGE_BYTES;
/// Largest snapshot accepted: far above what [`crate::command::PARTITIONS_TOTAL_MAX`]
/// partitions take, far below what would strain memory.
pub(crate) const SNAPSHOT_BYTES_MAX: usize = 256 << 20;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the limit for its kind.
    #[error("{len} bytes is over the {limit}-byte limit")]
    TooLong {
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not valid JSON for the expected type.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Encodes a value.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(serde_json::to_vec(value)?)
}

/// Decodes a value of at most `limit` bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLong {
            len: bytes.len(),
            limit,
        });
    }
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_malformed_input_is_an_error_not_a_panic() {
        assert!(matches!(
            decode::<u32>(b"12345", 4),
            Err(CodecError::TooLong { len: 5, limit: 4 })
        ));
        assert!(matches!(decode::<u32>(b"[", 10), Err(CodecError::Json(_))));
        assert!(decode::<Vec<u8>>(b"[1,2,", 100).is_err());
        assert_eq!(decode::<u32>(&encode(&7u32).unwrap(), 10).unwrap(), 7);
    }
}
