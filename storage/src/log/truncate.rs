//! Cutting a log back: a follower whose log diverged from a new leader's truncates its
//! suffix, and one whose log lies entirely outside the leader's range starts again
//! empty. Both move the log end back, so the durable offset, the epoch cache and the
//! producers' state are cut with it.

use std::sync::Arc;

use super::{Log, remove_segment_files, sync_dir};
use crate::error::{IoContext, Result};
use crate::lock::recover;
use crate::producers::ProducerStates;
use crate::segment::{self, ActiveSegment, SegmentRef};

impl Log {
    /// Removes every record at or after `offset` (the whole batch holding it, so the
    /// new log end offset may be a little lower). Used by a follower whose log diverged
    /// from a new leader's.
    ///
    /// Invariant for callers: only offsets no reader is reading are truncated (above
    /// the high watermark), since bytes under a concurrent read are cut.
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        let _writer = self.lock_writer()?;
        self.check_not_failed()?;
        let (log_start, log_end) = {
            let s = self.read_segments();
            (s.log_start_offset(), s.active.next_offset())
        };
        if offset >= log_end {
            return Ok(());
        }
        if offset <= log_start {
            return self.reset_locked(offset.min(log_start));
        }
        // No flush may move the recovery point past the cut once it is lowered.
        self.flusher.wait_idle();
        let mut segments = self.write_segments();
        let keep = segments.holding(offset);
        let (base, position) = match &keep {
            SegmentRef::Active(s) => (
                s.base_offset(),
                s.read(offset, 0, u64::MAX).map(|r| r.start)?,
            ),
            SegmentRef::Sealed(s) => (s.base_offset(), s.position_for_truncation(offset)?),
        };
        let doomed_from = segments.sealed.partition_point(|s| s.base_offset() <= base);
        let mut doomed: Vec<u64> = segments.sealed[doomed_from..]
            .iter()
            .map(|s| s.base_offset())
            .collect();
        if segments.active.base_offset() != base {
            doomed.push(segments.active.base_offset());
        }
        // Newest first: a crash part-way leaves a contiguous prefix of segments.
        for doomed_base in doomed.into_iter().rev() {
            remove_segment_files(&self.dir, doomed_base)?;
        }
        let log = segment::log_path(&self.dir, base);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .at(&log)?;
        file.set_len(position as u64).at(&log)?;
        file.sync_all().at(&log)?;
        drop(file);
        let (active, _) = ActiveSegment::recover(&self.dir, base, &self.config, (self.clock)())?;
        sync_dir(&self.dir)?;
        let kept = segments.sealed.partition_point(|s| s.base_offset() < base);
        segments.sealed.truncate(kept);
        segments.active = Arc::new(active);
        let new_end = segments.active.next_offset();
        drop(segments);
        self.flusher.lower(base)?;
        self.lower_durable_offset(new_end);
        self.lock_epochs().truncate_from(new_end)?;
        self.lock_producers().truncate_from(new_end);
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = new_end, "truncated log");
        Ok(())
    }

    /// Deletes every segment and starts empty at `offset` (a follower whose log lies
    /// entirely outside the leader's range).
    pub fn reset_to(&self, offset: u64) -> Result<()> {
        let _writer = self.lock_writer()?;
        self.check_not_failed()?;
        self.reset_locked(offset)
    }

    fn reset_locked(&self, offset: u64) -> Result<()> {
        self.flusher.wait_idle();
        self.flusher.lower(offset)?;
        let mut segments = self.write_segments();
        for base in segments
            .sealed
            .iter()
            .map(|s| s.base_offset())
            .chain([segments.active.base_offset()])
        {
            remove_segment_files(&self.dir, base)?;
        }
        let (active, _) = ActiveSegment::recover(&self.dir, offset, &self.config, (self.clock)())?;
        sync_dir(&self.dir)?;
        segments.sealed.clear();
        segments.active = Arc::new(active);
        drop(segments);
        {
            let mut state = recover(self.sync.lock());
            state.durable_offset = offset;
            state.generation += 1;
        }
        self.lock_epochs().clear()?;
        *self.lock_producers() = ProducerStates::default();
        tracing::info!(dir = %self.dir.display(), offset, "reset log");
        Ok(())
    }
}
