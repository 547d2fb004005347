//! A power cut, after the fact: undoes what a killed process wrote after each file's
//! last fsync, from the undo log its LD_PRELOAD shim (`tests/e2e/powercut_shim.c`)
//! kept. The page cache survives `kill -9`; a power cut does not, so this is what
//! stands between the two.
//!
//! [`Cut::DropAll`] drops every unsynced write (what a cut the instant after the last
//! fsync leaves). [`Cut::Torn`] keeps, per file, a random number of the oldest unsynced
//! writes and cuts the next one at a random 512-byte sector, as a disk that wrote back
//! part of its cache before the power went leaves it (drawn from a seed, so a failure
//! replays).
//!
//! Directory entries: a file created after its directory's last fsync is removed by
//! either cut (its name was never made durable), as a crash-consistent file system
//! such as ext4 with `data=ordered` may leave it.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MAGIC: u32 = 0x5455_4350;
const HEADER_BYTES: usize = 64;
const SECTOR: u64 = 512;

/// Which of the unsynced writes the cut loses.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// All of them.
    DropAll,
    /// A random suffix of each file's, the first kept write torn at a sector.
    Torn {
        /// Seed of the draws.
        seed: u64,
    },
}

/// What a cut undid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files with at least one write undone.
    pub files: usize,
    /// Writes and truncations undone, whole or in part.
    pub undone: usize,
    /// Writes cut part-way.
    pub torn: usize,
    /// Bytes written that the cut lost.
    pub bytes: u64,
    /// Files removed: created after their directory's last fsync.
    pub removed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Truncate,
    Sync,
    Dead,
    Create,
}

/// One record of the undo log; `saved` indexes the log's bytes.
#[derive(Clone, Debug)]
struct Record {
    kind: Kind,
    seq: u64,
    inode: (u64, u64),
    offset: u64,
    len: u64,
    old_size: u64,
    saved: std::ops::Range<usize>,
}

/// Undoes, in the files under `dir`, the writes `log` records as never synced.
pub fn power_cut(log: &Path, dir: &Path, cut: Cut) -> io::Result<CutReport> {
    let bytes = match std::fs::read(log) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let records = parse(&bytes)?;
    let paths = inodes(dir)?;
    let unnamed = unsynced_creations(&records);
    let mut rng = match cut {
        Cut::DropAll => None,
        Cut::Torn { seed } => Some(StdRng::seed_from_u64(seed)),
    };
    let mut report = CutReport::default();
    let mut unsynced: Vec<_> = unsynced_by_inode(records).into_iter().collect();
    unsynced.sort_by_key(|(inode, _)| *inode);
    for (inode, writes) in unsynced {
        let Some(path) = paths.get(&inode) else {
            continue; // deleted since
        };
        let (keep, tear) = match rng.as_mut() {
            None => (0, 0),
            Some(rng) => draw(rng, &writes),
        };
        if keep == writes.len() {
            continue;
        }
        let file = OpenOptions::new().write(true).open(path)?;
        for record in writes[keep + 1..].iter().rev() {
            report.bytes += undo(&file, record, 0, &bytes)?;
        }
        report.bytes += undo(&file, &writes[keep], tear, &bytes)?;
        report.files += 1;
        report.undone += writes.len() - keep;
        report.torn += usize::from(tear > 0);
    }
    for inode in unnamed {
        if let Some(path) = paths.get(&inode) {
            std::fs::remove_file(path)?;
            report.removed += 1;
        }
    }
    Ok(report)
}

