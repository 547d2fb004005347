//! Free space on the filesystem of the data directory, kept above a floor.
//!
//! Appends stop (RESOURCE_EXHAUSTED) while less than `min_free_bytes` would remain, so
//! partition logs never take the last of the disk: the Raft log and the consumer
//! manager's database, which may share it (as in `pubsubd standalone`), keep room to
//! write, and a restart finds the space it needs to open them. Writes resume by
//! themselves once space is freed (retention, deleted topics, an operator).
//!
//! `statvfs` is not called per append: the answer is reused for `RECHECK_INTERVAL`,
//! or until the bytes appended since reach half of the headroom it showed, so a burst
//! cannot overshoot the floor between two checks.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest time a free-space reading is trusted.
const RECHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The broker's view of the free space under its data directory.
#[derive(Debug)]
pub struct DiskSpace {
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
    pub fn new(dir: PathBuf, min_free_bytes: u64) -> Self {
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

    /// Admits an append of `len` bytes, or refuses it because the disk would be left
    /// with less than the floor. Blocking (it may call `statvfs`).
    pub fn admit(&self, len: u64) -> Result<()> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let mut probe = self
            .probe
            .lock()
            .map_err(|_| Error::Task("disk space lock poisoned".into()))?;
        let headroom = probe.free.saturating_sub(self.min_free_bytes);
        let stale = probe
            .read_at
            .is_none_or(|at| at.elapsed() >= RECHECK_INTERVAL);
        if stale || probe.admitted + len > headroom / 2 {
            probe.free = self.read_free()?;
            probe.read_at = Some(Instant::now());
            probe.admitted = 0;
        }
        let remaining = probe.free.saturating_sub(probe.admitted + len);
        if remaining < self.min_free_bytes {
            return Err(Error::ResourceExhausted(format!(
                "disk almost full: {} bytes free under {}, and writes stop below min_free_bytes ({}); free space or raise the disk",
                probe.free.saturating_sub(probe.admitted),
                self.dir.display(),
                self.min_free_bytes
            )));
        }
        probe.admitted += len;
        Ok(())
    }

    fn read_free(&self) -> Result<u64> {
        let stat = rustix::fs::statvfs(&self.dir).map_err(|e| Error::DataDir {
            path: self.dir.clone(),
            reason: format!("cannot read free space: {e}"),
        })?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_zero_admits_everything() {
        let dir = tempfile::tempdir().unwrap();
        let all = DiskSpace::new(dir.path().to_path_buf(), 0);
        all.admit(u64::MAX / 2).unwrap();
        let refusing = DiskSpace::new(dir.path().to_path_buf(), u64::MAX / 2);
        let error = refusing.admit(1).unwrap_err();
        assert!(matches!(error, Error::ResourceExhausted(_)), "{error}");
        assert!(error.to_string().contains("disk almost full"), "{error}");
    }

    #[test]
    fn admitted_bytes_count_against_the_last_reading() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSpace::new(dir.path().to_path_buf(), 1);
        disk.admit(1).unwrap();
        let free = disk.probe.lock().unwrap().free;
        // More than is free, in one go, is refused even before the reading is stale.
        assert!(disk.admit(free).is_err());
    }
}
