//! `pubsub bench produce --kafka` and `pubsub bench consume --kafka`: the same
//! workloads as through gRPC, through the broker's Kafka listener instead, so the two
//! paths are measured with the same client machinery. Produce builds each batch
//! record by record (as a Kafka producer does) and keeps `max_in_flight` requests per
//! partition in flight on one connection per leader; consume sends Fetch to each
//! leader and decodes every record, as `bench consume` does.

mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use pubsub_client::{Acks, PartitionId, decode_fetched, now_ms};
use pubsub_storage::{BatchBuilder, ProducerStamp};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::consume::consumed;
use super::produce::{pattern, produced, progress_ticker};
use super::report::{Latency, Progress, Report, latency_histogram};
use super::{ConsumeArgs, ProduceArgs, ProducerArgs};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
/// Bytes a record adds to a batch beyond its value (length, attributes, deltas, key,
/// header count), to size batches like the SDK's producer.
const RECORD_OVERHEAD: usize = 8;

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Partitions grouped by the Kafka address of their leader.
async fn by_leader(bootstrap: &str, topic: &str) -> anyhow::Result<BTreeMap<String, Vec<i32>>> {
    let mut grouped: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (partition, address) in wire::leaders(bootstrap, topic).await? {
        grouped.entry(address).or_default().push(partition);
    }
    Ok(grouped)
}

/// Runs the produce benchmark through the Kafka listener at `bootstrap`.
pub async fn produce(
    args: &ProduceArgs,
    bootstrap: &str,
    show_progress: bool,
) -> anyhow::Result<Report> {
    let leaders = by_leader(bootstrap, &args.topic.topic).await?;
    let partitions: usize = leaders.values().map(Vec::len).sum();
    let acked = Arc::new(AtomicU64::new(0));
    let ticker = progress_ticker(
        acked.clone(),
        Progress::new(args.records, show_progress, "produce"),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (address, owned) in leaders {
        let share = args.records * owned.len() as u64 / partitions.max(1) as u64;
        let to = Target {
            address,
            topic: args.topic.topic.clone(),
            partitions: owned,
        };
        tasks.push(tokio::spawn(produce_to(
            to,
            args.producer.clone(),
            share,
            acked.clone(),
        )));
    }
    let (records, histogram) = produced(tasks).await?;
    let elapsed = start.elapsed();
    ticker.abort();
    let bytes = records * args.producer.record_size as u64;
    Ok(Report::new(
        "produce (kafka)",
        records,
        bytes,
        elapsed,
        Latency::of(&histogram),
    ))
}

/// One leader's partitions of a topic.
struct Target {
    address: String,
    topic: String,
    partitions: Vec<i32>,
}

fn acks_of(acks: Acks) -> i16 {
    match acks {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => -1,
    }
}

/// One batch of `count` records of `value`.
fn batch(
    builder: &mut BatchBuilder,
    value: &[u8],
    count: u64,
    args: &ProducerArgs,
) -> anyhow::Result<Bytes> {
    let now = now_ms();
    for _ in 0..count {
        builder.push(now, None, Some(value), &[]);
    }
    let built = builder.finish(args.compression, ProducerStamp::NONE, true)?;
    Ok(Bytes::from(built.context("an empty batch")?))
}

/// Produces `records` to one leader's partitions, round robin, a batch at a time.
async fn produce_to(
    to: Target,
    args: ProducerArgs,
    records: u64,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<(u64, hdrhistogram::Histogram<u64>)> {
    let (mut sender, mut receiver) = wire::connect(&to.address).await?;
    let acks = acks_of(args.acks);
    let in_flight = Arc::new(Semaphore::new(
        args.max_in_flight.max(1) * to.partitions.len(),
    ));
    let (sent_tx, mut sent_rx) =
        mpsc::unbounded_channel::<(Instant, u64, tokio::sync::OwnedSemaphorePermit)>();
    let reader = tokio::spawn(async move {
        let mut histogram = latency_histogram();
        let mut count = 0u64;
        while let Some((sent, records, permit)) = sent_rx.recv().await {
            if acks != 0 {
                let answer: ProduceResponse =
                    receiver.receive(ApiKey::Produce, PRODUCE_VERSION).await?;
                for p in answer.responses.iter().flat_map(|t| &t.partition_responses) {
                    if p.error_code != 0 {
                        bail!("partition {}: Kafka error {}", p.index, p.error_code);
                    }
                }
            }
            drop(permit);
            histogram.saturating_record_n(sent.elapsed().as_micros() as u64, records);
            count += records;
            acked.fetch_add(records, Ordering::Relaxed);
        }
        anyhow::Ok((count, histogram))
    });
    let value = pattern(args.record_size);
    let per_batch = (args.batch_bytes / (args.record_size + RECORD_OVERHEAD)).max(1) as u64;
    let mut builder = BatchBuilder::new();
    let mut left = records;
    for partition in to.partitions.iter().cycle() {
        if left == 0 {
            break;
        }
        let count = per_batch.min(left);
        left -= count;
        let permit = in_flight.clone().acquire_owned().await?;
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name(&to.topic))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(*partition)
                            .with_records(Some(batch(&mut builder, &value, count, &args)?)),
                    ]),
            ]);
        let sent = Instant::now();
        sender
            .send(ApiKey::Produce, PRODUCE_VERSION, &request)
            .await?;
        if sent_tx.send((sent, count, permit)).is_err() {
            break;
        }
    }
    drop(sent_tx);
    reader.await?
}

