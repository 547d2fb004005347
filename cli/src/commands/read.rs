//! `read` (alias `consume`): prints a topic's records, from the beginning by default,
//! until the end seen at start, or for ever with `--follow`.
//!
//! Each partition gets its own reader task with its own Consumer, feeding one bounded
//! channel that the printer drains. A Consumer polling several partitions waits for
//! the slowest fetch of each round, so one idle partition would hold back a busy one
//! by a whole long poll; separate tasks print each partition's records as soon as they
//! arrive. Records of one partition keep their order; partitions interleave in the
//! order their fetches complete.

use std::io::{BufWriter, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use clap::Args;
use pubsub_client::{
    Admin, Client, Consumer, ConsumerConfig, ConsumerRecord, PartitionId, StartPosition,
};
use pubsub_proto::v1::TopicDescription;
use tokio::sync::mpsc;

use super::output::OutputFormat;
use super::record;
use super::topic::plural;
use super::{GlobalArgs, connect};

/// Long poll while following: new records show up at once, an idle partition costs
/// one request per second.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// Poll wait while catching up to the end seen at start. Data below that end is
/// already there, so this only matters if the server is slow to return it.
const CATCH_UP_WAIT: Duration = Duration::from_millis(500);

/// Bytes fetched per partition per poll: large enough for throughput, small enough
/// that `READ_BATCHES_QUEUED` of them stay modest in memory.
const FETCH_BYTES: u32 = 1 << 20;

/// Fetched record lists waiting to be printed; bounds memory at about this many times
/// `FETCH_BYTES` when stdout is slower than the server.
const READ_BATCHES_QUEUED: usize = 16;

/// Stdout buffer; flushed after each fetched batch so `--follow` output is prompt.
const STDOUT_BUFFER_BYTES: usize = 64 << 10;

/// Arguments of `read`.
#[derive(Args)]
pub struct ReadArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition [default: every partition].
    #[arg(long, short = 'p', value_name = "P")]
    pub partition: Option<u32>,
    /// Where to start.
    #[command(flatten)]
    pub start: StartArgs,
    /// Stop after printing N records.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Keep waiting for new records until --count is reached or Ctrl-C, instead of
    /// stopping at the end each partition had when the command started.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// text: each value's raw bytes on its own line. json: one object per record with
    /// partition, offset, timestamp, key, value and headers (non-UTF-8 bytes as base64).
    /// [default: the --output format]
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

/// The start position flags; at most one may be given. Without any, reading starts
/// at the beginning of each partition.
#[derive(Args)]
#[group(multiple = false)]
pub struct StartArgs {
    /// Start at this offset (needs --partition).
    #[arg(long, value_name = "N", requires = "partition")]
    pub offset: Option<u64>,
    /// Start at the first stored record of each partition (the default).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start after the last record, reading only new ones (useful with --follow).
    #[arg(long)]
    pub from_end: bool,
    /// Start at the first record at or after TIME: RFC 3339 (2024-05-01T12:00:00Z) or a
    /// duration ago (10m, 2h 30m).
    #[arg(long, value_name = "TIME", value_parser = parse_from_time_now)]
    pub from_time: Option<i64>,
}

/// What one reader task reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionPlan {
    partition: u32,
    start: StartPosition,
    /// Stop before this offset; `None` follows for ever.
    end: Option<u64>,
}

/// What reader tasks send the printer.
type Fetched = anyhow::Result<Vec<ConsumerRecord>>;

/// Runs `read`.
pub async fn run(global: &GlobalArgs, args: ReadArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(global.output);
    let client = connect(global).await?;
    let described = Admin::new(client.clone())
        .describe_topic(&args.topic)
        .await?;
    let Some(topic) = described.topic else {
        bail!(
            "the server described topic {:?} without its details",
            args.topic
        );
    };
    let mut topic = topic;
    leader_offsets(&client, &mut topic).await?;
    let plans = plan(&topic, &args)?;
    if args.count == Some(0) {
        return Ok(());
    }
    let (sender, mut receiver) = mpsc::channel(READ_BATCHES_QUEUED);
    for plan in plans {
        let reader = read_partition(client.clone(), args.topic.clone(), plan, sender.clone());
        tokio::spawn(reader);
    }
    // The channel closes once every reader is done and this copy is gone.
    drop(sender);
    print_records(&mut receiver, format, args.count, args.follow).await
}

