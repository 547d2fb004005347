//! Group commit: many writers, one sled flush.
//!
//! Every write of the consumer manager (acks, deliveries, seeks, memberships, of every
//! subscription) is applied to sled in memory, then made durable before its caller is
//! answered. A flush makes durable everything applied before it started, so writers
//! that ask while one runs need not start their own: they wait for the next round,
//! which starts as soon as the running one ends and covers all of them. At most one
//! flush runs at a time, however many subscriptions write, and one fsync answers
//! every ack that arrived while the previous one ran.
//!
//! The bookkeeping ([`Rounds`]) is pure and property-tested; the flush itself runs in
//! a task of its own ([`GroupCommit::durable`] spawns it), so a waiter that is dropped
//! (its request cancelled) never leaves a round half-run.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::lock::recover;

/// Which flush rounds have started and finished, and which one writers wait for.
/// Rounds are numbered from 1 and run one at a time, in order.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    /// Rounds started so far (the running one included).
    started: u64,
    /// Whether round `started` is running.
    running: bool,
    /// The highest round a writer waits for.
    wanted: u64,
}

/// What a writer asking for durability gets: the round whose end makes its writes
/// durable, and whether the writer must start that round itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The round to wait for.
    pub(crate) round: u64,
    /// True when no round ran: the caller starts this one.
    pub(crate) start: bool,
}

impl Rounds {
    /// A writer whose writes are applied asks for them to be made durable. A round
    /// that is running may have started before those writes, so only the next one
    /// is sure to cover them.
    pub(crate) fn ask(&mut self) -> Ticket {
        if self.running {
            let round = self.started + 1;
            self.wanted = self.wanted.max(round);
            return Ticket {
                round,
                start: false,
            };
        }
        self.started += 1;
        self.running = true;
        Ticket {
            round: self.started,
            start: true,
        }
    }

    /// The running round ended well. Returns the round to start at once, if a writer
    /// waits for one; otherwise no round runs any more.
    pub(crate) fn finish(&mut self) -> Option<u64> {
        assert!(self.running, "a round finished that never started");
        if self.wanted > self.started {
            self.started += 1;
            assert_eq!(
                self.wanted, self.started,
                "writers wait one round ahead at most"
            );
            return Some(self.started);
        }
        self.running = false;
        None
    }

    /// The running round failed: the store is failed for good, nothing runs again.
    pub(crate) fn abandon(&mut self) {
        self.running = false;
        self.wanted = self.started;
    }
}

/// Shared by the store and the flush task it spawns.
pub(crate) struct GroupCommit {
    rounds: Mutex<Rounds>,
    /// The last round that ended well.
    finished: watch::Sender<u64>,
}

impl GroupCommit {
    /// No round run yet.
    pub(crate) fn new() -> Arc<GroupCommit> {
        Arc::new(GroupCommit {
            rounds: Mutex::new(Rounds::default()),
            finished: watch::Sender::new(0),
        })
    }

