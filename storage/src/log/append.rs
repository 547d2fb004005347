//! Appending to a log: a producer's batch (validated, stamped, written without a copy)
//! or a follower's copy of its leader's batches, and rolling to a new segment when the
//! active one is full or old.

use std::sync::Arc;

use super::{AppendInfo, Log, ValidatedBatch, sync_dir};
use crate::batch::{self, BatchHeader};
use crate::config::FsyncPolicy;
use crate::error::{Error, Result};
use crate::producers::Admission;
use crate::segment::{ActiveSegment, SealError, SealedSegment};

impl Log {
    /// Validates a producer's batch and appends it with its base offset and leader
    /// epoch stamped, then, per the fsync policy, waits until it is durable.
    pub fn append(&self, batch_bytes: &[u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.append_validated(self.validate(batch_bytes)?, leader_epoch)
    }

    /// Checks a producer's batch (header, CRC, every record) against this log's
    /// limits, so a request of several batches can be checked whole before any of
    /// them is appended, and each walked only once.
    pub fn validate<'a>(&self, batch_bytes: &'a [u8]) -> Result<ValidatedBatch<'a>> {
        let header = batch::validate(batch_bytes, self.alterable().max_batch_bytes)?;
        Ok(ValidatedBatch {
            bytes: batch_bytes,
            header,
        })
    }

    /// Appends a batch [`Log::validate`] accepted, as [`Log::append`] does.
    pub fn append_validated(
        &self,
        batch: ValidatedBatch<'_>,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let info = self.write_validated(batch, leader_epoch)?;
        self.wait_durable(info.last_offset + 1)?;
        Ok(info)
    }

    /// Writes a batch [`Log::validate`] accepted, stamped with its base offset and
    /// leader epoch, but returns before the fsync policy is applied: the caller then
    /// waits in [`Log::wait_durable`]. A produce stream writes its next request while
    /// the last one waits, so one fsync covers several requests.
    ///
    /// The caller's bytes are not modified or copied: the stamped header is written
    /// from a stack copy and the rest straight from the batch. Nothing is re-encoded.
    /// A retry of a stored batch is answered with the stored offsets.
    pub fn write_validated(
        &self,
        batch: ValidatedBatch<'_>,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let ValidatedBatch {
            bytes: batch_bytes,
            header,
        } = batch;
        let info = {
            let _writer = self.lock_writer()?;
            self.check_not_failed()?;
            if let Admission::Duplicate(stored) = self.lock_producers().admit(&header)? {
                // A retry whose answer was lost: answer with the stored batch (once
                // durable, which the caller waits for as for any write).
                return Ok(stored);
            }
            let active = self.prepare_active(batch_bytes.len(), header.last_offset_delta)?;
            let base_offset = active.next_offset();
            let mut head = [0u8; batch::HEADER_BYTES];
            head.copy_from_slice(&batch_bytes[..batch::HEADER_BYTES]);
            batch::stamp(&mut head, base_offset, leader_epoch);
            let header = BatchHeader {
                base_offset,
                leader_epoch,
                ..header
            };
            self.note_epoch(leader_epoch, base_offset)?;
            active.append_parts(
                &head,
                &batch_bytes[batch::HEADER_BYTES..],
                &header,
                self.config.index_interval_bytes,
            )?;
            // Only once the bytes are written: a retry of a failed write must be
            // written again, never answered as an already-stored duplicate.
            self.lock_producers().record(&header);
            AppendInfo {
                base_offset,
                last_offset: header.last_offset(),
            }
        };
        Ok(info)
    }

    /// Appends batches copied from a leader, which already carry their offsets and
    /// epochs; the first must start at the log end offset and each must follow the last.
    pub fn append_replicated(&self, batches: &[u8]) -> Result<Option<AppendInfo>> {
        let mut appended: Option<AppendInfo> = None;
        {
            let _writer = self.lock_writer()?;
            self.check_not_failed()?;
            // The leader checked each batch against the limit in force when it took
            // it; a lower limit since (an altered topic) must not stop a follower
            // from copying older batches. A batch must still fit in a segment.
            let max_batch_bytes = self
                .alterable()
                .max_batch_bytes
                .max(usize::try_from(self.config.segment_bytes).unwrap_or(usize::MAX));
            for item in batch::batches(batches) {
                let (header, bytes) = item?;
                if bytes.len() > max_batch_bytes {
                    return Err(Error::BatchTooLarge {
                        size: bytes.len(),
                        limit: max_batch_bytes,
                    });
                }
                let active = self.prepare_active(bytes.len(), header.last_offset_delta)?;
                if header.base_offset != active.next_offset() {
                    return Err(Error::NonContiguousOffset {
                        base_offset: header.base_offset,
                        log_end_offset: active.next_offset(),
                    });
                }
                self.note_epoch(header.leader_epoch, header.base_offset)?;
                active.append(bytes, &header, self.config.index_interval_bytes)?;
                self.lock_producers().record(&header);
                let first = appended.map_or(header.base_offset, |a| a.base_offset);
                appended = Some(AppendInfo {
                    base_offset: first,
                    last_offset: header.last_offset(),
                });
            }
        }
        if let Some(info) = appended {
            self.wait_durable(info.last_offset + 1)?;
        }
        Ok(appended)
    }

    /// Rolls the active segment if it is too old or the batch does not fit; returns the
    /// segment to append to. Caller holds the writer lock.
    fn prepare_active(&self, len: usize, last_offset_delta: u32) -> Result<Arc<ActiveSegment>> {
        let active = self.read_segments().active.clone();
        let too_old = active.size() > 0
            && (self.clock)().saturating_sub(active.created_ms())
                >= self.config.segment_age.as_millis() as i64;
        // Index entries hold offsets relative to the segment's base in 32 bits.
        let relative_end =
            active.next_offset() + u64::from(last_offset_delta) - active.base_offset();
        let offsets_fit = relative_end <= u64::from(u32::MAX);
        if !too_old && offsets_fit && active.fits(len, &self.config) {
            return Ok(active);
        }
        if active.size() == 0 {
            return Err(Error::SegmentFull {
                reason: format!("a {len}-byte batch does not fit in an empty segment"),
            });
        }
        self.roll_locked(&active)
    }

    /// Seals `active` and starts a new segment at its end. Caller holds the writer lock.
    fn roll_locked(&self, active: &Arc<ActiveSegment>) -> Result<Arc<ActiveSegment>> {
        // Under fsync `always` every batch is already synced, so the seal syncs only
        // the rest (the cut to size, the indexes) at little cost. Otherwise the roll
        // does not wait for the disk: the background flush syncs the sealed segment
        // and then moves the recovery point past it; recovery checks it batch by
        // batch until then.
        let durable = matches!(self.alterable().fsync, FsyncPolicy::Always);
        match active.seal(durable) {
            Ok(()) => {}
            Err(SealError::Sync(e)) => {
                // As for any failed fsync: never retry, stop acknowledging.
                tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed while sealing a segment; log stops accepting writes");
                self.fail();
                return Err(e);
            }
            // A full disk: the segment stays active, the next append tries again.
            Err(SealError::Other(e)) => return Err(e),
        }
        let sealed = Arc::new(SealedSegment::open(
            &self.dir,
            active.base_offset(),
            &self.config,
        )?);
        // Every batch in it was checked as it was appended or recovered.
        sealed.mark_verified();
        let next = Arc::new(ActiveSegment::start(
            &self.dir,
            active.next_offset(),
            &self.config,
            (self.clock)(),
            durable,
        )?);
        if durable {
            sync_dir(&self.dir)?;
        }
        {
            let mut segments = self.write_segments();
            segments.sealed.push(sealed.clone());
            segments.active = next.clone();
        }
        self.flusher.enqueue(sealed, active.clone(), durable);
        tracing::info!(dir = %self.dir.display(), base_offset = next.base_offset(), "rolled segment");
        Ok(next)
    }

    /// Seals the active segment now if it holds anything (for tests and tools).
    pub fn roll(&self) -> Result<()> {
        let _writer = self.lock_writer()?;
        self.check_not_failed()?;
        let active = self.read_segments().active.clone();
        if active.size() > 0 {
            self.roll_locked(&active)?;
        }
        Ok(())
    }
}