/// Runs the consume benchmark through the Kafka listener at `bootstrap`.
pub async fn consume(
    args: &ConsumeArgs,
    bootstrap: &str,
    show_progress: bool,
) -> anyhow::Result<Report> {
    let leaders = by_leader(bootstrap, &args.topic).await?;
    let read = Arc::new(AtomicU64::new(0));
    let ticker = progress_ticker(
        read.clone(),
        Progress::new(args.records, show_progress, "consume"),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (address, owned) in leaders {
        let from = Target {
            address,
            topic: args.topic.clone(),
            partitions: owned,
        };
        tasks.push(tokio::spawn(consume_from(
            from,
            args.fetch_bytes,
            args.records,
            read.clone(),
        )));
    }
    let (records, bytes) = consumed(tasks).await?;
    let elapsed = start.elapsed();
    ticker.abort();
    Ok(Report::new(
        "consume (kafka)",
        records,
        bytes,
        elapsed,
        None,
    ))
}

fn fetch_request(topic: &str, offsets: &BTreeMap<i32, u64>, fetch_bytes: u32) -> FetchRequest {
    let partitions = offsets
        .iter()
        .map(|(partition, offset)| {
            FetchPartition::default()
                .with_partition(*partition)
                .with_fetch_offset(*offset as i64)
                .with_partition_max_bytes(fetch_bytes as i32)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions),
        ])
}

/// Reads one leader's partitions from offset 0 until `goal` records are read in all
/// or its partitions are read to their ends.
async fn consume_from(
    from: Target,
    fetch_bytes: u32,
    goal: u64,
    read: Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64)> {
    let (mut sender, mut receiver) = wire::connect(&from.address).await?;
    let mut offsets: BTreeMap<i32, u64> = from.partitions.iter().map(|p| (*p, 0)).collect();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut decoded = Vec::new();
    while read.load(Ordering::Relaxed) < goal {
        sender
            .send(
                ApiKey::Fetch,
                FETCH_VERSION,
                &fetch_request(&from.topic, &offsets, fetch_bytes),
            )
            .await?;
        let answer: FetchResponse = receiver.receive(ApiKey::Fetch, FETCH_VERSION).await?;
        let mut behind = false;
        for p in answer.responses.iter().flat_map(|t| &t.partitions) {
            if p.error_code != 0 {
                bail!(
                    "partition {}: Kafka error {}",
                    p.partition_index,
                    p.error_code
                );
            }
            let offset = offsets.entry(p.partition_index).or_default();
            if let Some(fetched) = &p.records {
                decoded.clear();
                let next = decode_fetched(
                    PartitionId(p.partition_index as u32),
                    fetched,
                    *offset,
                    &mut decoded,
                )
                .map_err(|e| anyhow::anyhow!("partition {}: {}", p.partition_index, e.reason))?;
                *offset = next;
                records += decoded.len() as u64;
                bytes += decoded
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum::<u64>();
                read.fetch_add(decoded.len() as u64, Ordering::Relaxed);
            }
            behind |= (*offset as i64) < p.high_watermark;
        }
        if !behind {
            break;
        }
    }
    Ok((records, bytes))
}
