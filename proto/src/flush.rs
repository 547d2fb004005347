//! Making a database durable from async code: one blocking flush on tokio's blocking
//! pool, asked again while it hangs, failed after a deadline.
//!
//! The cluster manager's Raft storage and the consumer manager's store both keep their
//! state in sled and flush it before they answer; this is their one copy of how. Not
//! sled's `flush_async`: it waits on sled's own small I/O pool, where a few flushes
//! waiting at once can hold every thread while the write they wait for is queued
//! behind them, for good. And sled 0.34 can record a background write error without
//! waking the flushes waiting on it; a new flush finds the error and wakes them, so one
//! still waiting after [`Timing::nudge`] is followed by another. Knowing nothing of
//! sled, this module takes the flush as a blocking closure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The files of a sled database, synced after sled's own flush.
///
/// sled 0.34 makes a flush stable on Linux with `sync_file_range`, which neither
/// empties the drive's cache nor records the file's new size, so a power cut can take
/// what a flush returned for (up to the half second between sled's own periodic
/// fsyncs; the power-loss test lost 30 of 268 acknowledged topics that way). Values
/// over a quarter of a segment (128 KiB: a large Raft snapshot) go to files of their
/// own under `blobs/`, which sled never syncs. An `fdatasync` of the data file and of
/// each blob not yet synced at its length, after the flush, closes both: fsync acts
/// on the file, so descriptors of our own serve.
#[derive(Clone, Debug)]
pub struct SledFile(Option<Arc<SledFiles>>);

#[derive(Debug)]
struct SledFiles {
    db: std::fs::File,
    blobs: std::path::PathBuf,
    /// Blobs synced so far, by name, with the length they had then.
    synced_blobs: std::sync::Mutex<std::collections::HashMap<std::ffi::OsString, u64>>,
}

impl SledFile {
    /// The files of the sled database in `dir` (opened there already). Also syncs
    /// `dir` and its parent, so the names of the files sled created and of `dir`
    /// itself are durable too.
    pub fn open(dir: &Path) -> std::io::Result<SledFile> {
        let db = std::fs::File::open(dir.join("db"))?;
        std::fs::File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(SledFile(Some(Arc::new(SledFiles {
            db,
            blobs: dir.join("blobs"),
            synced_blobs: std::sync::Mutex::default(),
        }))))
    }

    /// No file: for a temporary database, which nothing needs to outlive.
    pub fn none() -> SledFile {
        SledFile(None)
    }

    /// Makes what sled wrote durable: call after sled's flush.
    pub fn sync(&self) -> std::io::Result<()> {
        let Some(files) = &self.0 else {
            return Ok(());
        };
        files.db.sync_data()?;
        files.sync_blobs()
    }
}

impl SledFiles {
    /// Syncs every blob that is new or grew since it was last synced, then the blob
    /// directory if any was, and forgets blobs sled has removed.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        let mut any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            present.insert(name.clone());
            if synced.get(&name) == Some(&len) {
                continue;
            }
            match std::fs::File::open(entry.path()) {
                Ok(blob) => blob.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced.insert(name, len);
            any = true;
        }
        synced.retain(|name, _| present.contains(name));
        if any {
            std::fs::File::open(&self.blobs)?.sync_all()?;
        }
        Ok(())
    }
}

/// When a flush is asked again, and when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A flush still waiting after this long is followed by a new one (which covers
    /// everything the first did); the first runs on, detached.
    pub nudge: Duration,
    /// A flush not done after this long in all fails: a healthy fsync takes
    /// milliseconds, and a caller must get an answer, never a hang.
    pub timeout: Duration,
}

impl Timing {
    /// What both sled stores use: a nudge every second, failure after 10 s.
    pub const DEFAULT: Timing = Timing {
        nudge: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
    };
}

impl Default for Timing {
    fn default() -> Self {
        Timing::DEFAULT
    }
}

/// Why a flush failed; after any of them the caller must take nothing it wrote as
/// durable.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The flush ran and failed: the database could not write.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The blocking task running the flush panicked or was cancelled.
    #[error("flush task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// No flush finished within [`Timing::timeout`].
    #[error("a flush did not finish within {timeout:?}")]
    TimedOut {
        /// The deadline that passed.
        timeout: Duration,
    },
}