/// Files created after their directory's last fsync (and not deleted since).
fn unsynced_creations(records: &[Record]) -> Vec<(u64, u64)> {
    // File -> (when it was created, its directory).
    let mut created: HashMap<(u64, u64), (u64, (u64, u64))> = HashMap::new();
    let mut synced: HashMap<(u64, u64), u64> = HashMap::new();
    for record in records {
        match record.kind {
            Kind::Create => {
                created.insert(record.inode, (record.seq, (record.len, record.offset)));
            }
            Kind::Dead => {
                created.remove(&record.inode);
            }
            Kind::Sync => {
                let at = synced.entry(record.inode).or_default();
                *at = (*at).max(record.seq);
            }
            Kind::Write | Kind::Truncate => {}
        }
    }
    let mut unnamed: Vec<_> = created
        .into_iter()
        .filter(|(_, (seq, dir))| synced.get(dir).is_none_or(|at| at < seq))
        .map(|(inode, _)| inode)
        .collect();
    unnamed.sort_unstable();
    unnamed
}

/// How many of a file's unsynced writes survive, and how many bytes of the next one.
fn draw(rng: &mut StdRng, writes: &[Record]) -> (usize, u64) {
    let keep = rng.random_range(0..=writes.len());
    // A write is torn at a sector boundary of the file strictly inside it, if any.
    let tear = match writes.get(keep) {
        Some(next) if next.kind == Kind::Write => {
            let first = next.offset / SECTOR + 1;
            let last = (next.offset + next.len - 1) / SECTOR;
            match first <= last {
                true => rng.random_range(first..=last) * SECTOR - next.offset,
                false => 0,
            }
        }
        _ => 0,
    };
    (keep, tear)
}

/// Every file's writes after its last fsync, oldest first. A file deleted (its inode
/// free for reuse) starts over.
fn unsynced_by_inode(records: Vec<Record>) -> HashMap<(u64, u64), Vec<Record>> {
    let mut writes: HashMap<(u64, u64), Vec<Record>> = HashMap::new();
    let mut synced: HashMap<(u64, u64), u64> = HashMap::new();
    for record in records {
        match record.kind {
            Kind::Dead => {
                writes.remove(&record.inode);
                synced.remove(&record.inode);
            }
            Kind::Sync => {
                let at = synced.entry(record.inode).or_default();
                *at = (*at).max(record.seq);
            }
            Kind::Write | Kind::Truncate => writes.entry(record.inode).or_default().push(record),
            Kind::Create => {}
        }
    }
    for (inode, list) in writes.iter_mut() {
        let at = synced.get(inode).copied().unwrap_or(0);
        list.retain(|r| r.seq > at);
        list.sort_by_key(|r| r.seq);
    }
    writes.retain(|_, list| !list.is_empty());
    writes
}

/// Puts back what `record` replaced, past its first `kept` bytes; returns the bytes
/// of the write lost.
fn undo(file: &std::fs::File, record: &Record, kept: u64, log: &[u8]) -> io::Result<u64> {
    let saved = &log[record.saved.clone()];
    match record.kind {
        Kind::Write => {
            if (saved.len() as u64) > kept {
                file.write_all_at(&saved[kept as usize..], record.offset + kept)?;
            }
            if record.offset + record.len > record.old_size {
                file.set_len(record.old_size.max(record.offset + kept))?;
            }
            Ok(record.len - kept)
        }
        Kind::Truncate => {
            file.set_len(record.old_size)?;
            file.write_all_at(saved, record.offset)?;
            Ok(0)
        }
        Kind::Sync | Kind::Dead | Kind::Create => Ok(0),
    }
}

