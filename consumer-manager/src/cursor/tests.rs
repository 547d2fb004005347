use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[test]
fn acks_in_any_order_advance_the_committed_offset_over_the_gap() {
    let mut c = Cursor::at(10);
    for o in 10..15 {
        assert!(c.deliver_new(o, 1, soon()));
    }
    assert_eq!(c.ack(12), AckOutcome::Acked);
    assert_eq!(c.ack(11), AckOutcome::Acked);
    assert_eq!(c.committed(), 10);
    assert_eq!(c.ack(10), AckOutcome::Acked);
    assert_eq!(c.committed(), 13);
    assert_eq!(c.ack(12), AckOutcome::Already);
    assert_eq!(c.ack(15), AckOutcome::NotDelivered);
    assert_eq!(c.outstanding(), 2);
}

#[test]
fn an_expired_lease_is_redelivered_with_its_attempt_counted() {
    let mut c = Cursor::at(0);
    let now = Instant::now();
    c.deliver_new(0, 1, now + Duration::from_millis(10));
    c.deliver_new(1, 1, now + Duration::from_secs(60));
    assert_eq!(c.held_by(1), 2);
    c.expire(now + Duration::from_millis(20));
    assert_eq!(c.held_by(1), 1);
    let again = c.claim_redeliveries(10, 2, soon());
    assert_eq!(again, vec![(0, 2)]);
    assert_eq!(c.held_by(2), 1);
    c.nack(0, 2);
    assert_eq!(c.claim_redeliveries(10, 2, soon()), vec![(0, 3)]);
}

#[test]
fn restore_redelivers_exactly_the_unacked_offsets() {
    let c = Cursor::restore(5, 10, [6..7, 8..9], [(7, 3)]);
    let mut c = c;
    let again: Vec<u64> = c
        .claim_redeliveries(100, 1, soon())
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(again, vec![5, 7, 9]);
    assert_eq!(c.deliveries(7), 4);
}

#[test]
fn a_nack_from_a_reader_whose_lease_moved_on_changes_nothing() {
    let mut c = Cursor::at(0);
    c.deliver_new(0, 1, soon());
    c.release(1);
    assert_eq!(c.claim_redeliveries(1, 2, soon()), vec![(0, 2)]);
    c.nack(0, 1);
    assert_eq!(c.holder_of(0), Some(2), "the new holder keeps its lease");
    c.nack(0, 2);
    assert_eq!(c.holder_of(0), None);
}

#[test]
fn an_unsent_delivery_is_offered_again_with_the_same_attempt() {
    let mut c = Cursor::at(0);
    for o in 0..4 {
        c.deliver_new(o, 1, soon());
    }
    // First deliveries never sent: offered again first, attempt 1 again.
    assert_eq!(c.unsend(2, 1, 1), Some(0));
    assert_eq!(c.held_by(1), 3);
    assert_eq!(
        c.outstanding(),
        3,
        "given back: not delivered, not acknowledged"
    );
    // Released by the holder leaving before the give-back: still undone.
    c.release(1);
    assert_eq!(c.unsend(3, 1, 1), Some(0));
    assert_eq!(c.outstanding(), 2);
    assert_eq!(c.claim_redeliveries(2, 2, soon()), vec![(0, 2), (1, 2)]);
    assert_eq!(c.claim_redeliveries(10, 2, soon()), vec![(2, 1), (3, 1)]);
    // A redelivery never sent: its attempt is not counted.
    assert_eq!(c.unsend(0, 2, 2), Some(1));
    assert_eq!(c.claim_redeliveries(10, 3, soon()), vec![(0, 2)]);
    // Moved on: acknowledged, held by another, or claimed again since.
    c.ack(1);
    assert_eq!(c.unsend(1, 2, 2), None);
    assert_eq!(c.unsend(0, 2, 2), None, "held by 3 now");
    c.release(3);
    assert_eq!(c.claim_redeliveries(10, 4, soon()), vec![(0, 3)]);
    c.release(4);
    assert_eq!(c.unsend(0, 3, 2), None, "attempt 3 went out since");
    assert_eq!(c.outstanding(), 3);
    // Its stored count (0) brings it back after a restart as attempt 1 still.
    let mut c = Cursor::restore(0, 3, [], [(1, 0)]);
    assert_eq!(c.outstanding(), 2);
    assert_eq!(
        c.claim_redeliveries(10, 1, soon()),
        vec![(0, 2), (1, 1), (2, 2)]
    );
}

