//! Idempotent producers: the last sequence numbers each producer id wrote to this log,
//! so the leader drops an exact retry and refuses a gap.
//!
//! A producer numbers its records per partition; each batch carries its producer id,
//! epoch and first sequence. A batch that continues the producer's sequence is
//! appended; one identical to a recent batch is a retry whose answer was lost, and gets
//! that batch's offsets back instead of a second copy; anything else is out of order.
//! Followers record the same state from the batches they replicate, so a new leader
//! deduplicates too; on open the state is rebuilt from the active segment.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::error::{Error, Result};
use crate::log::AppendInfo;

/// Recent batches remembered per producer (Kafka keeps 5 in flight, so 5 suffice).
const RECENT_BATCHES: usize = 5;

#[derive(Clone, Debug, Default)]
struct ProducerState {
    epoch: i16,
    /// (first sequence, last sequence, offsets) of the latest batches, oldest first.
    recent: VecDeque<(i32, i32, AppendInfo)>,
}

/// What to do with a producer's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// New: append it.
    Append,
    /// A retry of a batch already stored at these offsets.
    Duplicate(AppendInfo),
}

/// Sequence state of every idempotent producer that wrote to a log.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerState>,
}

fn last_sequence(header: &BatchHeader) -> i32 {
    header
        .base_sequence
        .wrapping_add(header.last_offset_delta as i32)
}

impl ProducerStates {
    /// Decides whether a producer's batch is appended, is a duplicate, or is refused.
    pub(crate) fn admit(&self, header: &BatchHeader) -> Result<Admission> {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return Ok(Admission::Append);
        }
        let Some(state) = self.producers.get(&header.producer_id) else {
            // Unknown (new, or its state aged out of the active segment): accept.
            return Ok(Admission::Append);
        };
        if header.producer_epoch < state.epoch {
            return Err(Error::OutOfOrderSequence {
                reason: format!(
                    "producer {} epoch {} is older than its current epoch {}",
                    header.producer_id, header.producer_epoch, state.epoch
                ),
            });
        }
        if header.producer_epoch > state.epoch {
            // A new epoch numbers its batches from 0 again (as Kafka's does).
            if header.base_sequence != 0 {
                return Err(Error::OutOfOrderSequence {
                    reason: format!(
                        "producer {} started epoch {} at sequence {}, not 0",
                        header.producer_id, header.producer_epoch, header.base_sequence
                    ),
                });
            }
            return Ok(Admission::Append);
        }
        let last = last_sequence(header);
        if let Some(&(_, _, info)) = state
            .recent
            .iter()
            .find(|&&(first, end, _)| first == header.base_sequence && end == last)
        {
            return Ok(Admission::Duplicate(info));
        }
        let expected = state
            .recent
            .back()
            .map_or(0, |&(_, end, _)| end.wrapping_add(1));
        if header.base_sequence != expected {
            return Err(Error::OutOfOrderSequence {
                reason: format!(
                    "producer {} sent sequence {} where {expected} was expected",
                    header.producer_id, header.base_sequence
                ),
            });
        }
        Ok(Admission::Append)
    }

    /// Records a stored batch (appended here or replicated from the leader).
    pub(crate) fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return;
        }
        let state = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch > state.epoch {
            state.epoch = header.producer_epoch;
            state.recent.clear();
        }
        let info = AppendInfo {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        };
        state
            .recent
            .push_back((header.base_sequence, last_sequence(header), info));
        if state.recent.len() > RECENT_BATCHES {
            state.recent.pop_front();
        }
    }

    /// Forgets batches at or after `offset` (the log was truncated there).
    pub(crate) fn truncate_from(&mut self, offset: u64) {
        for state in self.producers.values_mut() {
            state
                .recent
                .retain(|&(_, _, info)| info.base_offset < offset);
        }
        self.producers.retain(|_, state| !state.recent.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, base_sequence: i32, records: u32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut states = ProducerStates::default();
        let first = header(7, 0, 10, 100);
        assert_eq!(states.admit(&first).unwrap(), Admission::Append);
        states.record(&first);
        let info = AppendInfo {
            base_offset: 100,
            last_offset: 109,
        };
        assert_eq!(
            states.admit(&header(7, 0, 10, 0)).unwrap(),
            Admission::Duplicate(info)
        );
        assert_eq!(
            states.admit(&header(7, 10, 5, 0)).unwrap(),
            Admission::Append
        );
        assert!(
            states.admit(&header(7, 12, 5, 0)).is_err(),
            "a gap is out of order"
        );
        assert_eq!(
            states.admit(&header(8, 40, 1, 0)).unwrap(),
            Admission::Append,
            "unknown producers are accepted"
        );
        assert_eq!(
            states.admit(&header(-1, -1, 1, 0)).unwrap(),
            Admission::Append
        );
        states.truncate_from(100);
        assert_eq!(
            states.admit(&header(7, 99, 1, 0)).unwrap(),
            Admission::Append,
            "state of truncated batches is gone"
        );
    }

    #[test]
    fn a_new_epoch_starts_at_sequence_zero() {
        let mut states = ProducerStates::default();
        states.record(&header(7, 0, 10, 0));
        let bumped = |sequence| BatchHeader {
            producer_epoch: 1,
            ..header(7, sequence, 1, 0)
        };
        assert!(
            states.admit(&bumped(5)).is_err(),
            "a renumbered batch must restart at 0"
        );
        assert_eq!(states.admit(&bumped(0)).unwrap(), Admission::Append);
    }
}