/// Runs `flush` on tokio's blocking pool until one run of it answers, starting another
/// run each [`Timing::nudge`] while none has, and fails after [`Timing::timeout`].
/// `store` names the database in the log line a slow flush writes.
pub async fn on_blocking_pool<F>(
    flush: F,
    timing: Timing,
    store: &'static str,
) -> Result<(), FlushError>
where
    F: Fn() -> std::io::Result<()> + Clone + Send + 'static,
{
    let started = Instant::now();
    let spawn = || tokio::task::spawn_blocking(flush.clone());
    let mut pending = spawn();
    loop {
        match tokio::time::timeout(timing.nudge, &mut pending).await {
            Ok(Ok(flushed)) => return flushed.map_err(FlushError::Io),
            Ok(Err(e)) => return Err(FlushError::Task(e)),
            Err(_) if started.elapsed() >= timing.timeout => {
                return Err(FlushError::TimedOut {
                    timeout: timing.timeout,
                });
            }
            Err(_) => {
                tracing::warn!(store, waited = ?started.elapsed(), "flush is slow; asking again");
                // The first one runs on, detached.
                pending = spawn();
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sled_files_sync_new_and_grown_blobs_and_forget_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"pages").unwrap();
        let files = SledFile::open(dir.path()).unwrap();
        files.sync().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("4096"), vec![7u8; 300]).unwrap();
        files.sync().unwrap();
        let synced = |files: &SledFile| {
            let inner = files.0.as_ref().unwrap();
            let map = inner.synced_blobs.lock().unwrap();
            map.iter()
                .map(|(n, l)| (n.to_string_lossy().into_owned(), *l))
                .collect::<Vec<_>>()
        };
        assert_eq!(synced(&files), [("4096".to_string(), 300)]);
        std::fs::write(blobs.join("4096"), vec![7u8; 500]).unwrap();
        files.sync().unwrap();
        assert_eq!(synced(&files), [("4096".to_string(), 500)]);
        std::fs::remove_file(blobs.join("4096")).unwrap();
        files.sync().unwrap();
        assert!(synced(&files).is_empty());
        SledFile::none().sync().unwrap();
    }
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    /// Short enough for a test, long enough that a runnable flush always beats it.
    const QUICK: Timing = Timing {
        nudge: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    };

    /// A flush that blocks until the gate opens, as a sled flush sled forgot does.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn wait(&self) {
            let (open, opened) = &*self.0;
            let mut guard = open.lock().unwrap();
            while !*guard {
                guard = opened.wait(guard).unwrap();
            }
        }

        /// Lets every blocked flush end, so the runtime can shut down.
        fn open(&self) {
            let (open, opened) = &*self.0;
            *open.lock().unwrap() = true;
            opened.notify_all();
        }
    }

    #[tokio::test]
    async fn a_flush_that_answers_is_run_once() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let flush = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        on_blocking_pool(flush, QUICK, "test").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_hung_flush_is_asked_again_and_the_second_answer_counts() {
        let calls = Arc::new(AtomicU32::new(0));
        let gate = Gate::default();
        let (counted, held) = (calls.clone(), gate.clone());
        let flush = move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                held.wait();
            }
            Ok(())
        };
        let started = Instant::now();
        let result = on_blocking_pool(flush, QUICK, "test").await;
        gate.open();
        result.unwrap();
        assert!(
            started.elapsed() >= QUICK.nudge,
            "answered before the nudge"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_flush_that_never_answers_times_out() {
        let timing = Timing {
            nudge: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        };
        let calls = Arc::new(AtomicU32::new(0));
        let gate = Gate::default();
        let (counted, held) = (calls.clone(), gate.clone());
        let flush = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            held.wait();
            Ok(())
        };
        let started = Instant::now();
        let result = on_blocking_pool(flush, timing, "test").await;
        gate.open();
        let Err(FlushError::TimedOut { timeout }) = result else {
            panic!("expected a timeout, got {result:?}");
        };
        assert_eq!(timeout, timing.timeout);
        assert!(started.elapsed() >= timing.timeout);
        assert!(calls.load(Ordering::SeqCst) >= 2, "never asked again");
    }

    #[tokio::test]
    async fn a_failed_flush_is_an_io_error() {
        let flush = || Err(std::io::Error::other("disk on fire"));
        let result = on_blocking_pool(flush, QUICK, "test").await;
        let Err(FlushError::Io(e)) = result else {
            panic!("expected an i/o error, got {result:?}");
        };
        assert_eq!(e.to_string(), "disk on fire");
    }

    #[tokio::test]
    async fn a_panicking_flush_is_a_task_error() {
        let flush = || -> std::io::Result<()> { panic!("flush panicked") };
        let result = on_blocking_pool(flush, QUICK, "test").await;
        assert!(matches!(result, Err(FlushError::Task(_))), "{result:?}");
    }
}
