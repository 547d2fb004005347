//! The copy rate of replica moves on a receiving broker: one token bucket shared by
//! the follower tasks of every partition this broker is being added to, so that a
//! balance or a decommission copies at most the cluster's `move_rate_bytes_per_sec`
//! into this broker and leaves the disk and network to clients. In-sync followers are
//! never throttled: slowing them would push them out of the in-sync replicas.
//!
//! A fetch asks for at most the bytes in the bucket; the leader may still answer one
//! batch larger than that (a fetch returns at least one whole batch), which leaves the
//! bucket in debt, and the next fetch waits until the debt is paid.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Bytes a moving follower asks for per fetch at most, throttled or not.
const FETCH_BYTES_MAX: u64 = 8 << 20;

/// A broker-wide token bucket for move traffic.
#[derive(Debug)]
pub(crate) struct MoveThrottle {
    /// Bytes per second; 0: unlimited.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be fetched now; negative after an oversized answer.
    tokens: f64,
    refilled: Instant,
}

impl Default for MoveThrottle {
    fn default() -> Self {
        MoveThrottle {
            rate: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled: Instant::now(),
            }),
        }
    }
}

impl MoveThrottle {
    /// Applies the rate from new metadata.
    pub(crate) fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Waits until the bucket allows a fetch, then answers how many bytes it may ask
    /// for; `None` when moves are not throttled.
    pub(crate) async fn admit(&self) -> Option<u32> {
        loop {
            let rate = self.rate.load(Ordering::Relaxed);
            if rate == 0 {
                return None;
            }
            let wait = {
                let Ok(mut bucket) = self.bucket.lock() else {
                    return None;
                };
                bucket.refill(rate);
                if bucket.tokens >= 1.0 {
                    let bytes = (bucket.tokens as u64).min(FETCH_BYTES_MAX);
                    return Some(u32::try_from(bytes).unwrap_or(u32::MAX));
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / rate as f64)
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Takes `bytes` a throttled fetch brought from the bucket.
    pub(crate) fn spend(&self, bytes: usize) {
        if let Ok(mut bucket) = self.bucket.lock() {
            bucket.tokens -= bytes as f64;
        }
    }
}

impl Bucket {
    /// Adds what `rate` earned since the last refill, up to one second's worth, so an
    /// idle bucket does not allow a burst of more than a second.
    fn refill(&mut self, rate: u64) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * rate as f64;
        self.tokens = (self.tokens + earned).min(rate as f64);
        self.refilled = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn copies_at_the_rate_on_average_and_not_at_all_when_unlimited() {
        let throttle = MoveThrottle::default();
        assert_eq!(throttle.admit().await, None, "unlimited by default");
        throttle.set_rate(1_000_000);
        let start = Instant::now();
        let mut copied = 0;
        while copied < 10_000_000 {
            let allowed = throttle.admit().await.unwrap();
            assert!(
                allowed as u64 <= 1_000_000,
                "never more than a second's worth"
            );
            // The leader answers a little more than asked (one whole batch).
            let answer = allowed as usize + 4_096;
            throttle.spend(answer);
            copied += answer;
        }
        let took = start.elapsed().as_secs_f64();
        let rate = copied as f64 / took;
        assert!(
            (900_000.0..=1_100_000.0).contains(&rate),
            "{rate} bytes/s over {took} s"
        );
        throttle.set_rate(0);
        assert_eq!(throttle.admit().await, None);
    }
}