    /// Waits until everything applied before this call is durable: `flush` runs one
    /// round (the caller's own or one it shares with other writers) and reports
    /// failure as `Err`, after which nothing is waited for any more (the caller's
    /// store has failed; `failed` resolves then).
    pub(crate) async fn durable<F, Fut>(
        self: &Arc<Self>,
        flush: F,
        failed: impl std::future::Future<Output = ()>,
    ) where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let mut finished = self.finished.subscribe();
        let ticket = recover(self.rounds.lock()).ask();
        if ticket.start {
            tokio::spawn(self.clone().run(ticket.round, flush));
        }
        tokio::select! {
            _ = finished.wait_for(|&done| done >= ticket.round) => {}
            () = failed => {}
        }
    }

    /// Runs rounds from `round` for as long as writers wait for another.
    async fn run<F, Fut>(self: Arc<Self>, mut round: u64, flush: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        loop {
            if !flush().await {
                recover(self.rounds.lock()).abandon();
                return;
            }
            let next = recover(self.rounds.lock()).finish();
            self.finished.send_replace(round);
            tracing::trace!(round, "flush round done");
            match next {
                Some(next) => round = next,
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writers_during_a_flush_share_the_next_round() {
        let mut rounds = Rounds::default();
        assert_eq!(
            rounds.ask(),
            Ticket {
                round: 1,
                start: true
            }
        );
        for _ in 0..3 {
            assert_eq!(
                rounds.ask(),
                Ticket {
                    round: 2,
                    start: false
                }
            );
        }
        assert_eq!(rounds.finish(), Some(2));
        assert_eq!(rounds.finish(), None);
        assert!(rounds.ask().start, "nothing runs: the writer starts one");
    }

    #[tokio::test]
    async fn many_writers_at_once_share_two_flushes() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::Duration;
        let commit = GroupCommit::new();
        let flushes = Arc::new(AtomicU32::new(0));
        let flush = {
            let flushes = flushes.clone();
            move || {
                let flushes = flushes.clone();
                async move {
                    flushes.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    true
                }
            }
        };
        let writers: Vec<_> = (0..50)
            .map(|_| {
                let (commit, flush) = (commit.clone(), flush.clone());
                tokio::spawn(async move {
                    commit.durable(flush, std::future::pending()).await;
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        // The first writer's round, then one round for everyone who came meanwhile.
        assert!(flushes.load(Ordering::SeqCst) <= 2, "{flushes:?}");
        assert_eq!(
            *commit.finished.borrow(),
            u64::from(flushes.load(Ordering::SeqCst))
        );
    }

    #[tokio::test]
    async fn a_failed_flush_ends_every_wait() {
        let commit = GroupCommit::new();
        let (failed, on_failure) = watch::channel(false);
        let failed = Arc::new(failed);
        let flush = move || {
            let failed = failed.clone();
            async move {
                failed.send_replace(true);
                false
            }
        };
        let waiting = |mut on_failure: watch::Receiver<bool>| async move {
            let _ = on_failure.wait_for(|&f| f).await;
        };
        commit.durable(flush, waiting(on_failure.clone())).await;
        assert!(*on_failure.borrow());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Ask,
        Finish,
    }

    proptest! {
        /// Against a model of time: every writer's round starts after it asked, and
        /// once the rounds drain, every writer's round has finished.
        #[test]
        fn every_writer_waits_for_a_round_started_after_it_asked(
            steps in proptest::collection::vec(prop_oneof![Just(Step::Ask), Just(Step::Finish)], 1..60)
        ) {
            let mut rounds = Rounds::default();
            let mut started_at: Vec<usize> = vec![0]; // round r started at step started_at[r]
            let mut finished = 0u64;
            let mut running: Option<u64> = None;
            let mut tickets: Vec<(usize, u64)> = Vec::new();
            for (time, step) in steps.into_iter().enumerate() {
                let time = time + 1;
                match step {
                    Step::Ask => {
                        let ticket = rounds.ask();
                        if ticket.start {
                            prop_assert!(running.is_none());
                            running = Some(ticket.round);
                            started_at.push(time);
                        }
                        tickets.push((time, ticket.round));
                    }
                    Step::Finish => {
                        let Some(round) = running else { continue };
                        finished = round;
                        running = rounds.finish();
                        if let Some(next) = running {
                            prop_assert_eq!(next, round + 1);
                            started_at.push(time);
                        }
                    }
                }
            }
            // Drain.
            while let Some(round) = running {
                finished = round;
                running = rounds.finish();
                if running.is_some() {
                    started_at.push(usize::MAX);
                }
            }
            for (asked, round) in tickets {
                prop_assert!(round <= finished, "round {} never finished", round);
                prop_assert!(started_at[round as usize] >= asked, "round {} started before its writer asked", round);
            }
        }
    }
}
