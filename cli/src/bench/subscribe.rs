//! `pubsub bench subscribe`: a fresh subscription from the beginning of a topic, read
//! through a push stream and acknowledged record by record, as `pubsub subscribe`
//! does; reports delivered-and-acknowledged throughput through the consumer manager.
//! With `--subscriptions N`, N such subscriptions read the topic at once (fan-out).

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
    let subscriptions = Subscriptions::new(client.clone()).batched(!args.one_record_per_message);
    let options = SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..SubscriptionOptions::default()
    };
    let run = format!("bench-{:08x}", rand::random::<u32>());
    let names: Vec<String> = (0..args.subscriptions)
        .map(|i| format!("{run}-{i}"))
        .collect();
    for name in &names {
        subscriptions
            .subscribe(&args.topic, name, options.clone())
            .await?;
    }
    let read = Arc::new(AtomicU64::new(0));
    let total = args.records * u64::from(args.subscriptions);
    let progress = Progress::new(total, show_progress, "subscribe");
    let ticker = progress_ticker(read.clone(), progress);
    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + d);
    let readers: Vec<_> = names
        .iter()
        .map(|name| {
            let (subscriptions, name, read) = (subscriptions.clone(), name.clone(), read.clone());
            let (records, credits) = (args.records, args.credits);
            tokio::spawn(async move {
                read_all(&subscriptions, &name, records, credits, stop_at, &read).await
            })
        })
        .collect();
    let (mut records, mut bytes) = (0u64, 0u64);
    for reader in readers {
        let (r, b) = reader.await??;
        records += r;
        bytes += b;
    }
    let elapsed = start.elapsed();
    ticker.abort();
    for name in names.iter().filter(|_| !args.keep) {
        subscriptions.unsubscribe(&args.topic, name).await?;
    }
    let mut report = Report::new("subscribe", records, bytes, elapsed, None);
    if args.vs_consume {
        let consume = ConsumeArgs {
            topic: args.topic.clone(),
            records: records / u64::from(args.subscriptions),
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

/// Reads one subscription through a push stream, acknowledging each record, until
/// `records` were read or `stop_at` passed; returns the records and value bytes read.
async fn read_all(
    subscriptions: &Subscriptions,
    name: &str,
    records: u64,
    credits: u32,
    stop_at: Option<Instant>,
    read: &AtomicU64,
) -> anyhow::Result<(u64, u64)> {
    let mut stream = subscriptions.stream(name, "", credits).await?;
    let (mut count, mut bytes) = (0u64, 0u64);
    while count < records && stop_at.is_none_or(|stop| Instant::now() < stop) {
        let Some(record) = stream.next_record().await? else {
            break;
        };
        bytes += record.value.as_ref().map_or(0, |v| v.len() as u64);
        stream.ack(record.partition, record.offset).await?;
        count += 1;
        read.fetch_add(1, Ordering::Relaxed);
    }
    stream.close().await?;
    Ok((count, bytes))
}
