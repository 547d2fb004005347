//! The recovery point: the offset below which every closed segment is known to be on
//! disk, so recovery trusts those segments' indexes and checks only the segments
//! after it batch by batch (Kafka keeps the same point per partition).
//!
//! A segment sealed under fsync `interval` or `never` is synced by the log's
//! background flush after the roll, not under the writer lock, and the point moves
//! past it only then. A machine that stops before that may have lost any page of
//! such a segment; recovery then cuts the log at the first damaged batch rather than
//! refusing to open, which is exactly the loss those policies accept.
//!
//! File `recovery-point-checkpoint`, replaced atomically (write, fsync, rename):
//!
//! ```text
//! offset  u64  big-endian
//! crc     u32  CRC-32 (crc32fast) of the offset
//! ```
//! A missing file means a log written before the point existed, when every closed
//! segment was synced at its roll: all are trusted. A damaged file means 0: every
//! closed segment is checked.

use std::path::Path;

use crate::epochs::replace_file;
use crate::error::{IoContext, Result};

/// File name of the checkpoint inside a partition directory.
pub(crate) const FILE_NAME: &str = "recovery-point-checkpoint";
const FILE_BYTES: usize = 12;

/// Reads the recovery point of the log in `dir`: `None` when there is no file (every
/// closed segment is trusted), 0 when the file is damaged.
pub(super) fn load(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(decode(&bytes).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "damaged recovery point; checking every closed segment");
            0
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(&path),
    }
}

/// Records durably that every closed segment below `offset` is on disk.
pub(super) fn store(dir: &Path, offset: u64) -> Result<()> {
    replace_file(&dir.join(FILE_NAME), &encode(offset))
}

fn encode(offset: u64) -> [u8; FILE_BYTES] {
    let mut bytes = [0u8; FILE_BYTES];
    bytes[..8].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..8]);
    bytes[8..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; FILE_BYTES] = bytes.try_into().ok()?;
    let offset: [u8; 8] = bytes[..8].try_into().ok()?;
    let crc: [u8; 4] = bytes[8..].try_into().ok()?;
    (crc32fast::hash(&offset) == u32::from_be_bytes(crc)).then_some(u64::from_be_bytes(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn missing_means_trusted_and_damaged_means_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        store(dir.path(), 4096).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(4096));
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(0));
        std::fs::write(&path, &bytes[..5]).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(0));
    }

    proptest! {
        #[test]
        fn offsets_round_trip_and_any_bytes_decode_without_panic(
            offset in any::<u64>(),
            junk in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            prop_assert_eq!(decode(&encode(offset)), Some(offset));
            let _ = decode(&junk);
        }
    }
}
