//! What `benches/owner.rs` drives: one subscription's claim and ack decisions as the
//! delivery and ack paths take them, without a broker or sled. Not a stable API.

use std::time::{Duration, Instant};

use crate::command::{Command, apply};
use crate::cursor::Cursor;
use crate::delivery::plan;
use crate::store::SubscriptionRecord;
use crate::subscription::{Mode, Subscription};

/// A shared subscription of one partition with one stream member.
pub struct Decisions {
    subscription: Subscription,
    holder: u64,
}

impl Decisions {
    /// A fresh subscription at offset 0.
    pub fn new() -> Self {
        let record = SubscriptionRecord::for_test(1, 1);
        let subscription = Subscription::new(&record, vec![Cursor::at(0)]);
        let holder = subscription
            .lock_any()
            .touch("m", "bench", Mode::Stream, || 1)
            .0;
        Decisions {
            subscription,
            holder,
        }
    }

    /// One delivery step's decisions under the subscription's lock: expire and claim
    /// (the plan), then lease `records` new records. Returns the first offset leased.
    pub fn deliver(&self, records: u64) -> u64 {
        let mut state = self.subscription.lock_any();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let (_, plans) = plan(
            &mut state.cursors,
            &[0],
            self.holder,
            records as usize,
            now,
            deadline,
        );
        let from = plans.first().map_or(0, |p| p.from);
        let cursor = &mut state.cursors[0];
        for offset in from..from + records {
            cursor.deliver_new(offset, self.holder, deadline);
        }
        from
    }

    /// One ack message's decision under the lock: acknowledges `records` offsets from
    /// `from` (in order, as a subscriber acks).
    pub fn ack(&self, from: u64, records: u64) -> usize {
        let mut state = self.subscription.lock_any();
        let ids = (from..from + records).map(|offset| (0, offset)).collect();
        let command = Command::Ack { ids, strict: false };
        apply(&self.subscription, &mut state, command).map_or(0, |applied| applied.acked)
    }
}

impl Default for Decisions {
    fn default() -> Self {
        Self::new()
    }
}
