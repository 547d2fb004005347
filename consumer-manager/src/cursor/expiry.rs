//! When a cursor's leases run out, kept per run of offsets leased together rather
//! than per offset: a delivery step leases consecutive offsets with one deadline, and
//! an entry per record (inserted at delivery, removed at its ack) was a fifth of the
//! server's time in a fan-out. An ack leaves the run alone; when the run's deadline
//! passes, each of its offsets is expired only if its lease is still that one (the
//! cursor checks), so a run of acknowledged offsets expires nothing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

/// Runs kept before those wholly below the committed offset are dropped (they can
/// expire nothing: every offset there is acknowledged).
const PURGE_MIN: usize = 64;

/// Deadlines of a cursor's leases, by run of offsets.
#[derive(Debug, Default)]
pub(super) struct Expiry {
    /// Closed runs: (deadline, first offset) to the offset after the last.
    runs: BTreeMap<(Instant, u64), u64>,
    /// The run being extended: the latest lease, and those of the consecutive
    /// offsets leased with the same deadline just before it.
    open: Option<(Instant, Range<u64>)>,
    /// How many closed runs trigger the next drop of runs below the committed offset.
    purge_at: usize,
}

impl Expiry {
    /// Notes that `offset` is leased until `deadline`.
    pub(super) fn add(&mut self, offset: u64, deadline: Instant, committed: u64) {
        match &mut self.open {
            Some((open, run)) if *open == deadline && run.end == offset => run.end += 1,
            _ => {
                self.close(committed);
                self.open = Some((deadline, offset..offset + 1));
            }
        }
    }

    /// Takes the earliest run whose deadline is at or before `now`, with the part of
    /// it at or above `committed` (the rest is acknowledged).
    pub(super) fn pop_due(
        &mut self,
        now: Instant,
        committed: u64,
    ) -> Option<(Instant, Range<u64>)> {
        self.close(committed);
        let (&(deadline, _), _) = self.runs.first_key_value()?;
        if deadline > now {
            return None;
        }
        let ((deadline, start), end) = self.runs.pop_first()?;
        Some((deadline, start.max(committed)..end))
    }

    /// Runs kept (for tests of how far they are merged).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.runs.len() + usize::from(self.open.is_some())
    }

    fn close(&mut self, committed: u64) {
        if let Some((deadline, run)) = self.open.take() {
            let end = self.runs.entry((deadline, run.start)).or_insert(run.end);
            *end = (*end).max(run.end);
        }
        if self.runs.len() > self.purge_at.max(PURGE_MIN) {
            self.runs.retain(|_, end| *end > committed);
            self.purge_at = self.runs.len() * 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn consecutive_leases_with_one_deadline_are_one_run() {
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(10);
        let mut expiry = Expiry::default();
        for offset in 5..1_005 {
            expiry.add(offset, late, 5);
        }
        expiry.add(2_000, late, 5);
        assert_eq!(expiry.len(), 2);
        assert_eq!(expiry.pop_due(t0, 5), None, "not yet due");
        assert_eq!(expiry.pop_due(late, 100), Some((late, 100..1_005)));
        assert_eq!(expiry.pop_due(late, 100), Some((late, 2_000..2_001)));
        assert_eq!(expiry.pop_due(late, 100), None);
    }

    #[test]
    fn runs_below_the_committed_offset_are_dropped_as_they_pile_up() {
        let t0 = Instant::now();
        let mut expiry = Expiry::default();
        // One lease per step, each acknowledged (committed passes it) before the next.
        for offset in 0..10_000u64 {
            let deadline = t0 + Duration::from_millis(offset);
            expiry.add(offset, deadline, offset);
        }
        assert!(
            expiry.len() <= 2 * PURGE_MIN + 2,
            "{} runs kept",
            expiry.len()
        );
    }
}
