//! Who applies a subscription's decisions: the caller's task under the
//! subscription's lock (what the consumer manager does), or one owner task per
//! subscription that callers send commands to and await answers from. The decisions
//! are the same (a delivery step's claim and leases, an ack message's acks, through
//! `pubsub_consumer_manager::bench_api`); what differs is the hand-off. Runs on a
//! two-worker runtime, as `pubsubd` on this 2-core machine.
//!
//! Run with `cargo bench -p pubsub-consumer-manager --bench owner`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pubsub_consumer_manager::bench_api::Decisions;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

/// A command to an owner task.
enum Request {
    Deliver {
        records: u64,
        reply: oneshot::Sender<u64>,
    },
    Ack {
        from: u64,
        records: u64,
        reply: oneshot::Sender<usize>,
    },
}

/// The owner of one subscription: applies commands in order, answers each.
async fn own(decisions: Decisions, mut requests: mpsc::Receiver<Request>) {
    while let Some(request) = requests.recv().await {
        match request {
            Request::Deliver { records, reply } => {
                let _ = reply.send(decisions.deliver(records));
            }
            Request::Ack {
                from,
                records,
                reply,
            } => {
                let _ = reply.send(decisions.ack(from, records));
            }
        }
    }
}

/// How callers reach a subscription's decisions.
#[derive(Clone)]
enum Path {
    Lock(Arc<Decisions>),
    Owner(mpsc::Sender<Request>),
}

impl Path {
    fn new(owner: bool) -> Path {
        if !owner {
            return Path::Lock(Arc::new(Decisions::new()));
        }
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(own(Decisions::new(), receiver));
        Path::Owner(sender)
    }

    /// One delivery step of `records` and the ack of all of them.
    async fn deliver_and_ack(&self, records: u64) {
        match self {
            Path::Lock(decisions) => {
                let from = decisions.deliver(records);
                std::hint::black_box(decisions.ack(from, records));
            }
            Path::Owner(owner) => {
                let (reply, answer) = oneshot::channel();
                let _ = owner.send(Request::Deliver { records, reply }).await;
                let from = answer.await.unwrap();
                let (reply, answer) = oneshot::channel();
                let _ = owner
                    .send(Request::Ack {
                        from,
                        records,
                        reply,
                    })
                    .await;
                std::hint::black_box(answer.await.unwrap());
            }
        }
    }
}

/// Runs `iters` steps spread over `callers` tasks, `callers / subscriptions` of them
/// on each subscription.
fn run(
    runtime: &Runtime,
    owner: bool,
    subscriptions: usize,
    callers: usize,
    records: u64,
    iters: u64,
) -> Duration {
    runtime.block_on(async {
        let paths: Vec<Path> = (0..subscriptions).map(|_| Path::new(owner)).collect();
        let each = iters.div_ceil(callers as u64);
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let path = paths[caller % subscriptions].clone();
                tokio::spawn(async move {
                    for _ in 0..each {
                        path.deliver_and_ack(records).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn owner(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // (subscriptions, callers): one stream; four streams of one subscription; a
    // fan-out of 100 subscriptions with a stream each.
    for (subscriptions, callers) in [(1, 1), (1, 4), (100, 100)] {
        let mut group = c.benchmark_group(format!("owner/{subscriptions}sub-{callers}callers"));
        for records in [1u64, 500] {
            group.throughput(Throughput::Elements(records));
            for (name, owner) in [("lock", false), ("task", true)] {
                group.bench_function(BenchmarkId::new(name, records), |b| {
                    b.iter_custom(|iters| {
                        run(&runtime, owner, subscriptions, callers, records, iters)
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = owner
}
criterion_main!(benches);
