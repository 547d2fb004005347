//! What this broker knows of its own lease at the cluster manager.
//!
//! The cluster manager fences a broker whose heartbeats stop for a lease and gives its
//! partitions new leaders. A broker cut off from the cluster managers, but not from its
//! clients, cannot learn that it was replaced; what it can know is when its last
//! acknowledged heartbeat was *sent*. The cluster manager recorded that heartbeat no
//! earlier, so it cannot fence the broker before `sent + lease`. Until then this broker
//! is sure of its leaderships; after it (less a margin for clocks that run at slightly
//! different rates: 1/16 of it) it refuses writes and answers the writes it holds, so producers
//! retry where the partition may now live instead of waiting out a request timeout
//! on a leader that can no longer commit anything.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The share of the lease a broker trusts: it stops a margin before the cluster
/// manager could fence it, whose clock may run a little faster.
const TRUSTED_NUMERATOR: u32 = 15;
const TRUSTED_DENOMINATOR: u32 = 16;

/// The broker's own lease: until when it is sure the cluster manager has not fenced it.
#[derive(Debug)]
pub(crate) struct Lease {
    /// `None` until the first registration answered.
    window: watch::Sender<Option<Window>>,
}

/// What the last accepted heartbeat bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    /// Until then the broker is sure it is not fenced.
    trusted: Instant,
    /// From then on the cluster manager may have fenced it.
    expires: Instant,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            window: watch::Sender::new(None),
        }
    }
}

impl Lease {
    /// A lease that is already held for `length` from now.
    #[cfg(test)]
    pub(crate) fn held_for(length: Duration) -> Self {
        let lease = Lease::default();
        lease.renewed(Instant::now(), length);
        lease
    }

    /// A heartbeat or registration sent at `sent` was accepted with a lease of `length`.
    pub(crate) fn renewed(&self, sent: Instant, length: Duration) {
        let window = Window {
            trusted: sent + length * TRUSTED_NUMERATOR / TRUSTED_DENOMINATOR,
            expires: sent + length,
        };
        self.window.send_if_modified(|current| {
            let later = current.is_none_or(|c| window.trusted > c.trusted);
            if later {
                *current = Some(window);
            }
            later
        });
    }

    /// True while the cluster manager cannot have fenced this broker.
    pub(crate) fn is_held(&self) -> bool {
        self.window
            .borrow()
            .is_some_and(|w| Instant::now() < w.trusted)
    }

    /// True once the whole lease has passed since the last accepted heartbeat was
    /// sent: the cluster manager may have fenced this broker and moved its leaderships.
    pub(crate) fn may_be_fenced(&self) -> bool {
        self.window
            .borrow()
            .is_some_and(|w| Instant::now() >= w.expires)
    }

    /// How long ago the trusted part of the lease ran out (zero while it is held).
    pub(crate) fn lapsed_for(&self) -> Duration {
        match *self.window.borrow() {
            Some(w) => Instant::now().saturating_duration_since(w.trusted),
            None => Duration::ZERO,
        }
    }

    /// Resolves once the lease is not held: at once if it is not, otherwise when it
    /// runs out without a renewal.
    pub(crate) async fn lapsed(&self) {
        let mut window = self.window.subscribe();
        loop {
            let Some(deadline) = window.borrow_and_update().map(|w| w.trusted) else {
                return;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                changed = window.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The error a write gets while the lease is not held.
    pub(crate) fn check(&self, broker: u32) -> crate::Result<()> {
        if self.is_held() {
            return Ok(());
        }
        Err(self.unsure(broker))
    }

    /// The error a metadata read gets once the whole lease has passed: this broker's
    /// view of who leads what may be out of date.
    pub(crate) fn check_not_fenced(&self, broker: u32) -> crate::Result<()> {
        if self.may_be_fenced() {
            return Err(self.unsure(broker));
        }
        Ok(())
    }

    fn unsure(&self, broker: u32) -> crate::Error {
        crate::Error::Unavailable(format!(
            "broker {broker} has not reached the cluster manager for {:.1?} past its lease, so another broker may lead its partitions now; retry (clients ask another broker where the partition lives)",
            self.lapsed_for()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_held_until_most_of_it_has_passed_since_the_heartbeat_was_sent() {
        let lease = Lease::default();
        assert!(!lease.is_held(), "nothing granted yet");
        let sent = Instant::now();
        lease.renewed(sent, Duration::from_secs(8));
        assert!(lease.is_held());
        tokio::time::advance(Duration::from_millis(7_400)).await;
        assert!(lease.is_held());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!lease.is_held(), "15/16 of the lease is trusted");
        assert!(lease.check(1).is_err());
        assert!(
            !lease.may_be_fenced(),
            "the cluster manager waits the whole lease"
        );
        assert!(lease.check_not_fenced(1).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(lease.may_be_fenced());
        assert!(lease.check_not_fenced(1).is_err());
        // An older renewal arriving late does not shorten it, a newer one extends it.
        lease.renewed(sent, Duration::from_secs(1));
        lease.renewed(Instant::now(), Duration::from_secs(8));
        assert!(lease.is_held());
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_waits_out_renewals_and_resolves_when_they_stop() {
        let lease = std::sync::Arc::new(Lease::held_for(Duration::from_secs(8)));
        let waiter = tokio::spawn({
            let lease = lease.clone();
            async move { lease.lapsed().await }
        });
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            lease.renewed(Instant::now(), Duration::from_secs(8));
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "renewed in time");
        }
        tokio::time::advance(Duration::from_secs(8)).await;
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("resolves once renewals stop")
            .unwrap();
    }
}