/// Replaces each partition's offsets by its leader's. The describing broker reports
/// its own replica's, and a follower's high watermark lags the leader's: stopping
/// there would miss records already acknowledged with acks=all.
async fn leader_offsets(client: &Client, topic: &mut TopicDescription) -> anyhow::Result<()> {
    let consumer = Consumer::new(client.clone(), &topic.name, Default::default());
    let lookups = topic.partitions.iter().map(|partition| {
        let consumer = &consumer;
        let index = PartitionId(partition.partition);
        async move {
            let start = consumer.offset_of(index, StartPosition::Earliest).await?;
            let end = consumer.offset_of(index, StartPosition::Latest).await?;
            Ok::<_, pubsub_client::Error>((start, end))
        }
    });
    let offsets = futures::future::try_join_all(lookups).await?;
    for (partition, (start, end)) in topic.partitions.iter_mut().zip(offsets) {
        partition.log_start_offset = Some(start);
        partition.high_watermark = Some(end);
    }
    Ok(())
}

/// Chooses the partitions, each one's start and, without `--follow`, its end.
fn plan(topic: &TopicDescription, args: &ReadArgs) -> anyhow::Result<Vec<PartitionPlan>> {
    let chosen: Vec<_> = match args.partition {
        None => topic.partitions.iter().collect(),
        Some(p) => match topic.partitions.iter().find(|d| d.partition == p) {
            Some(description) => vec![description],
            None => {
                let n = topic.partitions.len();
                bail!(
                    "partition {p} does not exist: topic {:?} has {n} partition{}",
                    topic.name,
                    plural(n)
                );
            }
        },
    };
    let mut plans = Vec::with_capacity(chosen.len());
    for description in chosen {
        let start = if let Some(offset) = args.start.offset {
            let first = description.log_start_offset.unwrap_or(0);
            let end = description.high_watermark.unwrap_or(0);
            if offset < first || offset > end {
                bail!(
                    "offset {offset} is out of range for partition {}: valid offsets are {first}..={end}",
                    description.partition
                );
            }
            StartPosition::Offset(offset)
        } else if args.start.from_end {
            StartPosition::Latest
        } else if let Some(ms) = args.start.from_time {
            StartPosition::Timestamp(ms)
        } else {
            StartPosition::Earliest
        };
        plans.push(PartitionPlan {
            partition: description.partition,
            start,
            end: (!args.follow).then_some(description.high_watermark.unwrap_or(0)),
        });
    }
    Ok(plans)
}

/// Reads one partition into `records` until its plan's end; sends its error, if any.
async fn read_partition(
    client: Client,
    topic: String,
    plan: PartitionPlan,
    records: mpsc::Sender<Fetched>,
) {
    if let Err(e) = read_partition_until_end(client, &topic, plan, &records).await {
        let hint = match &e {
            pubsub_client::Error::Undecodable {
                next_offset: Some(next),
                ..
            } => format!(
                "; to read past it: pubsub read {topic} --partition {} --offset {next}",
                plan.partition
            ),
            _ => String::new(),
        };
        let error = anyhow!("cannot read partition {}: {e}{hint}", plan.partition);
        let _ = records.send(Err(error)).await;
    }
}

async fn read_partition_until_end(
    client: Client,
    topic: &str,
    plan: PartitionPlan,
    records: &mpsc::Sender<Fetched>,
) -> pubsub_client::Result<()> {
    let config = ConsumerConfig {
        fetch_max_bytes: FETCH_BYTES,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, topic, config);
    consumer
        .assign(PartitionId(plan.partition), plan.start)
        .await?;
    let wait = match plan.end {
        Some(_) => CATCH_UP_WAIT,
        None => FOLLOW_WAIT,
    };
    loop {
        let position = consumer
            .positions()
            .first()
            .map_or(0, |&(_, offset)| offset);
        if plan.end.is_some_and(|end| position >= end) {
            return Ok(());
        }
        let mut fetched = consumer.poll(wait).await?;
        if let Some(end) = plan.end {
            fetched.retain(|r| r.offset < end);
        }
        if !fetched.is_empty() && records.send(Ok(fetched)).await.is_err() {
            // The printer has stopped (--count reached).
            return Ok(());
        }
    }
}

