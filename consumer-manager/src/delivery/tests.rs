use super::*;

fn later(now: Instant, ms: u64) -> Instant {
    now + Duration::from_millis(ms)
}

#[test]
fn a_claim_takes_redeliveries_first_then_plans_new_records() {
    let now = Instant::now();
    let mut cursors: Vec<Cursor> = (0..3).map(|_| Cursor::at(0)).collect();
    for offset in 0..3 {
        cursors[1].deliver_new(offset, 1, later(now, 10));
    }
    cursors[2].stop(0, "bad".into());
    // Leases of holder 1 expired: holder 2 gets them, attempt 2, before new ones.
    let (claims, plans) = plan(
        &mut cursors,
        &[1, 0, 2],
        2,
        10,
        later(now, 20),
        later(now, 99),
    );
    assert_eq!(claims, vec![(1, 0, 2), (1, 1, 2), (1, 2, 2)]);
    let planned = vec![
        Plan {
            partition: 1,
            from: 3,
        },
        Plan {
            partition: 0,
            from: 0,
        },
    ];
    assert_eq!(plans, planned, "a stopped partition is not read");
    assert_eq!(cursors[1].held_by(2), 3);
}

#[test]
fn a_claim_full_of_redeliveries_plans_nothing_new() {
    let now = Instant::now();
    let mut cursors = vec![Cursor::at(0)];
    for offset in 0..5 {
        cursors[0].deliver_new(offset, 1, now);
    }
    let (claims, plans) = plan(&mut cursors, &[0], 2, 2, later(now, 1), later(now, 99));
    assert_eq!(claims.len(), 2);
    assert!(plans.is_empty());
    let (claims, plans) = plan(&mut cursors, &[0], 2, 10, later(now, 1), later(now, 99));
    assert_eq!(claims.len(), 3, "the rest, once there is room");
    assert_eq!(plans.len(), 1);
}

#[test]
fn fetches_ask_for_what_a_step_can_take_split_between_partitions() {
    let check = |left, record_bytes, planned, expected| {
        assert_eq!(fetch_bytes(left, record_bytes, planned), expected);
    };
    check(5_000, 120, 1, 750_000);
    check(5_000, 120, 3, 250_000);
    check(10, 120, 3, FETCH_BYTES_MIN as u32);
    check(10_000, 1 << 20, 1, FETCH_BYTES_MAX as u32);
    check(5_000, 120, 0, 750_000);
}
