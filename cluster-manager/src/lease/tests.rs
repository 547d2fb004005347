//! Lease judgement by the leader's monotonic clock: renewals seen, silence measured,
//! wall-clock stamps ignored, and the compare-and-set that spares a late renewal.

use super::*;
use crate::command::Response;
use crate::state::testing::{cluster, heartbeat};

const LEASE: Duration = Duration::from_secs(3);

fn at(start: Instant, secs: u64) -> Instant {
    start + Duration::from_secs(secs)
}

#[test]
fn a_broker_that_stops_renewing_is_silent_after_a_lease_and_one_that_renews_never() {
    let mut state = cluster(2);
    let start = Instant::now();
    let mut renewals = Renewals::default();
    renewals.observe(1, &state, start);
    for second in 1..=4 {
        heartbeat(&mut state, 1, second * 1_000);
        renewals.observe(1, &state, at(start, second));
        let expected: &[SilentBroker] = if second > 3 {
            &[SilentBroker {
                broker: 2,
                renewals: 1,
            }]
        } else {
            &[]
        };
        assert_eq!(renewals.silent(at(start, second), LEASE), expected);
    }
}

#[test]
fn steps_of_the_stamped_wall_clock_fence_no_one_and_spare_no_one() {
    let mut state = cluster(2);
    let start = Instant::now();
    let mut renewals = Renewals::default();
    renewals.observe(1, &state, start);
    // The leader's wall clock jumps an hour ahead, then two hours back, while broker 1
    // keeps renewing every second and broker 2 has stopped.
    let hour = 3_600_000;
    for (second, stamp) in [(1, hour), (2, hour + 1_000), (3, 1_000), (4, 2_000)] {
        heartbeat(&mut state, 1, stamp);
        renewals.observe(1, &state, at(start, second));
    }
    let silent = renewals.silent(at(start, 4), LEASE);
    assert_eq!(silent.iter().map(|s| s.broker).collect::<Vec<_>>(), [2]);
    assert!(
        !state.has_expired_leases(2_000, 3_000),
        "wall-clock judgement is fooled"
    );
}

#[test]
fn a_new_term_gives_every_broker_a_full_lease() {
    let state = cluster(2);
    let start = Instant::now();
    let mut renewals = Renewals::default();
    renewals.observe(1, &state, start);
    assert_eq!(renewals.silent(at(start, 4), LEASE).len(), 2);
    renewals.observe(2, &state, at(start, 4));
    assert!(renewals.silent(at(start, 6), LEASE).is_empty());
    assert_eq!(renewals.silent(at(start, 8), LEASE).len(), 2);
}

#[test]
fn a_renewal_applied_before_the_fencing_saves_the_broker() {
    let mut state = cluster(2);
    let silent = vec![
        SilentBroker {
            broker: 1,
            renewals: 1,
        },
        SilentBroker {
            broker: 2,
            renewals: 1,
        },
    ];
    heartbeat(&mut state, 2, 0);
    let fenced = state
        .apply(Command::FenceSilent { brokers: silent })
        .unwrap();
    assert_eq!(
        fenced,
        Response::LeasesExpired {
            fenced: vec![1],
            leader_changes: 0
        }
    );
    assert!(state.brokers()[&1].fenced());
    assert!(!state.brokers()[&2].fenced());
    let mut renewals = Renewals::default();
    renewals.observe(1, &state, Instant::now());
    assert_eq!(
        renewals.brokers.seen.keys().copied().collect::<Vec<_>>(),
        [2]
    );
}
