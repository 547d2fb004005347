//! Which closed segments retention deletes: a pure decision over segment facts.
//!
//! The storage crate provides the mechanism; the broker picks the policy (topic
//! retention, and later the subscriptions' low-water offsets).

use std::time::Duration;

/// Retention limits of a topic; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete a closed segment once its newest record is older than this.
    pub retention: Option<Duration>,
    /// Delete the oldest closed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
}

/// What retention needs to know of one closed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentFacts {
    /// Size of the segment's `.log` in bytes.
    pub size: u64,
    /// Largest record timestamp in the segment, ms.
    pub max_timestamp: i64,
}

/// Number of closed segments, from the oldest, that `policy` deletes at `now_ms`.
///
/// Only a prefix is ever deleted, so the log stays contiguous; the active segment
/// (counted in `active_size`) is never deleted.
pub(crate) fn segments_to_delete(
    sealed: &[SegmentFacts],
    active_size: u64,
    policy: RetentionPolicy,
    now_ms: i64,
) -> usize {
    let by_time = policy.retention.map_or(0, |retention| {
        let limit = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        sealed
            .iter()
            .take_while(|s| now_ms.saturating_sub(s.max_timestamp) > limit)
            .count()
    });
    let by_size = policy.retention_bytes.map_or(0, |limit| {
        let mut total: u64 = sealed.iter().map(|s| s.size).sum::<u64>() + active_size;
        let mut count = 0;
        for segment in sealed {
            if total <= limit {
                break;
            }
            total -= segment.size;
            count += 1;
        }
        count
    });
    by_time.max(by_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sizes_and_times: &[(u64, i64)]) -> Vec<SegmentFacts> {
        sizes_and_times
            .iter()
            .map(|&(size, max_timestamp)| SegmentFacts {
                size,
                max_timestamp,
            })
            .collect()
    }

    fn check(
        sealed: &[(u64, i64)],
        active: u64,
        policy: RetentionPolicy,
        now: i64,
        expected: usize,
    ) {
        assert_eq!(
            segments_to_delete(&facts(sealed), active, policy, now),
            expected
        );
    }

    #[test]
    fn time_retention_deletes_expired_prefix_only() {
        let policy = RetentionPolicy {
            retention: Some(Duration::from_millis(100)),
            retention_bytes: None,
        };
        check(&[(10, 0), (10, 50), (10, 500)], 10, policy, 200, 2);
        check(&[(10, 0), (10, 500), (10, 0)], 10, policy, 200, 1);
        check(&[(10, 150)], 10, policy, 200, 0);
    }

    #[test]
    fn size_retention_keeps_the_log_under_the_limit() {
        let policy = RetentionPolicy {
            retention: None,
            retention_bytes: Some(25),
        };
        check(&[(10, 0), (10, 0), (10, 0)], 5, policy, 0, 1);
        check(&[(10, 0), (10, 0), (10, 0)], 6, policy, 0, 2);
        check(&[(10, 0)], 100, policy, 0, 1);
        check(&[(10, 0)], 5, policy, 0, 0);
    }

    #[test]
    fn unlimited_policy_deletes_nothing() {
        check(&[(10, 0)], 10, RetentionPolicy::default(), i64::MAX, 0);
    }
}
