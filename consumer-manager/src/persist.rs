//! The one write step of the subscription path.
//!
//! Every change to what is durable about a subscription goes through
//! [`Manager::write`]: a step runs on the subscription's state under its lock and
//! says what to store through [`Writes`]; the writes are applied to sled before the
//! lock is let go (so one subscription's writes land in the order its state changed),
//! then made durable by group commit (`commit`) before the caller is answered. The
//! lock is never held across the flush, a fetch or a produce.

use crate::command::{Applied, Moved};
use crate::cursor::Cursor;
use crate::error::Result;
use crate::manager::Manager;
use crate::store::{Changes, Store, StoredCursor};
use crate::subscription::{State, Subscription};

/// What one step writes for one subscription, applied together.
pub(crate) struct Writes<'a> {
    store: &'a Store,
    subscription: &'a Subscription,
    changes: Changes,
    /// Set when the subscription's record (generation, dead-letter counts and
    /// positions, incarnations) changed.
    record: bool,
}

impl<'a> Writes<'a> {
    fn new(store: &'a Store, subscription: &'a Subscription) -> Self {
        Writes {
            store,
            subscription,
            changes: Changes::new(),
            record: false,
        }
    }

    /// Stores what a command changed (see [`Applied`]).
    pub(crate) fn applied(&mut self, cursors: &[Cursor], applied: &Applied) -> Result<()> {
        for moved in &applied.moved {
            self.moved(cursors, moved)?;
        }
        Ok(())
    }

    /// Stores how one partition's position changed.
    pub(crate) fn moved(&mut self, cursors: &[Cursor], moved: &Moved) -> Result<()> {
        let partition = match moved {
            Moved::Cursor { partition, .. } | Moved::Reset { partition } => *partition,
        };
        let Some(cursor) = cursors.get(partition as usize) else {
            return Ok(());
        };
        match moved {
            Moved::Cursor { before, acked, .. } => self.cursor(partition, cursor, *before, acked),
            Moved::Reset { .. } => self.reset(partition, cursor),
        }
    }

    /// Stores one partition's cursor after a step that started at committed offset
    /// `before`: the cursor, the acks above the committed offset named in `acked`, and
    /// forgets what the committed offset passed.
    pub(crate) fn cursor(
        &mut self,
        partition: u32,
        cursor: &Cursor,
        before: u64,
        acked: &[u64],
    ) -> Result<()> {
        let name = &self.subscription.name;
        let committed = cursor.committed();
        let stored = StoredCursor {
            committed,
            next: cursor.next(),
        };
        self.changes.cursor(name, partition, stored);
        // Acks above the committed offset, as the ranges now holding them: the stored
        // ranges over that span are replaced, so merged runs stay one key each.
        let above = acked.iter().filter(|&&offset| offset >= committed);
        if let (Some(&low), Some(&high)) = (above.clone().min(), above.max()) {
            let ranges: Vec<_> = cursor.acked_ranges(low..high + 1).collect();
            if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
                let span = first.start..last.end;
                self.store
                    .forget_acks(&mut self.changes, name, partition, span)?;
            }
            for range in ranges {
                self.changes.ack_range(name, partition, range);
            }
        }
        if committed != before {
            let (from, to) = (before.min(committed), committed.max(before));
            self.store
                .forget_range(&mut self.changes, name, partition, from, to)?;
        }
        Ok(())
    }

    /// Stores a partition whose position was replaced (a seek, or a reset of a
    /// position past the partition's end): nothing stored for it before counts.
    pub(crate) fn reset(&mut self, partition: u32, cursor: &Cursor) -> Result<()> {
        let name = &self.subscription.name;
        self.store
            .forget_range(&mut self.changes, name, partition, 0, u64::MAX)?;
        let committed = cursor.committed();
        self.cursor(partition, cursor, committed, &[])
    }

    /// Stores how often a record has been delivered.
    pub(crate) fn deliveries(&mut self, partition: u32, offset: u64, count: u32) {
        let name = &self.subscription.name;
        self.changes.deliveries(name, partition, offset, count);
    }

    /// Stores the subscription's record as the state shows it once the step ends.
    pub(crate) fn record(&mut self) {
        self.record = true;
    }

    fn apply(self, state: &State) -> Result<()> {
        self.store.apply(self.changes)?;
        if self.record {
            self.store
                .put_subscription(&self.subscription.record(state))?;
        }
        Ok(())
    }
}

