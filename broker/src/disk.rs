//! Free space on the filesystem of the data directory, kept above a floor.
//!
//! Appends stop (RESOURCE_EXHAUSTED) while less than `min_free_bytes` would remain, so
//! partition logs never take the last of the disk: the Raft log and the consumer
//! manager's database, which may share it (as in `pubsubd standalone`), keep room to
//! write, and a restart finds the space it needs to open them. Internal topics (the
//! consumer managers' subscription-state journal) are metadata too: they write on down
//! to half the floor, so acks and subscriptions keep working once user data has
//! stopped. Writes resume by themselves once space is freed (retention, deleted
//! topics, an operator).
//!
//! `statvfs` is not called per append: the answer is reused for `RECHECK_INTERVAL`,
//! or until the bytes appended since reach half of the headroom it showed, so a burst
//! cannot overshoot the floor between two checks.
//!
//! Every server role also keeps a [`SpaceReserve`]: a file of real blocks it gives
//! back when it starts on a disk too full to open its databases (sled needs to write
//! to open), so a node whose disk was filled, by anything, still starts and serves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest time a free-space reading is trusted.
const RECHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Whose bytes an append carries, which decides how close to full the disk may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// A user topic: stops at the floor.
    Data,
    /// An internal topic (metadata other nodes rebuild from): stops at half the floor.
    Internal,
}

impl Writer {
    /// The writer of a topic's partitions.
    pub(crate) fn of_topic(topic: &str) -> Self {
        if pubsub_proto::ids::is_internal_topic(topic) {
            Writer::Internal
        } else {
            Writer::Data
        }
    }
}

/// The broker's view of the free space under its data directory.
#[derive(Debug)]
pub(crate) struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
    probe: Mutex<Probe>,
}

#[derive(Debug)]
struct Probe {
    /// When `free` was read; `None` before the first reading.
    read_at: Option<Instant>,
    /// Bytes available to this process at `read_at`.
    free: u64,
    /// Bytes admitted since `read_at`.
    admitted: u64,
}

impl DiskSpace {
    /// Watches the filesystem holding `dir`, keeping `min_free_bytes` free.
    pub(crate) fn new(dir: PathBuf, min_free_bytes: u64) -> Self {
        DiskSpace {
            dir,
            min_free_bytes,
            probe: Mutex::new(Probe {
                read_at: None,
                free: 0,
                admitted: 0,
            }),
        }
    }

    /// Admits an append of `len` bytes by `writer`, or refuses it because the disk
    /// would be left with less than the writer's floor. Blocking (it may call
    /// `statvfs`).
    pub(crate) fn admit(&self, len: u64, writer: Writer) -> Result<()> {
        let floor = match writer {
            Writer::Data => self.min_free_bytes,
            Writer::Internal => self.min_free_bytes / 2,
        };
        if floor == 0 {
            return Ok(());
        }
        let mut probe = self
            .probe
            .lock()
            .map_err(|_| Error::Task("disk space lock poisoned".into()))?;
        let headroom = probe.free.saturating_sub(floor);
        let stale = probe
            .read_at
            .is_none_or(|at| at.elapsed() >= RECHECK_INTERVAL);
        if stale || probe.admitted + len > headroom / 2 {
            probe.free = self.read_free()?;
            probe.read_at = Some(Instant::now());
            probe.admitted = 0;
        }
        let remaining = probe.free.saturating_sub(probe.admitted + len);
        if remaining < floor {
            return Err(Error::ResourceExhausted(format!(
                "disk almost full: {} bytes free under {}, and writes stop below {floor} bytes (min_free_bytes {}); free space or raise the disk",
                probe.free.saturating_sub(probe.admitted),
                self.dir.display(),
                self.min_free_bytes
            )));
        }
        probe.admitted += len;
        Ok(())
    }

    fn read_free(&self) -> Result<u64> {
        free_bytes(&self.dir)
    }
}

/// Bytes available to this process on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| Error::DataDir {
        path: dir.to_path_buf(),
        reason: format!("cannot read free space: {e}"),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// What [`SpaceReserve::at_startup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The reserve is off (0 bytes); any old reserve file was removed.
    Off,
    /// The reserve file is in place.
    Kept,
    /// Less than the reserve was free: the file was removed so the role can start.
    Released,
    /// There is no reserve file and too little space to make one.
    Missing,
}

