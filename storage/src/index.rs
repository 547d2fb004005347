//! Sparse indexes of a segment: offset -> file position and timestamp -> offset.
//!
//! While its segment is active an index lives in memory (bounded by `index_bytes`);
//! it is never trusted after a crash anyway, because the active segment's index is
//! rebuilt while its tail is checked. When the segment is sealed the index is written
//! to its file, an array of fixed-size, big-endian entries followed by a trailer, and
//! read back through a read-only map:
//!
//! ```text
//! entries            entry_count * ENTRY bytes
//! entry_count        u32
//! covered_log_bytes  u64   size of the .log file the entries describe
//! crc                u32   CRC-32 (crc32fast) of the entries and the two fields above
//! ```
//!
//! A sealed index whose trailer does not check out, or whose `covered_log_bytes`
//! differs from its log's size, is rebuilt from the log.
//!
//! Offset index entry (8 bytes): relative offset u32, position u32.
//! Time index entry (12 bytes): timestamp i64, relative offset u32; timestamps increase.

use std::fs::{File, OpenOptions};
use std::path::Path;

use memmap2::Mmap;

use crate::error::{IoContext, Result};

/// Bytes of the trailer of a sealed index.
pub(crate) const TRAILER_BYTES: usize = 16;

/// Entry shape of one of the two index kinds.
pub(crate) trait Entry: Copy {
    /// Encoded size of an entry.
    const BYTES: usize;
    /// Writes the entry into `out` (exactly `BYTES` long).
    fn write(&self, out: &mut [u8]);
    /// Reads an entry from `bytes` (exactly `BYTES` long).
    fn read(bytes: &[u8]) -> Self;
}

/// Offset index entry: where in the `.log` the batch holding an offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the `.log`.
    pub position: u32,
}

