//! The decisions that change a subscription's positions, as commands applied by one
//! pure function.
//!
//! An ack, a nack, a Kafka-style commit and a seek are each a [`Command`]: a plain
//! value that [`apply`] applies to the subscription's [`State`], with no I/O and no
//! clock. What it returns ([`Applied`]) names the partitions whose stored position
//! changed; the edges (`acks`, `seek`) turn that into sled writes and wait for group
//! commit before answering. Applying the same commands in the same order to the same
//! state gives the same state, so a later consumer manager with replicated state can
//! ship these commands to its followers as the cluster manager ships its Raft
//! commands.

use std::collections::BTreeMap;

use crate::cursor::{AckOutcome, Holder};
use crate::error::{Error, Result};
use crate::subscription::{State, Subscription};

/// A change to one subscription's positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Acknowledges records (partition, offset). `strict` refuses the whole command,
    /// changing nothing, if an id names an unknown partition or an offset never
    /// delivered; otherwise (a stream's acks, which may trail a seek) such ids are
    /// passed over.
    Ack {
        /// The records.
        ids: Vec<(u32, u64)>,
        /// Refuse unknown ids rather than pass over them.
        strict: bool,
    },
    /// Gives records `holder` leases back for immediate redelivery: all of them, or
    /// none if any is not its own (a nack that changes nothing must say so).
    Nack {
        /// The caller's lease holder; `None` when the caller is no member.
        holder: Option<Holder>,
        /// The records.
        ids: Vec<(u32, u64)>,
    },
    /// Kafka-style commit: everything of `partition` below `offset` is acknowledged.
    Commit {
        /// The partition.
        partition: u32,
        /// The new committed offset (moves forward only).
        offset: u64,
    },
    /// Moves positions (partition, offset): nothing stays outstanding there.
    Seek {
        /// The partitions and where each starts.
        offsets: Vec<(u32, u64)>,
    },
}

/// How one partition's stored position changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Moved {
    /// The cursor moved on from committed offset `before`; `acked` are the offsets
    /// newly acknowledged (those above the new committed offset are stored as acks).
    Cursor {
        /// The partition.
        partition: u32,
        /// The committed offset before the change.
        before: u64,
        /// Offsets acknowledged by the change.
        acked: Vec<u64>,
    },
    /// The position was replaced: nothing stored for the partition before counts.
    Reset {
        /// The partition.
        partition: u32,
    },
}

/// What applying a command changed, for the edges to store.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Partitions whose stored position changed, in partition order.
    pub(crate) moved: Vec<Moved>,
    /// Records newly acknowledged.
    pub(crate) acked: usize,
}

/// Applies `command` to `state`, the state of `subscription` (whose identity only
/// names errors). A refused command changes nothing.
pub(crate) fn apply(
    subscription: &Subscription,
    state: &mut State,
    command: Command,
) -> Result<Applied> {
    match command {
        Command::Ack { ids, strict } => ack(subscription, state, &ids, strict),
        Command::Nack { holder, ids } => nack(subscription, state, holder, &ids),
        Command::Commit { partition, offset } => {
            let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                return Err(no_such_partition(subscription, partition));
            };
            let before = cursor.committed();
            cursor.commit_to(offset);
            Ok(Applied {
                moved: vec![Moved::Cursor {
                    partition,
                    before,
                    acked: Vec::new(),
                }],
                acked: 0,
            })
        }
        Command::Seek { offsets } => {
            let mut moved = Vec::with_capacity(offsets.len());
            for (partition, offset) in offsets {
                if let Some(cursor) = state.cursors.get_mut(partition as usize) {
                    cursor.seek(offset);
                    moved.push(Moved::Reset { partition });
                }
            }
            Ok(Applied { moved, acked: 0 })
        }
    }
}

