//! Group commit: when appended bytes become durable under the fsync policy.
//!
//! With fsync `always`, an appender waits after releasing the writer lock until a sync
//! covers its batch; whoever finds no sync running starts one for everything written
//! so far, so concurrent appenders share one fsync. A failed fsync fails the log for
//! good (Linux may have dropped the dirty pages).

use std::time::Instant;

use super::Log;
use crate::config::FsyncPolicy;
use crate::error::{Error, Result};
use crate::lock::recover;

/// Progress of syncing a log, under `Log::sync`.
pub(super) struct SyncState {
    /// Every offset below this is on disk.
    pub(super) durable_offset: u64,
    pub(super) running: bool,
    pub(super) last_sync: Instant,
    /// Bumped when the log end moves back (truncate, reset): a sync that began before
    /// may not count offsets that were cut and written again as durable.
    pub(super) generation: u64,
}

impl Log {
    /// Every offset below this is known to be on disk (fsynced).
    pub fn durable_offset(&self) -> u64 {
        recover(self.sync.lock()).durable_offset
    }

    /// Applies the fsync policy to a write that ends at `end_offset`: returns once
    /// it is durable under fsync `always` (sharing the fsync with concurrent writers),
    /// syncs if the interval is due under `interval`, and at once under `never`.
    pub fn wait_durable(&self, end_offset: u64) -> Result<()> {
        match self.alterable().fsync {
            FsyncPolicy::Always => self.sync_to(end_offset),
            FsyncPolicy::Interval(every) => {
                let due = recover(self.sync.lock()).last_sync.elapsed() >= every;
                if due {
                    self.sync_to(end_offset)
                } else {
                    Ok(())
                }
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// Forces everything appended so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.sync_to(self.log_end_offset())
    }

    /// Runs [`Log::flush`] if the interval policy says one is due (for a background timer).
    pub fn flush_if_due(&self) -> Result<()> {
        if let FsyncPolicy::Interval(every) = self.alterable().fsync {
            let due = recover(self.sync.lock()).last_sync.elapsed() >= every;
            if due {
                return self.flush();
            }
        }
        Ok(())
    }

    /// Returns once every offset below `target` is durable, sharing fsyncs among callers.
    ///
    /// Fails if the log no longer reaches `target` (a truncation cut the records
    /// before they became durable): an append is acknowledged only for bytes that are
    /// in the log and on disk.
    fn sync_to(&self, target: u64) -> Result<()> {
        let mut state = recover(self.sync.lock());
        loop {
            self.check_not_failed()?;
            if state.durable_offset >= target {
                return Ok(());
            }
            if state.running {
                state = recover(self.synced.wait(state));
                continue;
            }
            // Read the target before choosing the file: a segment sealed in between is
            // synced by its seal or the background flush (waited for below), so
            // syncing the active one then covers everything.
            let covered = self.log_end_offset();
            if covered < target {
                return Err(Error::AppendLost {
                    path: self.dir.clone(),
                    end_offset: target,
                    log_end_offset: covered,
                });
            }
            state.running = true;
            let generation = state.generation;
            drop(state);
            let active = self.read_segments().active.clone();
            self.flusher.wait_synced();
            let result = self.check_not_failed().and_then(|()| active.sync());
            state = recover(self.sync.lock());
            state.running = false;
            self.synced.notify_all();
            if let Err(e) = result {
                // Linux may have dropped the dirty pages: never retry, stop acknowledging.
                tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; log stops accepting writes");
                self.fail();
                return Err(e);
            }
            if state.generation == generation {
                state.durable_offset = state.durable_offset.max(covered);
            }
            state.last_sync = Instant::now();
        }
    }

    pub(super) fn lower_durable_offset(&self, end: u64) {
        let mut state = recover(self.sync.lock());
        state.durable_offset = state.durable_offset.min(end);
        state.generation += 1;
    }
}
