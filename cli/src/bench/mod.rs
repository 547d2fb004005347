//! `pubsub bench`: produce, consume and end-to-end latency benchmarks through the
//! client SDK, with HDR-histogram latencies and machine-readable output.
//!
//! Figures are printed, never asserted: the README records them with the command
//! that produced them.

mod consume;
mod e2e;
mod kafka;
mod produce;
mod report;
mod subscribe;

use std::time::Duration;

use clap::{Args, Subcommand};
use pubsub_client::{Acks, Admin, Client, Compression, NewTopic};

pub use report::Report;

/// `pubsub bench ...`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[command(subcommand)]
    pub kind: BenchKind,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// Produce records as fast as possible (or at --rate) and report throughput and
    /// send-to-acknowledgement latency.
    Produce(ProduceArgs),
    /// Read records from the beginning of a topic and report throughput.
    Consume(ConsumeArgs),
    /// Produce at a steady rate while consuming, and report produce-to-consume latency.
    E2e(E2eArgs),
    /// Read a topic through a new subscription (push stream, every record acked) and
    /// report throughput through the consumer manager.
    Subscribe(SubscribeArgs),
}

/// Topic options shared by the benchmarks that write.
#[derive(Debug, Args, Clone)]
pub struct TopicArgs {
    /// Topic to use.
    #[arg(long)]
    pub topic: String,
    /// Create the topic first (deleting an existing one of the same name).
    #[arg(long)]
    pub create: bool,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor of a created topic.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    /// Fsync policy of a created topic: always, never or interval:<ms>.
    #[arg(long)]
    pub fsync: Option<String>,
}

/// Producer options shared by the benchmarks that write.
#[derive(Debug, Args, Clone)]
pub struct ProducerArgs {
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Batch size limit in bytes (before compression).
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_bytes: usize,
    /// How long a batch may wait to fill, in ms (the SDK's default, 0: closed within
    /// a millisecond).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Acknowledgement level: none, leader or all.
    #[arg(long, default_value = "leader")]
    pub acks: Acks,
    /// Batch compression: none, gzip, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: Compression,
    /// Batches in flight per partition.
    #[arg(long, default_value_t = 4)]
    pub max_in_flight: usize,
}

/// `pubsub bench produce`
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Records to produce in all.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Concurrent producers (each its own producer instance).
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Target rate in records per second across producers; unlimited if unset.
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this long even if fewer records were sent (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Produce through the Kafka listener at this address instead of gRPC (the topic
    /// is still created over gRPC; --producers, --rate and --duration do not apply).
    #[arg(long, value_name = "ADDR")]
    kafka: Option<String>,
}

/// `pubsub bench consume`
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read from the beginning.
    #[arg(long)]
    topic: String,
    /// Records to read in all.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Concurrent consumers; partitions are divided among them.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Bytes per partition per fetch.
    #[arg(long, default_value_t = FETCH_BYTES)]
    fetch_bytes: u32,
    /// Stop after this long even if fewer records were read.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Read through the Kafka listener at this address instead of gRPC (one
    /// connection per leader; --consumers and --duration do not apply).
    #[arg(long, value_name = "ADDR")]
    kafka: Option<String>,
}

/// Bytes per partition per fetch of `bench consume` (and of the consume run of
/// `bench subscribe --vs-consume`): the broker's largest fetch per partition.
const FETCH_BYTES: u32 = 4 << 20;

/// `pubsub bench subscribe`
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Topic to read from the beginning.
    #[arg(long)]
    topic: String,
    /// Records to read and acknowledge (each subscription).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Unacknowledged records the server may send ahead (each subscription).
    #[arg(long, default_value_t = 10_000)]
    credits: u32,
    /// Subscriptions reading the topic at once, each everything (fan-out); the
    /// report is their total over the wall time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    subscriptions: u32,
    /// Leave the subscriptions in place at the end (with `--records 0`, what idle
    /// subscriptions cost the server can then be read off it).
    #[arg(long)]
    keep: bool,
    /// Then read the same records with `bench consume` and report the ratio of the
    /// two throughputs (what per-record leases and acks cost).
    #[arg(long)]
    vs_consume: bool,
    /// Stop after this long even if fewer records were read.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Ask for each record in a message of its own (as clients that predate batched
    /// streams get them), to compare with the default.
    #[arg(long)]
    one_record_per_message: bool,
}

/// `pubsub bench e2e`
#[derive(Debug, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Records to produce and consume.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Produce rate in records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
}

/// Runs a benchmark against `client` and returns its report.
pub async fn run(client: &Client, args: BenchArgs, show_progress: bool) -> anyhow::Result<Report> {
    match args.kind {
        BenchKind::Produce(args) => match args.kafka.clone() {
            Some(kafka) => {
                prepare_topic(client, &args.topic).await?;
                kafka::produce(&args, &kafka, show_progress).await
            }
            None => produce::run(client, args, show_progress).await,
        },
        BenchKind::Consume(args) => match args.kafka.clone() {
            Some(kafka) => kafka::consume(&args, &kafka, show_progress).await,
            None => consume::run(client, args, show_progress).await,
        },
        BenchKind::E2e(args) => e2e::run(client, args, show_progress).await,
        BenchKind::Subscribe(args) => subscribe::run(client, args, show_progress).await,
    }
}

/// Creates the topic if asked (replacing one of the same name).
async fn prepare_topic(client: &Client, topic: &TopicArgs) -> anyhow::Result<()> {
    if !topic.create {
        return Ok(());
    }
    let admin = Admin::new(client.clone());
    match admin.delete_topic(&topic.topic).await {
        Ok(()) => {}
        Err(pubsub_client::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let config = pubsub_client::TopicConfig {
        fsync: topic.fsync.clone(),
        ..Default::default()
    };
    admin
        .create_topic(NewTopic {
            name: topic.topic.clone(),
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            config,
        })
        .await?;
    Ok(())
}

fn producer_config(args: &ProducerArgs) -> pubsub_client::ProducerConfig {
    pubsub_client::ProducerConfig {
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression,
        acks: args.acks,
        max_in_flight: args.max_in_flight,
        ..pubsub_client::ProducerConfig::default()
    }
}