fn parse(bytes: &[u8]) -> io::Result<Vec<Record>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("undo log: {what}"));
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + HEADER_BYTES)
            .ok_or_else(|| bad("a torn header"))?;
        let word = |i: usize| {
            let start = 8 + i * 8;
            u64::from_ne_bytes(header[start..start + 8].try_into().unwrap_or_default())
        };
        let magic = u32::from_ne_bytes(header[..4].try_into().unwrap_or_default());
        let kind = u32::from_ne_bytes(header[4..8].try_into().unwrap_or_default());
        if magic != MAGIC {
            return Err(bad("a record without its magic"));
        }
        let kind = match kind {
            1 => Kind::Write,
            2 => Kind::Truncate,
            3 => Kind::Sync,
            4 => Kind::Dead,
            5 => Kind::Create,
            _ => return Err(bad("an unknown record kind")),
        };
        let saved_len = usize::try_from(word(6)).map_err(|_| bad("a huge record"))?;
        let start = at + HEADER_BYTES;
        let end = start
            .checked_add(saved_len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| bad("a torn record"))?;
        records.push(Record {
            kind,
            seq: word(0),
            inode: (word(1), word(2)),
            offset: word(3),
            len: word(4),
            old_size: word(5),
            saved: start..end,
        });
        at = end;
    }
    Ok(records)
}

