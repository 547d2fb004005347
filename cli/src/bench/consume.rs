//! `pubsub bench consume`: K consumers read the topic from the beginning through the
//! Fetch path, partitions divided among them, decoding every record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pubsub_client::{Client, Consumer, ConsumerConfig, PartitionId, StartPosition};
use tokio::time::Instant;

use super::ConsumeArgs;
use super::produce::progress_ticker;
use super::report::{Progress, Report};

/// Runs the consume benchmark.
pub async fn run(
    client: &Client,
    args: ConsumeArgs,
    show_progress: bool,
) -> anyhow::Result<Report> {
    let probe = Consumer::new(client.clone(), &args.topic, ConsumerConfig::default());
    let partitions = probe.partition_count().await?;
    let consumers = args.consumers.clamp(1, partitions.max(1));
    let read = Arc::new(AtomicU64::new(0));
    let progress = Progress::new(args.records, show_progress, "consume");
    let ticker = progress_ticker(read.clone(), progress);
    let config = ConsumerConfig {
        fetch_max_bytes: args.fetch_bytes,
        ..ConsumerConfig::default()
    };
    let mut members = Vec::new();
    for index in 0..consumers {
        let mut consumer = Consumer::new(client.clone(), &args.topic, config.clone());
        for partition in (index..partitions).step_by(consumers as usize) {
            consumer
                .assign(PartitionId(partition), StartPosition::Earliest)
                .await?;
        }
        members.push(consumer);
    }
    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + d);
    let goal = args.records;
    let mut tasks = Vec::new();
    for mut consumer in members {
        let read = read.clone();
        tasks.push(tokio::spawn(async move {
            let (mut records, mut bytes) = (0u64, 0u64);
            while read.load(Ordering::Relaxed) < goal
                && stop_at.is_none_or(|stop| Instant::now() < stop)
            {
                let batch = consumer.poll(Duration::from_millis(500)).await?;
                if batch.is_empty() && consumer.lag() == 0 {
                    break;
                }
                records += batch.len() as u64;
                bytes += batch
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum::<u64>();
                read.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok((records, bytes))
        }));
    }
    let (records, bytes) = consumed(tasks).await?;
    let elapsed = start.elapsed();
    ticker.abort();
    Ok(Report::new("consume", records, bytes, elapsed, None))
}

/// What consuming tasks read: records and value bytes.
pub async fn consumed(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<(u64, u64)>>>,
) -> anyhow::Result<(u64, u64)> {
    let (mut records, mut bytes) = (0, 0);
    for task in tasks {
        let (r, b) = task.await??;
        records += r;
        bytes += b;
    }
    Ok((records, bytes))
}
