//! The background flush of sealed segments, so a roll never waits for a whole
//! segment to reach the disk under the writer lock.
//!
//! Under fsync `interval` or `never` a roll seals the segment without syncing it and
//! queues it here; one short-lived thread per log syncs the queued segments in order,
//! then moves the recovery point past each. Under `always` the seal itself syncs
//! (every batch was already synced by its appender, so that costs little) and only
//! the recovery point is left to move. A failed fsync fails the log, as anywhere else.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{recovery_point, sync_dir};
use crate::error::Result;
use crate::lock::recover;
use crate::segment::{ActiveSegment, SealedSegment};

/// A sealed segment waiting for the flush.
#[derive(Clone)]
struct Pending {
    segment: Arc<SealedSegment>,
    /// The segment as it was while active, released only after the flush: closing a
    /// file cut shorter makes ext4 write it back right away (`auto_da_alloc`), which
    /// must not happen on the appender that rolled.
    _retired: Arc<ActiveSegment>,
    /// True once its bytes are on disk (its seal synced it, or the flush did).
    synced: bool,
}

struct FlushState {
    /// Oldest first; the front is the one being flushed.
    queue: VecDeque<Pending>,
    /// True while a thread drains the queue.
    running: bool,
    /// What the checkpoint file says.
    recovery_point: u64,
}

/// One log's background flush.
pub(super) struct Flusher {
    dir: PathBuf,
    state: Mutex<FlushState>,
    changed: Condvar,
    /// The log's failed flag, set when a flush's fsync fails.
    failed: Arc<AtomicBool>,
}

impl Flusher {
    /// A flusher for the log in `dir`, whose checkpoint holds `recovery_point`.
    pub(super) fn new(dir: PathBuf, recovery_point: u64, failed: Arc<AtomicBool>) -> Self {
        Flusher {
            dir,
            state: Mutex::new(FlushState {
                queue: VecDeque::new(),
                running: false,
                recovery_point,
            }),
            changed: Condvar::new(),
            failed,
        }
    }

    /// Queues a segment just sealed (`retired` is its active form); `synced` when its
    /// seal already synced it.
    pub(super) fn enqueue(
        self: &Arc<Self>,
        segment: Arc<SealedSegment>,
        retired: Arc<ActiveSegment>,
        synced: bool,
    ) {
        let mut state = self.lock();
        state.queue.push_back(Pending {
            segment,
            _retired: retired,
            synced,
        });
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        let flusher = self.clone();
        let spawned = std::thread::Builder::new()
            .name("segment-flush".into())
            .spawn(move || flusher.drain());
        if let Err(e) = spawned {
            // No thread to be had: flush here rather than leave the segment unsynced.
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot start a segment flush thread; flushing inline");
            self.drain();
        }
    }

    /// Returns once every queued segment is on disk (a group commit under fsync
    /// `always` or `interval` must cover the sealed segments too).
    pub(super) fn wait_synced(&self) {
        let mut state = self.lock();
        while state.running && state.queue.iter().any(|p| !p.synced) {
            state = recover(self.changed.wait(state));
        }
    }

    /// Returns once the queue is empty and no thread is flushing.
    pub(super) fn wait_idle(&self) {
        let mut state = self.lock();
        while state.running {
            state = recover(self.changed.wait(state));
        }
    }

    /// Moves the recovery point back to `offset` if it is past it (the log was cut
    /// there). Caller holds the writer lock and waited for [`Flusher::wait_idle`].
    pub(super) fn lower(&self, offset: u64) -> Result<()> {
        let mut state = self.lock();
        if state.recovery_point > offset {
            recovery_point::store(&self.dir, offset)?;
            state.recovery_point = offset;
        }
        Ok(())
    }

    /// Flushes queued segments in order until none is left.
    fn drain(&self) {
        loop {
            let next = {
                let mut state = self.lock();
                match state.queue.front() {
                    Some(pending) => pending.clone(),
                    None => {
                        state.running = false;
                        self.changed.notify_all();
                        return;
                    }
                }
            };
            // The directory too: the index files' and the next segment's names.
            if !next.synced
                && let Err(e) = next.segment.sync_files().and_then(|()| sync_dir(&self.dir))
            {
                // Linux may have dropped the dirty pages: never retry, stop acknowledging.
                tracing::error!(path = %next.segment.path().display(), error = %e, "fsync failed while flushing a sealed segment; log stops accepting writes");
                self.failed.store(true, Ordering::Release);
                let mut state = self.lock();
                state.queue.clear();
                state.running = false;
                self.changed.notify_all();
                return;
            }
            self.mark_synced();
            let end = next.segment.next_offset();
            let stored = recovery_point::store(&self.dir, end);
            let mut state = self.lock();
            match stored {
                Ok(()) => state.recovery_point = end,
                // Only recovery work is lost: it checks more segments than it needs.
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot move the recovery point")
                }
            }
            let done = state.queue.pop_front();
            self.changed.notify_all();
            drop(state);
            // The last handle of the retired file is usually this one: it closes here.
            drop((next, done));
        }
    }

    fn mark_synced(&self) {
        let mut state = self.lock();
        if let Some(front) = state.queue.front_mut() {
            front.synced = true;
        }
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, FlushState> {
        recover(self.state.lock())
    }
}