/// The regular files under `dir`, by (device, inode).
fn inodes(dir: &Path) -> io::Result<HashMap<(u64, u64), PathBuf>> {
    let mut found = HashMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                found.insert((meta.dev(), meta.ino()), entry.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a file as the shim sees a process do it, logging what the shim logs.
    struct Recorder {
        file: std::fs::File,
        image: Vec<u8>,
        log: Vec<u8>,
        seq: u64,
        inode: (u64, u64),
    }

    impl Recorder {
        fn new(path: &Path) -> Recorder {
            let file = std::fs::File::create(path).unwrap();
            let meta = file.metadata().unwrap();
            Recorder {
                file,
                image: Vec::new(),
                log: Vec::new(),
                seq: 0,
                inode: (meta.dev(), meta.ino()),
            }
        }

        fn record(&mut self, kind: u32, seq: u64, words: [u64; 3], saved: &[u8]) {
            self.log.extend_from_slice(&MAGIC.to_ne_bytes());
            self.log.extend_from_slice(&kind.to_ne_bytes());
            let all = [
                seq,
                self.inode.0,
                self.inode.1,
                words[0],
                words[1],
                words[2],
            ];
            for word in all.iter().chain([saved.len() as u64].iter()) {
                self.log.extend_from_slice(&word.to_ne_bytes());
            }
            self.log.extend_from_slice(saved);
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            let old_size = self.image.len() as u64;
            let end = (offset as usize + data.len()).min(self.image.len());
            let saved = self.image.get(offset as usize..end).unwrap_or(&[]).to_vec();
            self.file.write_all_at(data, offset).unwrap();
            let needed = offset as usize + data.len();
            if self.image.len() < needed {
                self.image.resize(needed, 0);
            }
            self.image[offset as usize..needed].copy_from_slice(data);
            self.seq += 1;
            let words = [offset, data.len() as u64, old_size];
            self.record(1, self.seq, words, &saved);
        }

        fn truncate(&mut self, len: u64) {
            let old_size = self.image.len() as u64;
            let saved = self.image.get(len as usize..).unwrap_or(&[]).to_vec();
            self.file.set_len(len).unwrap();
            self.image.resize(len as usize, 0);
            self.seq += 1;
            self.record(2, self.seq, [len, 0, old_size], &saved);
        }

        fn sync(&mut self) {
            self.record(3, self.seq, [0, 0, 0], &[]);
        }
    }

    /// Random writes, truncations and syncs; returns the recorder, the file's content
    /// at each step since the last sync (the first is the synced one) and the path.
    fn scenario(seed: u64, dir: &Path) -> (Recorder, Vec<Vec<u8>>, PathBuf) {
        let path = dir.join("f");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut file = Recorder::new(&path);
        let mut states = vec![Vec::new()];
        for _ in 0..rng.random_range(1..40) {
            match rng.random_range(0..10) {
                0 => {
                    file.sync();
                    states = vec![file.image.clone()];
                    continue;
                }
                1 => file.truncate(rng.random_range(0..=file.image.len() as u64 + 700)),
                _ => {
                    let offset = rng.random_range(0..=file.image.len() as u64);
                    let data: Vec<u8> = (0..rng.random_range(1..3000))
                        .map(|_| rng.random())
                        .collect();
                    file.write(offset, &data);
                }
            }
            states.push(file.image.clone());
        }
        (file, states, path)
    }

    #[test]
    fn dropping_every_unsynced_write_leaves_the_file_as_last_synced() {
        for seed in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let (file, states, path) = scenario(seed, dir.path());
            let log = dir.path().join("undo");
            std::fs::write(&log, &file.log).unwrap();
            power_cut(&log, dir.path(), Cut::DropAll).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), states[0], "seed {seed}");
        }
    }

    #[test]
    fn a_torn_cut_keeps_the_drawn_writes_and_a_sector_prefix_of_the_next() {
        for seed in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let (file, states, path) = scenario(seed, dir.path());
            let log = dir.path().join("undo");
            std::fs::write(&log, &file.log).unwrap();
            let report = power_cut(&log, dir.path(), Cut::Torn { seed }).unwrap();
            // The same draw the cut made, over the same unsynced records.
            let records = parse(&file.log).unwrap();
            let unsynced = unsynced_by_inode(records).remove(&file.inode);
            let after = std::fs::read(&path).unwrap();
            let Some(writes) = unsynced else {
                assert_eq!(after, states[0], "seed {seed}");
                continue;
            };
            let (keep, tear) = draw(&mut StdRng::seed_from_u64(seed), &writes);
            let mut expected = states[keep].clone();
            if let Some(next) = writes.get(keep).filter(|_| tear > 0) {
                let end = (next.offset + tear) as usize;
                let data = &states[keep + 1][next.offset as usize..end];
                expected.resize(expected.len().max(end), 0);
                expected[next.offset as usize..end].copy_from_slice(data);
            }
            assert_eq!(after, expected, "seed {seed}");
            assert_eq!(report.torn, usize::from(tear > 0), "seed {seed}");
        }
    }

    #[test]
    fn a_file_created_after_its_directory_s_last_fsync_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let parent = [meta.ino(), meta.dev(), 0];
        let (mut kept, _, kept_path) = scenario(3, dir.path());
        kept.record(5, 1, parent, &[]);
        // The directory synced after `f` was created, before `g` was.
        let mut log = kept.log.clone();
        let dir_sync = |log: &mut Vec<u8>, seq: u64| {
            let mut sync = Recorder::new(&dir.path().join("scratch"));
            sync.inode = (meta.dev(), meta.ino());
            sync.record(3, seq, [0, 0, 0], &[]);
            log.extend_from_slice(&sync.log);
        };
        dir_sync(&mut log, 1);
        let gone_path = dir.path().join("g");
        let mut gone = Recorder::new(&gone_path);
        gone.write(0, b"synced data, unsynced name");
        gone.sync();
        gone.record(5, 2, parent, &[]);
        log.extend_from_slice(&gone.log);
        let undo = dir.path().join("undo");
        std::fs::write(&undo, &log).unwrap();
        std::fs::remove_file(dir.path().join("scratch")).unwrap();
        let report = power_cut(&undo, dir.path(), Cut::DropAll).unwrap();
        assert_eq!(report.removed, 1);
        assert!(kept_path.exists());
        assert!(!gone_path.exists());
    }

    #[test]
    fn a_deleted_file_s_records_do_not_touch_a_file_that_reuses_its_inode() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _, path) = scenario(7, dir.path());
        file.write(0, b"unsynced");
        file.record(4, file.seq + 1, [0, 0, 0], &[]);
        // The inode now stands for a new file: its content is kept.
        std::fs::write(&path, b"new file").unwrap();
        let log = dir.path().join("undo");
        std::fs::write(&log, &file.log).unwrap();
        let report = power_cut(&log, dir.path(), Cut::DropAll).unwrap();
        assert_eq!(report, CutReport::default());
        assert_eq!(std::fs::read(&path).unwrap(), b"new file");
    }
}
