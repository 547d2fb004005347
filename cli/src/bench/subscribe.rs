//! `pubsub bench subscribe`: a fresh subscription from the beginning of a topic, read
//! through a push stream and acknowledged record by record, as `pubsub subscribe`
//! does; reports delivered-and-acknowledged throughput through the consumer manager.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pubsub_client::{Client, SubscriptionOptions, Subscriptions};
use pubsub_proto::v1;
use tokio::time::Instant;

use super::produce::progress_ticker;
use super::report::{Progress, Report, VsConsume};
use super::{ConsumeArgs, SubscribeArgs};

/// Runs the subscribe benchmark.
pub async fn run(
    client: &Client,
    args: SubscribeArgs,
    show_progress: bool,
) -> anyhow::Result<Report> {
    let subscriptions = Subscriptions::new(client.clone());
    let name = format!("bench-{:08x}", rand::random::<u32>());
    let options = SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..SubscriptionOptions::default()
    };
    subscriptions.subscribe(&args.topic, &name, options).await?;
    let read = Arc::new(AtomicU64::new(0));
    let progress = Progress::new(args.records, show_progress, "subscribe");
    let ticker = progress_ticker(read.clone(), progress);
    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + d);
    let mut stream = subscriptions.stream(&name, "", args.credits).await?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.records && stop_at.is_none_or(|stop| Instant::now() < stop) {
        let Some(record) = stream.next_record().await? else {
            break;
        };
        bytes += record.value.as_ref().map_or(0, |v| v.len() as u64);
        stream.ack(record.partition, record.offset).await?;
        records += 1;
        read.fetch_add(1, Ordering::Relaxed);
    }
    stream.close().await?;
    let elapsed = start.elapsed();
    ticker.abort();
    subscriptions.unsubscribe(&args.topic, &name).await?;
    let mut report = Report::new("subscribe", records, bytes, elapsed, None);
    if args.vs_consume {
        let consume = ConsumeArgs {
            topic: args.topic.clone(),
            records,
            consumers: 1,
            fetch_bytes: super::FETCH_BYTES,
            duration: None,
            kafka: None,
        };
        let consumed = super::consume::run(client, consume, false).await?;
        report.vs_consume = Some(VsConsume {
            consume_records_per_s: consumed.records_per_s,
            ratio: report.records_per_s / consumed.records_per_s.max(1e-9),
        });
    }
    Ok(report)
}
