//! Sparse, mmap'd indexes of a segment: offset -> file position and timestamp -> offset.
//!
//! An index file is an array of fixed-size, big-endian entries. While its segment is
//! active the file is preallocated to the configured maximum and written through a
//! mutable map; it is never trusted after a crash, because the active segment's index
//! is rebuilt while its tail is checked. When the segment is sealed the file is cut to
//! its entries and a trailer is appended:
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
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::error::{IoContext, Result};

/// Bytes of the trailer of a sealed index.
pub const TRAILER_BYTES: usize = 16;

/// Entry shape of one of the two index kinds.
pub trait Entry: Copy {
    /// Encoded size of an entry.
    const BYTES: usize;
    /// Writes the entry into `out` (exactly `BYTES` long).
    fn write(&self, out: &mut [u8]);
    /// Reads an entry from `bytes` (exactly `BYTES` long).
    fn read(bytes: &[u8]) -> Self;
}

/// Offset index entry: where in the `.log` the batch holding an offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
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
pub struct TimeEntry {
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

/// The index of an active segment: preallocated file, written through a mutable map.
pub struct ActiveIndex<E: Entry> {
    path: PathBuf,
    file: File,
    map: MmapMut,
    count: usize,
    _entry: std::marker::PhantomData<E>,
}

impl<E: Entry> ActiveIndex<E> {
    /// Creates (or truncates) the index file, preallocated for `max_bytes` of entries.
    pub fn create(path: &Path, max_bytes: usize) -> Result<Self> {
        let capacity = (max_bytes / E::BYTES).max(1) * E::BYTES;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .at(path)?;
        file.set_len(capacity as u64).at(path)?;
        // SAFETY: the file is ours alone (one writer per partition directory) and was
        // just sized to `capacity`; it is not shrunk while this map lives.
        let map = unsafe { MmapOptions::new().len(capacity).map_mut(&file) }.at(path)?;
        Ok(ActiveIndex {
            path: path.to_path_buf(),
            file,
            map,
            count: 0,
            _entry: std::marker::PhantomData,
        })
    }

    /// True when no further entry fits.
    pub fn is_full(&self) -> bool {
        (self.count + 1) * E::BYTES > self.map.len()
    }

    /// Appends an entry; the caller keeps keys increasing and checks `is_full` first.
    pub fn push(&mut self, entry: E) {
        assert!(!self.is_full(), "index push past its preallocated capacity");
        let at = self.count * E::BYTES;
        entry.write(&mut self.map[at..at + E::BYTES]);
        self.count += 1;
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<E> {
        (self.count > 0)
            .then(|| E::read(&self.map[(self.count - 1) * E::BYTES..self.count * E::BYTES]))
    }

    /// Last entry whose key is at or below `target`.
    pub fn lookup(&self, target: i64, key: impl Fn(&E) -> i64) -> Option<E> {
        last_at_or_below(&self.map, self.count, target, key)
    }

    /// Drops entries whose key is at or above `bound` (for truncation).
    pub fn truncate_from(&mut self, bound: i64, key: impl Fn(&E) -> i64) {
        while let Some(last) = self.last() {
            if key(&last) < bound {
                break;
            }
            self.count -= 1;
        }
    }

    /// Cuts the file to its entries plus a trailer and syncs it; the index is then sealed.
    pub fn seal(self, covered_log_bytes: u64) -> Result<()> {
        let ActiveIndex {
            path,
            file,
            map,
            count,
            ..
        } = self;
        let entries = count * E::BYTES;
        let trailer = trailer(&map[..entries], count, covered_log_bytes);
        map.flush().at(&path)?;
        drop(map);
        file.set_len(entries as u64).at(&path)?;
        use std::os::unix::fs::FileExt;
        file.write_all_at(&trailer, entries as u64).at(&path)?;
        file.sync_all().at(&path)
    }
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

/// The index of a sealed segment: read-only map of entries checked against its trailer.
pub struct SealedIndex<E: Entry> {
    map: Option<Mmap>,
    count: usize,
    _entry: std::marker::PhantomData<E>,
}

impl<E: Entry> SealedIndex<E> {
    /// Opens a sealed index; `Ok(None)` when it is missing or fails its trailer check,
    /// in which case the caller rebuilds it from the log.
    pub fn open(path: &Path, covered_log_bytes: u64) -> Result<Option<Self>> {
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
        // SAFETY: sealed index files are never written again while the log is open.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let entries = count * E::BYTES;
        if map[entries..] != trailer(&map[..entries], count, covered_log_bytes) {
            return Ok(None);
        }
        Ok(Some(SealedIndex {
            map: (count > 0).then_some(map),
            count,
            _entry: std::marker::PhantomData,
        }))
    }

    /// Writes a sealed index from entries rebuilt from the log, then opens it.
    pub fn write(path: &Path, entries: &[E], covered_log_bytes: u64) -> Result<Self> {
        let mut bytes = vec![0u8; entries.len() * E::BYTES];
        for (i, entry) in entries.iter().enumerate() {
            entry.write(&mut bytes[i * E::BYTES..(i + 1) * E::BYTES]);
        }
        let trailer = trailer(&bytes, entries.len(), covered_log_bytes);
        bytes.extend_from_slice(&trailer);
        std::fs::write(path, &bytes).at(path)?;
        File::open(path).at(path)?.sync_all().at(path)?;
        SealedIndex::open(path, covered_log_bytes)?.ok_or_else(|| crate::Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("index just written fails its own check"),
        })
    }

    /// Last entry whose key is at or below `target`.
    pub fn lookup(&self, target: i64, key: impl Fn(&E) -> i64) -> Option<E> {
        let map = self.map.as_ref()?;
        last_at_or_below(map, self.count, target, key)
    }

    /// All entries, in order (used when a sealed segment becomes active again).
    pub fn entries(&self) -> Vec<E> {
        let Some(map) = self.map.as_ref() else {
            return Vec::new();
        };
        (0..self.count)
            .map(|i| E::read(&map[i * E::BYTES..(i + 1) * E::BYTES]))
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
        let dir = tempfile::tempdir().unwrap();
        let mut index = ActiveIndex::<OffsetEntry>::create(&dir.path().join("i"), 1024).unwrap();
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
        let mut index = ActiveIndex::<OffsetEntry>::create(&path, 1024).unwrap();
        index.push(OffsetEntry {
            relative_offset: 5,
            position: 4096,
        });
        index.seal(8192).unwrap();
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