impl Manager {
    /// Runs `step` on the subscription's state under its lock, applies what it wrote,
    /// and waits until that is durable (group commit) before returning its value.
    pub(crate) async fn write<T>(
        &self,
        subscription: &Subscription,
        step: impl FnOnce(&mut State, &mut Writes<'_>) -> Result<T>,
    ) -> Result<T> {
        let value = self.write_unflushed(subscription, step)?;
        self.store().flush().await?;
        Ok(value)
    }

    /// As [`Manager::write`], without waiting: the caller flushes (once for several
    /// steps) before it answers.
    pub(crate) fn write_unflushed<T>(
        &self,
        subscription: &Subscription,
        step: impl FnOnce(&mut State, &mut Writes<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut state = subscription.lock()?;
        let mut writes = Writes::new(self.store(), subscription);
        let value = step(&mut state, &mut writes)?;
        writes.apply(&state)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, apply};
    use crate::manager::ManagerConfig;
    use crate::store::SubscriptionRecord;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    /// A manager over `dir` (no broker is reached) with subscription `s` of 2
    /// partitions stored at offset 0.
    async fn manager_with_subscription(dir: &std::path::Path) -> Manager {
        let manager = reopen(dir);
        let record = SubscriptionRecord::for_test(2, 1);
        manager.store().put_subscription(&record).unwrap();
        manager.store().flush().await.unwrap();
        drop(manager);
        reopen(dir)
    }

    /// Opens the manager over `dir` as a restart does. sled lets go of its lock a
    /// moment after the last handle is dropped (its I/O threads finish first), so
    /// the open is tried again for a while, as the supervisor does.
    fn reopen(dir: &std::path::Path) -> Manager {
        let mut config = ManagerConfig::new(dir.to_path_buf(), "127.0.0.1:1".into());
        config.journal = false;
        for _ in 0..100 {
            if let Ok(manager) = Manager::open(config.clone()) {
                return manager;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Manager::open(config).unwrap()
    }

    /// The positions a restart would see: committed, next, and what is redelivered.
    fn positions(manager: &Manager) -> Vec<(u64, u64, Vec<u64>)> {
        let subscription = manager.subscription("s").unwrap();
        let mut state = subscription.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        state
            .cursors
            .iter_mut()
            .map(|c| {
                let again = c.claim_redeliveries(usize::MAX, 9, deadline);
                (
                    c.committed(),
                    c.next(),
                    again.into_iter().map(|(o, _)| o).collect(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn acks_in_any_order_survive_a_reload_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut manager = manager_with_subscription(dir.path()).await;
        // A fixed shuffle of 0..200 on partition 1: runs, gaps and merges.
        let order: Vec<u64> = (0..200u64).map(|i| (i * 73 + 11) % 200).collect();
        let mut acked = std::collections::BTreeSet::new();
        for chunk in order.chunks(17) {
            let subscription = manager.subscription("s").unwrap();
            manager
                .write(&subscription, |state, writes| {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let cursor = &mut state.cursors[1];
                    let before = cursor.committed();
                    let from = cursor.next();
                    for offset in from..200 {
                        cursor.deliver_new(offset, 1, deadline);
                    }
                    writes.cursor(1, cursor, before, &[])?;
                    let ids = chunk.iter().map(|&o| (1, o)).collect();
                    let command = Command::Ack { ids, strict: true };
                    let applied = apply(&subscription, state, command)?;
                    writes.applied(&state.cursors, &applied)
                })
                .await
                .unwrap();
            acked.extend(chunk.iter().copied());
            let committed = (0..200).find(|o| !acked.contains(o)).unwrap_or(200);
            let unacked = (committed..200).filter(|o| !acked.contains(o)).collect();
            let expected = vec![(0, 0, Vec::new()), (committed, 200, unacked)];
            drop(subscription);
            drop(manager);
            manager = reopen(dir.path());
            assert_eq!(positions(&manager), expected);
            // Reopen again, so the next round starts from what was stored.
            drop(manager);
            manager = reopen(dir.path());
        }
        assert_eq!(positions(&manager)[1], (200, 200, Vec::new()));
    }

    #[tokio::test]
    async fn added_partitions_start_at_zero_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut manager = manager_with_subscription(dir.path()).await;
        let subscription = manager.subscription("s").unwrap();
        manager
            .write(&subscription, |state, writes| {
                state.cursors[1] = crate::cursor::Cursor::at(7);
                writes.reset(1, &state.cursors[1])
            })
            .await
            .unwrap();
        manager.grow(&subscription, 4).await.unwrap();
        assert_eq!(subscription.partitions(), 4);
        // Growing to fewer (a broker behind on metadata) changes nothing.
        manager.grow(&subscription, 3).await.unwrap();
        assert_eq!(subscription.partitions(), 4);
        drop(subscription);
        drop(manager);
        manager = reopen(dir.path());
        assert_eq!(manager.subscription("s").unwrap().partitions(), 4);
        let at = |offset| (offset, offset, Vec::new());
        assert_eq!(positions(&manager), vec![at(0), at(7), at(0), at(0)]);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Deliver(u32, u8),
        Ack(Vec<(u32, u8)>),
        Commit(u32, u8),
        Seek(u32, u8),
        Reload,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..2, 1u8..40).prop_map(|(p, n)| Step::Deliver(p, n)),
            proptest::collection::vec((0u32..2, any::<u8>()), 1..30).prop_map(Step::Ack),
            (0u32..2, any::<u8>()).prop_map(|(p, o)| Step::Commit(p, o)),
            (0u32..2, any::<u8>()).prop_map(|(p, o)| Step::Seek(p, o)),
            Just(Step::Reload),
        ]
    }

    /// What a restart must see of the state now: per partition the committed and
    /// next offsets, and exactly the delivered offsets not acknowledged.
    fn expected(manager: &Manager) -> Vec<(u64, u64, Vec<u64>)> {
        let subscription = manager.subscription("s").unwrap();
        let state = subscription.lock().unwrap();
        state
            .cursors
            .iter()
            .map(|c| {
                let (committed, next) = (c.committed(), c.next());
                let acked: std::collections::BTreeSet<u64> =
                    c.acked_ranges(committed..next).flatten().collect();
                let unacked = (committed..next).filter(|o| !acked.contains(o)).collect();
                (committed, next, unacked)
            })
            .collect()
    }

    /// Runs one step through the production write path.
    async fn run(manager: &Manager, step: Step) {
        let subscription = manager.subscription("s").unwrap();
        let command = match step {
            Step::Deliver(partition, count) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                let written = manager.write(&subscription, |state, writes| {
                    let cursor = &mut state.cursors[partition as usize];
                    let before = cursor.committed();
                    for _ in 0..count {
                        let next = cursor.next();
                        cursor.deliver_new(next, 1, deadline);
                    }
                    writes.cursor(partition, cursor, before, &[])
                });
                written.await.unwrap();
                return;
            }
            Step::Ack(ids) => {
                let ids = ids.into_iter().map(|(p, o)| (p, u64::from(o))).collect();
                Command::Ack { ids, strict: false }
            }
            Step::Commit(partition, offset) => {
                let offset = u64::from(offset);
                let next = subscription.lock().unwrap().cursors[partition as usize].next();
                Command::Commit {
                    partition,
                    offset: offset.min(next),
                }
            }
            Step::Seek(partition, offset) => Command::Seek {
                offsets: vec![(partition, u64::from(offset))],
            },
            Step::Reload => return,
        };
        let written = manager.write(&subscription, |state, writes| {
            let applied = apply(&subscription, state, command)?;
            writes.applied(&state.cursors, &applied)
        });
        written.await.unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Against the state in memory: after any steps, a reload finds the same
        /// committed and next offsets and redelivers exactly what was not
        /// acknowledged: nothing acknowledged comes again, nothing is skipped.
        #[test]
        fn a_reload_finds_exactly_what_memory_held(steps in proptest::collection::vec(step(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let mut manager = manager_with_subscription(dir.path()).await;
                for step in steps.into_iter().chain([Step::Reload]) {
                    if !matches!(step, Step::Reload) {
                        run(&manager, step).await;
                        continue;
                    }
                    let before = expected(&manager);
                    drop(manager);
                    manager = reopen(dir.path());
                    assert_eq!(positions(&manager), before);
                }
            });
        }
    }
}