#[test]
fn release_returns_a_departed_holders_leases() {
    let mut c = Cursor::at(0);
    c.deliver_new(0, 1, soon());
    c.deliver_new(1, 2, soon());
    c.release(1);
    assert_eq!(c.held_by(1), 0);
    assert_eq!(c.claim_redeliveries(10, 3, soon()), vec![(0, 2)]);
}

#[test]
fn skip_below_drops_what_retention_removed() {
    let mut c = Cursor::at(0);
    for o in 0..5 {
        c.deliver_new(o, 1, soon());
    }
    c.skip_below(3);
    assert_eq!(c.committed(), 3);
    assert_eq!(c.held_by(1), 2);
    c.skip_below(8);
    assert_eq!((c.committed(), c.next()), (8, 8));
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn passing_a_batch_counts_it_as_acknowledged_behind_what_is_outstanding() {
    let mut c = Cursor::at(0);
    c.deliver_new(0, 1, soon());
    assert_eq!(c.pass_to(4), 1..4);
    assert_eq!((c.committed(), c.next()), (0, 4));
    assert_eq!(c.outstanding(), 1);
    c.ack(0);
    assert_eq!(c.committed(), 4);
    assert_eq!(c.pass_to(2), 4..4, "nothing below next is passed again");
    assert_eq!(c.pass_to(6), 4..6);
    assert_eq!(c.committed(), 6);
}

#[test]
fn a_seek_clears_a_stop() {
    let mut c = Cursor::at(0);
    c.stop(3, "bad".into());
    assert_eq!(c.stopped().map(|s| s.offset), Some(3));
    c.seek(6);
    assert!(c.stopped().is_none());
}

#[test]
fn the_window_bounds_first_deliveries() {
    let mut c = Cursor::at(0);
    for o in 0..MAX_WINDOW {
        assert!(c.deliver_new(o, 1, soon()));
    }
    assert!(!c.deliver_new(MAX_WINDOW, 1, soon()));
    c.ack(0);
    assert!(c.deliver_new(MAX_WINDOW, 1, soon()));
}

#[derive(Debug, Clone)]
enum Op {
    Deliver(u8),
    Ack(u8),
    Nack(u8),
    Expire,
    Redeliver(u8),
    Release,
    Commit(u8),
    Unsend(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..8).prop_map(Op::Deliver),
        any::<u8>().prop_map(Op::Ack),
        any::<u8>().prop_map(Op::Nack),
        Just(Op::Expire),
        (1u8..8).prop_map(Op::Redeliver),
        Just(Op::Release),
        any::<u8>().prop_map(Op::Commit),
        any::<u8>().prop_map(Op::Unsend),
    ]
}

