//! `pubsub bench e2e`: produce at a steady rate while a consumer follows the topic;
//! each record carries its send time, and the consumer records send-to-receive latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use pubsub_client::{Client, Consumer, ConsumerConfig, Producer, ProducerRecord, StartPosition};
use tokio::time::Instant;

use super::produce::{pattern, progress_ticker};
use super::report::{Latency, Progress, Report, latency_histogram};
use super::{E2eArgs, prepare_topic, producer_config};

/// Runs the end-to-end latency benchmark.
pub async fn run(client: &Client, args: E2eArgs, show_progress: bool) -> anyhow::Result<Report> {
    prepare_topic(client, &args.topic).await?;
    let size = args.producer.record_size.max(8);
    let mut consumer = Consumer::new(client.clone(), &args.topic.topic, ConsumerConfig::default());
    consumer.assign_all(StartPosition::Latest).await?;
    let producer = Producer::new(
        client.clone(),
        &args.topic.topic,
        producer_config(&args.producer),
    )
    .await?;
    // Send times are nanoseconds since this instant, shared by producer and consumer.
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let progress = Progress::new(args.records, show_progress, "e2e");
    let ticker = progress_ticker(received.clone(), progress);
    let goal = args.records;
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut histogram = latency_histogram();
            let mut count = 0;
            while count < goal {
                for record in consumer.poll(Duration::from_secs(1)).await? {
                    let Some(value) = record.value.as_ref().filter(|v| v.len() >= 8) else {
                        continue;
                    };
                    let mut stamp = [0u8; 8];
                    stamp.copy_from_slice(&value[..8]);
                    let sent = Duration::from_nanos(u64::from_be_bytes(stamp));
                    let latency = epoch.elapsed().saturating_sub(sent);
                    histogram.saturating_record(latency.as_micros() as u64);
                    count += 1;
                }
                received.store(count, Ordering::Relaxed);
            }
            anyhow::Ok(histogram)
        })
    };
    let filler = pattern(size - 8);
    let start = Instant::now();
    for i in 0..args.records {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate.max(1) as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let mut value = Vec::with_capacity(size);
        value.extend_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        value.extend_from_slice(&filler);
        // Deliveries are not awaited one by one: latency is measured at the consumer.
        drop(
            producer
                .send(ProducerRecord {
                    value: Some(Bytes::from(value)),
                    ..ProducerRecord::default()
                })
                .await?,
        );
    }
    producer.flush().await?;
    let histogram = tokio::time::timeout(Duration::from_secs(60), reader).await??;
    let histogram = histogram?;
    let elapsed = start.elapsed();
    ticker.abort();
    Ok(Report::new(
        "e2e",
        args.records,
        args.records * size as u64,
        elapsed,
        Latency::of(&histogram),
    ))
}
