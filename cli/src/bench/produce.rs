//! `pubsub bench produce`: K producers send fixed-size records as fast as allowed;
//! each record's send-to-acknowledgement latency goes into an HDR histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use pubsub_client::{Client, Delivery, Producer, ProducerRecord};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::report::{Latency, Progress, Report, latency_histogram};
use super::{ProduceArgs, prepare_topic, producer_config};

/// Deliveries awaited per producer at once: bounds memory, keeps batches flowing.
const OUTSTANDING_RECORDS: usize = 200_000;

/// Runs the produce benchmark.
pub async fn run(
    client: &Client,
    args: ProduceArgs,
    show_progress: bool,
) -> anyhow::Result<Report> {
    prepare_topic(client, &args.topic).await?;
    let producers = args.producers.max(1);
    let acked = Arc::new(AtomicU64::new(0));
    let progress = Progress::new(args.records, show_progress, "produce");
    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + d);
    let mut tasks = Vec::new();
    for index in 0..producers {
        let share = args.records / u64::from(producers)
            + u64::from(u64::from(index) < args.records % u64::from(producers));
        let rate = args.rate.map(|r| (r / u64::from(producers)).max(1));
        let producer = Producer::new(
            client.clone(),
            &args.topic.topic,
            producer_config(&args.producer),
        )
        .await?;
        let value = Bytes::from(pattern(args.producer.record_size));
        tasks.push(tokio::spawn(produce_share(
            producer,
            value,
            share,
            rate,
            stop_at,
            acked.clone(),
        )));
    }
    let ticker = progress_ticker(acked.clone(), progress);
    let (records, histogram) = produced(tasks).await?;
    let elapsed = start.elapsed();
    ticker.abort();
    let bytes = records * args.producer.record_size as u64;
    Ok(Report::new(
        "produce",
        records,
        bytes,
        elapsed,
        Latency::of(&histogram),
    ))
}

/// What one producing task sent: records acknowledged and their latencies.
pub type Produced = (u64, hdrhistogram::Histogram<u64>);

/// What producing tasks sent, together.
pub async fn produced(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Produced>>>,
) -> anyhow::Result<Produced> {
    let mut histogram = latency_histogram();
    let mut records = 0;
    for task in tasks {
        let (sent, part) = task.await??;
        records += sent;
        histogram.add(part)?;
    }
    Ok((records, histogram))
}

/// Value bytes that are not all one byte, so compression has some work to do.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[(i * 7 + i / 36) % 36])
        .collect()
}

async fn produce_share(
    producer: Producer,
    value: Bytes,
    records: u64,
    rate: Option<u64>,
    stop_at: Option<Instant>,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<(u64, hdrhistogram::Histogram<u64>)> {
    let (deliveries, mut pending) = mpsc::channel::<(Instant, Delivery)>(OUTSTANDING_RECORDS);
    let drain = tokio::spawn(async move {
        let mut histogram = latency_histogram();
        let mut count = 0u64;
        while let Some((sent, delivery)) = pending.recv().await {
            delivery.wait().await?;
            histogram.saturating_record(sent.elapsed().as_micros() as u64);
            count += 1;
            if count.is_multiple_of(1024) {
                acked.fetch_add(1024, Ordering::Relaxed);
            }
        }
        acked.fetch_add(count % 1024, Ordering::Relaxed);
        anyhow::Ok((count, histogram))
    });
    let start = Instant::now();
    for i in 0..records {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        if stop_at.is_some_and(|stop| i.is_multiple_of(1024) && Instant::now() >= stop) {
            break;
        }
        let sent = Instant::now();
        let delivery = producer
            .send(ProducerRecord {
                value: Some(value.clone()),
                ..ProducerRecord::default()
            })
            .await?;
        if deliveries.send((sent, delivery)).await.is_err() {
            break;
        }
    }
    producer.flush().await?;
    drop(deliveries);
    drain.await?
}

/// Redraws the progress bar from a shared counter until aborted.
pub fn progress_ticker(counter: Arc<AtomicU64>, progress: Progress) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _finish = FinishOnDrop(&progress);
        loop {
            progress.set(counter.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

struct FinishOnDrop<'a>(&'a Progress);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}