/// A file of `bytes` real blocks in a role's data directory, given back at startup
/// when the disk is fuller than the reserve (CockroachDB calls it a ballast).
pub struct SpaceReserve;

impl SpaceReserve {
    /// Name of the reserve file in a data directory.
    pub const FILE_NAME: &str = "reserved-space";

    /// Run before a role opens its databases: releases the reserve in `dir` when less
    /// than `bytes` is free, else makes sure it exists (only while at least twice its
    /// size is free, so making it never fills the disk).
    pub fn at_startup(dir: &Path, bytes: u64) -> Result<ReserveOutcome> {
        let path = dir.join(Self::FILE_NAME);
        let io = |e: std::io::Error| Error::DataDir {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let exists = path.exists();
        if bytes == 0 {
            if exists {
                std::fs::remove_file(&path).map_err(io)?;
            }
            return Ok(ReserveOutcome::Off);
        }
        let free = free_bytes(dir)?;
        if exists && free < bytes {
            std::fs::remove_file(&path).map_err(io)?;
            tracing::error!(path = %path.display(), free_bytes = free, reserve_bytes = bytes, "disk almost full: released the space reserve to start; free space on this disk");
            return Ok(ReserveOutcome::Released);
        }
        if exists {
            return Ok(ReserveOutcome::Kept);
        }
        if free < bytes.saturating_mul(2) {
            tracing::warn!(path = %path.display(), free_bytes = free, reserve_bytes = bytes, "too little free space to make the space reserve");
            return Ok(ReserveOutcome::Missing);
        }
        let file = std::fs::File::create(&path).map_err(io)?;
        let allocated = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes)
            .map_err(std::io::Error::from)
            .and_then(|()| file.sync_all());
        if let Err(e) = allocated {
            drop(file);
            let _ = std::fs::remove_file(&path);
            tracing::warn!(path = %path.display(), error = %e, "cannot make the space reserve");
            return Ok(ReserveOutcome::Missing);
        }
        Ok(ReserveOutcome::Kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_zero_admits_everything() {
        let dir = tempfile::tempdir().unwrap();
        let all = DiskSpace::new(dir.path().to_path_buf(), 0);
        all.admit(u64::MAX / 2, Writer::Data).unwrap();
        let refusing = DiskSpace::new(dir.path().to_path_buf(), u64::MAX / 2);
        let error = refusing.admit(1, Writer::Data).unwrap_err();
        assert!(matches!(error, Error::ResourceExhausted(_)), "{error}");
        assert!(error.to_string().contains("disk almost full"), "{error}");
    }

    #[test]
    fn the_reserve_is_made_kept_released_when_the_disk_is_fuller_and_removed_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SpaceReserve::FILE_NAME);
        let kept = SpaceReserve::at_startup(dir.path(), 1 << 20).unwrap();
        assert_eq!(kept, ReserveOutcome::Kept);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
        // A reserve larger than the free space stands for a full disk.
        let released = SpaceReserve::at_startup(dir.path(), u64::MAX / 2).unwrap();
        assert_eq!(released, ReserveOutcome::Released);
        assert!(!file.exists());
        assert_eq!(
            SpaceReserve::at_startup(dir.path(), u64::MAX / 2).unwrap(),
            ReserveOutcome::Missing
        );
        SpaceReserve::at_startup(dir.path(), 4096).unwrap();
        assert_eq!(
            SpaceReserve::at_startup(dir.path(), 0).unwrap(),
            ReserveOutcome::Off
        );
        assert!(!file.exists());
    }

    #[test]
    fn admitted_bytes_count_against_the_last_reading() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSpace::new(dir.path().to_path_buf(), 1);
        disk.admit(1, Writer::Data).unwrap();
        let free = disk.probe.lock().unwrap().free;
        // More than is free, in one go, is refused even before the reading is stale.
        assert!(disk.admit(free, Writer::Data).is_err());
    }

    #[test]
    fn internal_topics_write_on_below_the_floor_down_to_half_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        // A floor a little above the free space: user data stops, the journal writes.
        let disk = DiskSpace::new(dir.path().to_path_buf(), free + (free / 4).max(1 << 20));
        assert!(disk.admit(4096, Writer::Data).is_err());
        disk.admit(4096, Writer::Internal).unwrap();
        assert_eq!(Writer::of_topic("__subscription_state"), Writer::Internal);
        assert_eq!(Writer::of_topic("orders"), Writer::Data);
    }
}