/// Prints records as they arrive until the readers finish, `count` records are out,
/// or (with `follow`) Ctrl-C.
async fn print_records(
    records: &mut mpsc::Receiver<Fetched>,
    format: OutputFormat,
    count: Option<u64>,
    follow: bool,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(STDOUT_BUFFER_BYTES, std::io::stdout());
    let interrupted = async {
        // Without --follow, Ctrl-C keeps its default meaning: stop at once.
        if !follow || tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupted);
    let mut printed = 0u64;
    loop {
        let fetched = tokio::select! {
            fetched = records.recv() => fetched,
            () = &mut interrupted => break,
        };
        let Some(fetched) = fetched else { break };
        for record in &fetched? {
            match format {
                OutputFormat::Text => record::write_text(&mut out, record)?,
                OutputFormat::Json => record::write_json(&mut out, record)?,
            }
            printed += 1;
            if count.is_some_and(|count| printed >= count) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}

/// `--from-time` against the current clock.
pub fn parse_from_time_now(text: &str) -> anyhow::Result<i64> {
    parse_from_time(text, SystemTime::now())
}

/// Parses an RFC 3339 time, or a duration meaning that long before `now`; returns ms
/// since the epoch.
fn parse_from_time(text: &str, now: SystemTime) -> anyhow::Result<i64> {
    let text = text.trim();
    let time = match humantime::parse_rfc3339_weak(text) {
        Ok(time) => time,
        Err(_) => {
            let ago = humantime::parse_duration(text).map_err(|_| {
                anyhow::anyhow!(
                    "invalid time {text:?}: expected RFC 3339 (2024-05-01T12:00:00Z) or a duration ago (10m, 2h)"
                )
            })?;
            now.checked_sub(ago)
                .ok_or_else(|| anyhow::anyhow!("{text:?} ago is before the clock's range"))?
        }
    };
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("time {text:?} is before 1970"))?;
    i64::try_from(since_epoch.as_millis())
        .map_err(|_| anyhow::anyhow!("time {text:?} is too far ahead"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use pubsub_proto::v1::PartitionDescription;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        read: ReadArgs,
    }

    fn args(line: &[&str]) -> ReadArgs {
        let argv = std::iter::once("read").chain(line.iter().copied());
        Harness::try_parse_from(argv).unwrap().read
    }

    fn topic() -> TopicDescription {
        let partition = |partition, log_start_offset, high_watermark| PartitionDescription {
            partition,
            log_start_offset,
            high_watermark,
            log_end_offset: high_watermark,
            ..PartitionDescription::default()
        };
        TopicDescription {
            name: "t".into(),
            partitions: vec![
                partition(0, Some(0), Some(10)),
                partition(1, Some(5), Some(7)),
            ],
            ..TopicDescription::default()
        }
    }

    #[test]
    fn default_reads_every_partition_from_the_beginning_to_its_end() {
        let plans = plan(&topic(), &args(&["t"])).unwrap();
        let expected = [(0, 10), (1, 7)].map(|(partition, end)| PartitionPlan {
            partition,
            start: StartPosition::Earliest,
            end: Some(end),
        });
        assert_eq!(plans, expected);
    }

    #[test]
    fn follow_has_no_end() {
        let plans = plan(&topic(), &args(&["t", "--follow", "--from-end"])).unwrap();
        assert!(
            plans
                .iter()
                .all(|p| p.end.is_none() && p.start == StartPosition::Latest)
        );
    }

    #[test]
    fn offset_must_lie_in_the_partition() {
        let plans = plan(&topic(), &args(&["t", "-p", "1", "--offset", "7"])).unwrap();
        assert_eq!(plans[0].start, StartPosition::Offset(7));
        let beyond = plan(&topic(), &args(&["t", "-p", "1", "--offset", "8"])).unwrap_err();
        assert_eq!(
            beyond.to_string(),
            "offset 8 is out of range for partition 1: valid offsets are 5..=7"
        );
        assert!(plan(&topic(), &args(&["t", "-p", "1", "--offset", "4"])).is_err());
        let missing = plan(&topic(), &args(&["t", "-p", "2"])).unwrap_err();
        assert!(
            missing.to_string().contains("has 2 partitions"),
            "{missing}"
        );
    }

    #[test]
    fn start_flags_exclude_each_other_and_offset_needs_a_partition() {
        let parse = |line: &[&str]| {
            Harness::try_parse_from(std::iter::once("read").chain(line.iter().copied())).is_ok()
        };
        assert!(!parse(&["t", "--offset", "3"]));
        assert!(!parse(&["t", "--from-beginning", "--from-end"]));
        assert!(!parse(&[
            "t",
            "-p",
            "0",
            "--offset",
            "3",
            "--from-time",
            "1h"
        ]));
        assert!(parse(&["t", "--from-time", "2024-05-01T12:00:00Z"]));
    }

    #[test]
    fn from_time_takes_rfc3339_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_from_time("2024-05-01T12:00:00Z", now).unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_from_time("2024-05-01 12:00:00", now).unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_from_time("10m", now).unwrap(),
            1_000_000_000 - 600_000
        );
        assert_eq!(
            parse_from_time("1h 30m", now).unwrap(),
            1_000_000_000 - 5_400_000
        );
        assert!(
            parse_from_time("yesterday", now)
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
        assert!(
            parse_from_time("100000h", now)
                .unwrap_err()
                .to_string()
                .contains("before 1970")
        );
    }
}
