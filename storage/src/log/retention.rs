//! Deleting a log's oldest closed segments: those the retention policy says expired
//! (the choice itself is pure, in `retention.rs`), or those wholly below the
//! subscriptions' low-water mark. Readers that hold a deleted segment keep their map.

use std::sync::Arc;

use super::{Log, Segments, remove_segment_files};
use crate::error::Result;
use crate::retention::{self, RetentionPolicy, SegmentFacts};
use crate::segment::SealedSegment;

impl Log {
    /// Deletes the closed segments `policy` says have expired; returns how many.
    pub fn apply_retention(&self, policy: RetentionPolicy) -> Result<usize> {
        let now = (self.clock)();
        self.delete_oldest(|segments| {
            let facts: Vec<SegmentFacts> = segments
                .sealed
                .iter()
                .map(|s| SegmentFacts {
                    size: s.size(),
                    max_timestamp: s.max_timestamp(),
                })
                .collect();
            retention::segments_to_delete(&facts, segments.active.size(), policy, now)
        })
    }

    /// Deletes the closed segments that end at or below `offset` (every record in them
    /// is below it); returns how many. The subscriptions' low-water mark uses this.
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        self.delete_oldest(|segments| {
            segments
                .sealed
                .iter()
                .take_while(|s| s.next_offset() <= offset)
                .count()
        })
    }

    /// Deletes the oldest closed segments, as many as `choose` says; the choice and the
    /// deletion happen under the writer lock, so two passes cannot both delete.
    fn delete_oldest(&self, choose: impl FnOnce(&Segments) -> usize) -> Result<usize> {
        let _writer = self.lock_writer()?;
        let removed: Vec<Arc<SealedSegment>> = {
            let mut segments = self.write_segments();
            let count = choose(&segments).min(segments.sealed.len());
            segments.sealed.drain(..count).collect()
        };
        for segment in &removed {
            // Readers holding the segment keep their mapping; the space is freed after.
            remove_segment_files(&self.dir, segment.base_offset())?;
            tracing::info!(path = %segment.path().display(), "retention deleted segment");
        }
        Ok(removed.len())
    }
}