/// [`Command::Ack`]: checks every id first (strict), then acknowledges partition by
/// partition.
fn ack(
    subscription: &Subscription,
    state: &mut State,
    ids: &[(u32, u64)],
    strict: bool,
) -> Result<Applied> {
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(partition, offset) in ids {
        let valid = match state.cursors.get(partition as usize) {
            None if strict => return Err(no_such_partition(subscription, partition)),
            None => false,
            Some(cursor) if offset >= cursor.next() && strict => {
                return Err(Error::NeverDelivered {
                    subscription: subscription.name.clone(),
                    partition,
                    offset,
                });
            }
            Some(cursor) => offset < cursor.next(),
        };
        if valid {
            by_partition.entry(partition).or_default().push(offset);
        }
    }
    let mut applied = Applied::default();
    for (partition, offsets) in by_partition {
        let Some(cursor) = state.cursors.get_mut(partition as usize) else {
            continue;
        };
        let before = cursor.committed();
        let acked: Vec<u64> = offsets
            .into_iter()
            .filter(|&offset| cursor.ack(offset) == AckOutcome::Acked)
            .collect();
        if acked.is_empty() {
            continue;
        }
        applied.acked += acked.len();
        applied.moved.push(Moved::Cursor {
            partition,
            before,
            acked,
        });
    }
    Ok(applied)
}

/// [`Command::Nack`]: only the caller's own leases, all or nothing.
fn nack(
    subscription: &Subscription,
    state: &mut State,
    holder: Option<Holder>,
    ids: &[(u32, u64)],
) -> Result<Applied> {
    if let Some(&(partition, _)) = ids.iter().find(|(p, _)| *p >= subscription.partitions()) {
        return Err(no_such_partition(subscription, partition));
    }
    let not_held = ids.iter().find(|&&(partition, offset)| {
        let lease = state
            .cursors
            .get(partition as usize)
            .and_then(|c| c.holder_of(offset));
        holder.is_none() || lease != holder
    });
    if let Some(&(partition, offset)) = not_held {
        return Err(Error::NotHeld {
            subscription: subscription.name.clone(),
            partition,
            offset,
        });
    }
    let Some(holder) = holder else {
        return Ok(Applied::default());
    };
    for &(partition, offset) in ids {
        if let Some(cursor) = state.cursors.get_mut(partition as usize) {
            cursor.nack(offset, holder);
        }
    }
    Ok(Applied::default())
}