impl Entry for OffsetEntry {
    const BYTES: usize = 8;
    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn read(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Time index entry: a batch whose max timestamp exceeds every earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// The batch's max timestamp, ms.
    pub timestamp: i64,
    /// The batch's base offset minus the segment's base offset.
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const BYTES: usize = 12;
    fn write(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn read(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// Binary search over encoded entries: index of the last entry with `key(e) <= target`.
fn last_at_or_below<E: Entry>(
    bytes: &[u8],
    count: usize,
    target: i64,
    key: impl Fn(&E) -> i64,
) -> Option<E> {
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let entry = E::read(&bytes[mid * E::BYTES..(mid + 1) * E::BYTES]);
        if key(&entry) <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo > 0).then(|| E::read(&bytes[(lo - 1) * E::BYTES..lo * E::BYTES]))
}

/// The index of an active segment, kept in memory and written to its file when the
/// segment is sealed.
///
/// An active index is rebuilt from the log after a crash anyway, so a file would only
/// be a cache; keeping it in memory means no mapped page is ever written, so a full
/// disk can never turn an index write into SIGBUS. Its size stays bounded by
/// `max_bytes`, as the file's was.
pub(crate) struct ActiveIndex<E: Entry> {
    bytes: Vec<u8>,
    capacity: usize,
    _entry: std::marker::PhantomData<E>,
}

impl<E: Entry> ActiveIndex<E> {
    /// An empty index that holds at most `max_bytes` of entries.
    pub(crate) fn new(max_bytes: usize) -> Self {
        ActiveIndex {
            bytes: Vec::new(),
            capacity: (max_bytes / E::BYTES).max(1) * E::BYTES,
            _entry: std::marker::PhantomData,
        }
    }

    /// True when no further entry fits.
    pub(crate) fn is_full(&self) -> bool {
        self.bytes.len() + E::BYTES > self.capacity
    }

    /// Appends an entry; the caller keeps keys increasing and checks `is_full` first.
    pub(crate) fn push(&mut self, entry: E) {
        assert!(!self.is_full(), "index push past its capacity");
        let at = self.bytes.len();
        self.bytes.resize(at + E::BYTES, 0);
        entry.write(&mut self.bytes[at..]);
    }

    fn count(&self) -> usize {
        self.bytes.len() / E::BYTES
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<E> {
        let count = self.count();
        (count > 0).then(|| E::read(&self.bytes[(count - 1) * E::BYTES..]))
    }

    /// Last entry whose key is at or below `target`.
    pub(crate) fn lookup(&self, target: i64, key: impl Fn(&E) -> i64) -> Option<E> {
        last_at_or_below(&self.bytes, self.count(), target, key)
    }

    /// Writes the entries and a trailer to `path`, synced if `durable` (else the
    /// segment's background flush syncs it); the index is then sealed. On failure (a
    /// full disk) the index is unchanged and sealing can be tried again.
    pub(crate) fn write_sealed(
        &self,
        path: &Path,
        covered_log_bytes: u64,
        durable: bool,
    ) -> Result<()> {
        write_file(path, &self.bytes, self.count(), covered_log_bytes, durable)
    }
}

/// Writes `entries` (encoded) and their trailer to `path`, then syncs the file if
/// `durable`. A torn file fails its trailer check on open and is rebuilt.
fn write_file(
    path: &Path,
    entries: &[u8],
    count: usize,
    covered_log_bytes: u64,
    durable: bool,
) -> Result<()> {
    use std::io::Write;
    let trailer = trailer(entries, count, covered_log_bytes);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)?;
    file.write_all(entries).at(path)?;
    file.write_all(&trailer).at(path)?;
    if durable {
        file.sync_all().at(path)?;
    }
    Ok(())
}

fn trailer(entries: &[u8], count: usize, covered_log_bytes: u64) -> [u8; TRAILER_BYTES] {
    let mut out = [0u8; TRAILER_BYTES];
    out[..4].copy_from_slice(&(count as u32).to_be_bytes());
    out[4..12].copy_from_slice(&covered_log_bytes.to_be_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(entries);
    hasher.update(&out[..12]);
    out[12..].copy_from_slice(&hasher.finalize().to_be_bytes());
    out
}

/// The index of a sealed segment: read-only entries checked against its trailer.
pub(crate) struct SealedIndex<E: Entry> {
    entries: SealedEntries,
    count: usize,
    _entry: std::marker::PhantomData<E>,
}

/// Where a sealed index's entries live: its mapped file, or memory when the file
/// could not be written (a full disk) and the index was rebuilt from the log.
enum SealedEntries {
    Empty,
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl SealedEntries {
    fn bytes(&self) -> &[u8] {
        match self {
            SealedEntries::Empty => &[],
            SealedEntries::Mapped(map) => map,
            SealedEntries::Owned(bytes) => bytes,
        }
    }
}

impl<E: Entry> SealedIndex<E> {
    /// Opens a sealed index; `Ok(None)` when it is missing or fails its trailer check,
    /// in which case the caller rebuilds it from the log.
    pub(crate) fn open(path: &Path, covered_log_bytes: u64) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(path),
        };
        let len = file.metadata().at(path)?.len() as usize;
        if len < TRAILER_BYTES || !(len - TRAILER_BYTES).is_multiple_of(E::BYTES) {
            return Ok(None);
        }
        let count = (len - TRAILER_BYTES) / E::BYTES;
        // SAFETY: sealed index files are never written again while the log is open,
        // and a sealed file has all its blocks (it was written, not extended).
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let entries = count * E::BYTES;
        if map[entries..] != trailer(&map[..entries], count, covered_log_bytes) {
            return Ok(None);
        }
        Ok(Some(SealedIndex {
            entries: if count > 0 {
                SealedEntries::Mapped(map)
            } else {
                SealedEntries::Empty
            },
            count,
            _entry: std::marker::PhantomData,
        }))
    }

    /// Builds a sealed index from entries rebuilt from the log and writes it to
    /// `path`. If the file cannot be written (a full disk), the index is served from
    /// memory and rebuilt again on the next open: reads must not depend on free space.
    pub(crate) fn write(path: &Path, entries: &[E], covered_log_bytes: u64) -> Self {
        let mut bytes = vec![0u8; entries.len() * E::BYTES];
        for (i, entry) in entries.iter().enumerate() {
            entry.write(&mut bytes[i * E::BYTES..(i + 1) * E::BYTES]);
        }
        if let Err(e) = write_file(path, &bytes, entries.len(), covered_log_bytes, true) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write a rebuilt index; serving it from memory");
            // A partial file fails its trailer check and is rebuilt next time.
        }
        SealedIndex {
            count: entries.len(),
            entries: SealedEntries::Owned(bytes),
            _entry: std::marker::PhantomData,
        }
    }

    /// Last entry whose key is at or below `target`.
    pub(crate) fn lookup(&self, target: i64, key: impl Fn(&E) -> i64) -> Option<E> {
        last_at_or_below(self.entries.bytes(), self.count, target, key)
    }

    /// All entries, in order (used when a sealed segment becomes active again).
    pub(crate) fn entries(&self) -> Vec<E> {
        let bytes = self.entries.bytes();
        (0..self.count)
            .map(|i| E::read(&bytes[i * E::BYTES..(i + 1) * E::BYTES]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(e: &OffsetEntry) -> i64 {
        i64::from(e.relative_offset)
    }

    #[test]
    fn lookup_finds_the_last_entry_at_or_below() {
        let mut index = ActiveIndex::<OffsetEntry>::new(1024);
        for i in 0..10u32 {
            index.push(OffsetEntry {
                relative_offset: i * 10,
                position: i * 100,
            });
        }
        assert_eq!(index.lookup(-1, key), None);
        assert_eq!(index.lookup(0, key).unwrap().position, 0);
        assert_eq!(index.lookup(55, key).unwrap().position, 500);
        assert_eq!(index.lookup(1000, key).unwrap().position, 900);
    }

    #[test]
    fn sealed_index_checks_its_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut index = ActiveIndex::<OffsetEntry>::new(1024);
        index.push(OffsetEntry {
            relative_offset: 5,
            position: 4096,
        });
        index.write_sealed(&path, 8192, true).unwrap();
        let sealed = SealedIndex::<OffsetEntry>::open(&path, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(sealed.lookup(7, key).unwrap().position, 4096);
        assert!(
            SealedIndex::<OffsetEntry>::open(&path, 8000)
                .unwrap()
                .is_none()
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(
            SealedIndex::<OffsetEntry>::open(&path, 8192)
                .unwrap()
                .is_none()
        );
    }
}