proptest! {
    /// Against a model: every offset below `next` is acked exactly when the model
    /// says so, and outstanding = delivered - acked.
    #[test]
    fn cursor_matches_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        let base = Instant::now();
        let mut c = Cursor::at(0);
        let mut acked: BTreeSet<u64> = BTreeSet::new();
        let mut delivered = 0u64;
        // Given back unsent at attempt 1: their next delivery is attempt 1 again.
        let mut unsent: BTreeSet<u64> = BTreeSet::new();
        for (step, op) in ops.into_iter().enumerate() {
            let deadline = base + Duration::from_millis(step as u64 % 3);
            match op {
                Op::Deliver(n) => {
                    for _ in 0..n {
                        prop_assert!(c.deliver_new(delivered, 1, deadline));
                        delivered += 1;
                    }
                }
                Op::Ack(o) => {
                    let o = u64::from(o);
                    let outcome = c.ack(o);
                    if o >= delivered {
                        prop_assert_eq!(outcome, AckOutcome::NotDelivered);
                    } else {
                        prop_assert_eq!(outcome == AckOutcome::Acked, acked.insert(o));
                    }
                }
                Op::Nack(o) => c.nack(u64::from(o), 1),
                Op::Expire => c.expire(base + Duration::from_millis(1)),
                Op::Redeliver(n) => {
                    for (o, attempt) in c.claim_redeliveries(n as usize, 2, deadline) {
                        prop_assert!(!acked.contains(&o));
                        prop_assert_eq!(attempt == 1, unsent.remove(&o));
                    }
                }
                Op::Release => c.release(1),
                Op::Commit(o) => {
                    let o = u64::from(o).min(delivered);
                    c.commit_to(o);
                    acked.extend(0..o);
                }
                Op::Unsend(o) => {
                    let o = u64::from(o);
                    if c.unsend(o, 1, 1).is_some() {
                        prop_assert!(o < delivered && !acked.contains(&o));
                        unsent.insert(o);
                    }
                }
            }
            let expected_committed = (0..).find(|o| !acked.contains(o)).unwrap_or(0).min(delivered);
            prop_assert_eq!(c.committed(), expected_committed);
            prop_assert_eq!(c.next(), delivered);
            let unacked = (0..delivered).filter(|o| !acked.contains(o)).count() as u64;
            let unsent = unsent.iter().filter(|o| !acked.contains(o)).count() as u64;
            prop_assert_eq!(c.outstanding(), unacked - unsent);
        }
    }
}

#[derive(Debug, Clone)]
enum LeaseOp {
    /// Deliver this many new offsets, leased until `ms`.
    Deliver(u8, u8),
    Ack(u8),
    Nack(u8),
    /// Claim this many redeliveries, leased until `ms`.
    Redeliver(u8, u8),
    /// Expire at `ms`.
    Expire(u8),
}

fn lease_op() -> impl Strategy<Value = LeaseOp> {
    prop_oneof![
        (1u8..10, 0u8..20).prop_map(|(n, ms)| LeaseOp::Deliver(n, ms)),
        (0u8..64).prop_map(LeaseOp::Ack),
        (0u8..64).prop_map(LeaseOp::Nack),
        (1u8..6, 0u8..20).prop_map(|(n, ms)| LeaseOp::Redeliver(n, ms)),
        (0u8..20).prop_map(LeaseOp::Expire),
    ]
}

proptest! {
    /// Against a model of one lease per offset: an expiry takes back exactly the
    /// leases whose deadline passed, however runs of leases were merged, and leaves
    /// those acknowledged, given back or leased again alone.
    #[test]
    fn expiry_takes_back_exactly_the_leases_that_ran_out(
        ops in proptest::collection::vec(lease_op(), 1..100),
    ) {
        let base = Instant::now();
        let at = |ms: u8| base + Duration::from_millis(u64::from(ms));
        let mut c = Cursor::at(0);
        // Offset to (holder, deadline) of its lease.
        let mut leases: std::collections::BTreeMap<u64, (u64, Instant)> = Default::default();
        let mut delivered = 0u64;
        for op in ops {
            match op {
                LeaseOp::Deliver(n, ms) => {
                    for _ in 0..n {
                        prop_assert!(c.deliver_new(delivered, 1, at(ms)));
                        leases.insert(delivered, (1, at(ms)));
                        delivered += 1;
                    }
                }
                LeaseOp::Ack(o) => {
                    c.ack(u64::from(o));
                    leases.remove(&u64::from(o));
                }
                LeaseOp::Nack(o) => {
                    let o = u64::from(o);
                    c.nack(o, 1);
                    if leases.get(&o).is_some_and(|&(holder, _)| holder == 1) {
                        leases.remove(&o);
                    }
                }
                LeaseOp::Redeliver(n, ms) => {
                    for (o, _) in c.claim_redeliveries(n as usize, 2, at(ms)) {
                        prop_assert!(leases.insert(o, (2, at(ms))).is_none(), "{} was leased", o);
                    }
                }
                LeaseOp::Expire(ms) => {
                    c.expire(at(ms));
                    leases.retain(|_, &mut (_, deadline)| deadline > at(ms));
                }
            }
            for offset in 0..delivered {
                let holder = leases.get(&offset).map(|&(holder, _)| holder);
                prop_assert_eq!(c.holder_of(offset), holder, "offset {}", offset);
            }
        }
    }
}