/// The error for a partition index past the subscription's topic's partitions.
pub(crate) fn no_such_partition(subscription: &Subscription, partition: u32) -> Error {
    Error::NoSuchPartition {
        topic: subscription.topic.clone(),
        partition,
        partitions: subscription.partitions(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;
    use crate::store::SubscriptionRecord;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn subscription(partitions: u32) -> Subscription {
        let record = SubscriptionRecord::for_test(partitions, 1);
        Subscription::new(&record, (0..partitions).map(|_| Cursor::at(0)).collect())
    }

    fn deliver(state: &mut State, partition: usize, count: u64, holder: Holder) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let cursor = &mut state.cursors[partition];
        for _ in 0..count {
            let next = cursor.next();
            assert!(cursor.deliver_new(next, holder, deadline));
        }
    }

    fn ack(ids: &[(u32, u64)], strict: bool) -> Command {
        Command::Ack {
            ids: ids.to_vec(),
            strict,
        }
    }

    #[test]
    fn a_strict_ack_naming_an_undelivered_offset_changes_nothing() {
        let subscription = subscription(2);
        let mut state = subscription.lock().unwrap();
        deliver(&mut state, 0, 3, 1);
        let refused = apply(&subscription, &mut state, ack(&[(0, 0), (0, 5)], true));
        assert!(matches!(
            refused,
            Err(Error::NeverDelivered { offset: 5, .. })
        ));
        assert_eq!(
            state.cursors[0].committed(),
            0,
            "the valid id was not applied"
        );
        let refused = apply(&subscription, &mut state, ack(&[(0, 0), (7, 0)], true));
        assert!(matches!(
            refused,
            Err(Error::NoSuchPartition { partition: 7, .. })
        ));
    }

    #[test]
    fn a_lenient_ack_passes_over_what_it_cannot_apply() {
        let subscription = subscription(2);
        let mut state = subscription.lock().unwrap();
        deliver(&mut state, 0, 3, 1);
        let applied = apply(
            &subscription,
            &mut state,
            ack(&[(0, 1), (0, 5), (7, 0), (0, 0)], false),
        )
        .unwrap();
        assert_eq!(applied.acked, 2);
        assert_eq!(
            applied.moved,
            vec![Moved::Cursor {
                partition: 0,
                before: 0,
                acked: vec![1, 0]
            }]
        );
        assert_eq!(state.cursors[0].committed(), 2);
        let again = apply(&subscription, &mut state, ack(&[(0, 1)], false)).unwrap();
        assert_eq!(
            again,
            Applied::default(),
            "an ack applied twice moves nothing"
        );
    }

    #[test]
    fn a_nack_is_all_or_nothing_and_only_of_the_callers_leases() {
        let subscription = subscription(1);
        let mut state = subscription.lock().unwrap();
        deliver(&mut state, 0, 2, 1);
        deliver(&mut state, 0, 1, 2);
        let nack = |holder, ids: &[(u32, u64)]| Command::Nack {
            holder,
            ids: ids.to_vec(),
        };
        let refused = apply(&subscription, &mut state, nack(Some(1), &[(0, 0), (0, 2)]));
        assert!(matches!(refused, Err(Error::NotHeld { offset: 2, .. })));
        assert_eq!(state.cursors[0].holder_of(0), Some(1));
        let refused = apply(&subscription, &mut state, nack(None, &[(0, 0)]));
        assert!(matches!(refused, Err(Error::NotHeld { .. })));
        apply(&subscription, &mut state, nack(Some(1), &[(0, 0), (0, 1)])).unwrap();
        assert_eq!(state.cursors[0].held_by(1), 0);
        assert_eq!(
            state.cursors[0].outstanding(),
            3,
            "nacked, not acknowledged"
        );
    }

    #[test]
    fn a_seek_resets_and_a_commit_moves_forward_only() {
        let subscription = subscription(2);
        let mut state = subscription.lock().unwrap();
        deliver(&mut state, 1, 5, 1);
        let commit = |offset| Command::Commit {
            partition: 1,
            offset,
        };
        apply(&subscription, &mut state, commit(3)).unwrap();
        apply(&subscription, &mut state, commit(1)).unwrap();
        assert_eq!(state.cursors[1].committed(), 3);
        let seek = Command::Seek {
            offsets: vec![(1, 1), (9, 0)],
        };
        let applied = apply(&subscription, &mut state, seek).unwrap();
        assert_eq!(applied.moved, vec![Moved::Reset { partition: 1 }]);
        assert_eq!(
            (state.cursors[1].committed(), state.cursors[1].next()),
            (1, 1)
        );
        assert_eq!(state.cursors[1].seeks(), 1);
    }

    proptest! {
        /// Replaying the same commands on a fresh state gives the same positions:
        /// the property a replicated consumer manager would rely on.
        #[test]
        fn the_same_commands_give_the_same_positions(
            acks in proptest::collection::vec((0u32..3, 0u64..40), 0..60),
            commits in proptest::collection::vec((0u32..3, 0u64..40), 0..4),
        ) {
            let run = || {
                let subscription = subscription(3);
                let mut state = subscription.lock_any();
                for partition in 0..3 {
                    deliver(&mut state, partition, 30, 1);
                }
                let mut applied = Vec::new();
                for chunk in acks.chunks(7) {
                    applied.push(apply(&subscription, &mut state, ack(chunk, false)).unwrap());
                }
                for &(partition, offset) in &commits {
                    let commit = Command::Commit { partition, offset };
                    applied.push(apply(&subscription, &mut state, commit).unwrap());
                }
                let positions: Vec<(u64, u64, u64)> = state
                    .cursors
                    .iter()
                    .map(|c| (c.committed(), c.next(), c.outstanding()))
                    .collect();
                (applied, positions)
            };
            let (first, again) = (run(), run());
            prop_assert_eq!(&first, &again);
            // Whatever an ack named newly is counted once.
            let counted: usize = first.0.iter().map(|a| a.acked).sum();
            let distinct: std::collections::BTreeSet<_> =
                acks.iter().filter(|&&(_, o)| o < 30).collect();
            prop_assert!(counted <= distinct.len());
        }
    }
}
