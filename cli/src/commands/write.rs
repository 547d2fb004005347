//! `write` (alias `produce`): records from arguments or stdin lines, sent through the
//! batching Producer.
//!
//! Records are sent without waiting for each one's acknowledgement, so batches fill
//! and several stay in flight. The Delivery handles wait in a bounded queue, oldest
//! first: when it is full the oldest is awaited, so memory stays bounded however long
//! stdin is, and a failure is seen within `PENDING_DELIVERIES_MAX` records of it.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, Read};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};
use pubsub_client::{
    Acks, Compression, Delivery, PartitionId, Producer, ProducerConfig, ProducerRecord,
};
use tokio::sync::mpsc;

use super::output;
use super::topic::plural;
use super::{GlobalArgs, connect};

/// Deliveries awaited at most at once: the Producer's default queue of 65,536 records,
/// so the producer, not this queue, is what makes `send` wait.
const PENDING_DELIVERIES_MAX: usize = 65_536;

/// Stdin lines read ahead of the producer: enough to hide the reader thread's hops.
const STDIN_LINES_QUEUED: usize = 1_024;

/// Longest stdin line accepted (64 MiB, the largest gRPC message): a file without
/// newlines must not be read into memory whole.
const LINE_BYTES_MAX: u64 = 64 << 20;

/// Arguments of `write`.
#[derive(Args)]
pub struct WriteArgs {
    /// Topic to write to.
    pub topic: String,
    /// Values to write, one record each. Without any, each line of stdin is one record
    /// (the trailing newline removed; empty lines are records too).
    pub values: Vec<String>,
    /// Key of every record. Records with the same key go to the same partition, in order.
    #[arg(long, short = 'k', conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Split each line at the first SEP into key and value ("user-1:hello" with ':').
    /// A line without SEP is an error.
    #[arg(long, value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
    /// A header on every record, repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, Bytes)>,
    /// Partition to write to [default: by key hash, or spread when there is no key].
    #[arg(long, short = 'p', value_name = "P")]
    pub partition: Option<u32>,
    /// Replicas that must have a record before it counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    pub acks: AcksArg,
    /// Codec for record batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
}

/// `--acks` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AcksArg {
    /// Do not wait for the server.
    None,
    /// The partition leader has stored it.
    Leader,
    /// Every in-sync replica has it.
    All,
}

/// `--compression` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
    /// No compression.
    None,
    /// Gzip.
    Gzip,
    /// LZ4 frames.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Acks {
        match acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

impl From<CompressionArg> for Compression {
    fn from(compression: CompressionArg) -> Compression {
        match compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Runs `write`.
pub async fn run(global: &GlobalArgs, args: WriteArgs) -> anyhow::Result<()> {
    let shape = RecordShape {
        key: args.key.map(Bytes::from),
        key_separator: args.key_separator.map(String::into_bytes),
        headers: args.headers,
        partition: args.partition,
    };
    let config = ProducerConfig {
        acks: args.acks.into(),
        compression: args.compression.into(),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(connect(global).await?, &args.topic, config).await?;
    if let Some(p) = args.partition
        && p >= producer.partitions()
    {
        bail!(
            "partition {p} does not exist: topic {:?} has {} partition{}",
            args.topic,
            producer.partitions(),
            plural(producer.partitions() as usize)
        );
    }
    let total = (!args.values.is_empty()).then_some(args.values.len() as u64);
    let mut writer = Writer {
        producer,
        pending: VecDeque::new(),
        sent: 0,
        written: 0,
        progress: progress_bar(global.quiet, total),
    };
    let input = if args.values.is_empty() {
        write_stdin(&shape, &mut writer).await
    } else {
        write_values(&shape, &mut writer, args.values).await
    };
    let finished = writer.finish().await;
    writer.progress.finish_and_clear();
    match (input, finished) {
        (Err(e), _) if writer.written > 0 => {
            let n = writer.written;
            bail!("{e:#} ({n} earlier record{} written)", plural(n as usize))
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) => {
            if !global.quiet {
                let n = writer.written;
                eprintln!("wrote {n} record{}", plural(n as usize));
            }
            Ok(())
        }
    }
}

async fn write_values(
    shape: &RecordShape,
    writer: &mut Writer,
    values: Vec<String>,
) -> anyhow::Result<()> {
    for (i, value) in values.into_iter().enumerate() {
        let Some(record) = shape.record(Bytes::from(value)) else {
            bail!(
                "value {} has no key separator {}",
                i + 1,
                shape.separator_text()
            );
        };
        writer.send(record).await?;
    }
    Ok(())
}

async fn write_stdin(shape: &RecordShape, writer: &mut Writer) -> anyhow::Result<()> {
    let mut lines = spawn_stdin_reader();
    let mut number = 0u64;
    while let Some(line) = lines.recv().await {
        number += 1;
        let line = line.map_err(|e| anyhow!("cannot read line {number} of stdin: {e}"))?;
        let Some(record) = shape.record(Bytes::from(line)) else {
            bail!(
                "line {number} has no key separator {}",
                shape.separator_text()
            );
        };
        writer.send(record).await?;
    }
    Ok(())
}

/// Reads stdin on its own thread (std's reads block) and hands over lines without
/// their trailing `\n` or `\r\n`. A thread rather than tokio's stdin so that an early
/// exit never waits for a read the user has not typed yet.
fn spawn_stdin_reader() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (lines, receiver) = mpsc::channel(STDIN_LINES_QUEUED);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let read = stdin
                .by_ref()
                .take(LINE_BYTES_MAX + 1)
                .read_until(b'\n', &mut line);
            let line = match read {
                Ok(0) => return,
                Ok(_) if line.len() as u64 > LINE_BYTES_MAX => Err(std::io::Error::other(format!(
                    "the line is longer than {} MiB",
                    LINE_BYTES_MAX >> 20
                ))),
                Ok(_) => Ok(strip_newline(line)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = line.is_err();
            if lines.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

fn strip_newline(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

/// What every record gets from the flags: key or key separator, headers, partition.
struct RecordShape {
    key: Option<Bytes>,
    key_separator: Option<Vec<u8>>,
    headers: Vec<(String, Bytes)>,
    partition: Option<u32>,
}

impl RecordShape {
    /// The record for one input; `None` if a key separator is set and missing.
    fn record(&self, input: Bytes) -> Option<ProducerRecord> {
        let (key, value) = match &self.key_separator {
            None => (self.key.clone(), input),
            Some(separator) => {
                let at = input
                    .windows(separator.len())
                    .position(|w| w == separator.as_slice())?;
                (Some(input.slice(..at)), input.slice(at + separator.len()..))
            }
        };
        Some(ProducerRecord {
            key,
            value: Some(value),
            headers: self.headers.clone(),
            partition: self.partition.map(PartitionId),
            timestamp: None,
        })
    }

    fn separator_text(&self) -> String {
        let separator = self.key_separator.as_deref().unwrap_or_default();
        format!("{:?}", String::from_utf8_lossy(separator))
    }
}

/// Sends records and settles their deliveries in order.
struct Writer {
    producer: Producer,
    pending: VecDeque<(u64, Delivery)>,
    sent: u64,
    written: u64,
    progress: ProgressBar,
}

impl Writer {
    async fn send(&mut self, record: ProducerRecord) -> anyhow::Result<()> {
        if self.pending.len() >= PENDING_DELIVERIES_MAX {
            self.settle_oldest().await?;
        }
        let delivery = self.producer.send(record).await?;
        self.sent += 1;
        self.pending.push_back((self.sent, delivery));
        self.progress.inc(1);
        Ok(())
    }

    /// Waits for the oldest outstanding record's acknowledgement.
    async fn settle_oldest(&mut self) -> anyhow::Result<()> {
        if let Some((number, delivery)) = self.pending.pop_front() {
            delivery
                .wait()
                .await
                .map_err(|e| anyhow!("cannot write record {number}: {e}"))?;
            self.written += 1;
        }
        Ok(())
    }

    /// Sends what the producer still holds and waits for every outstanding record.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.producer.flush().await?;
        while !self.pending.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }
}

/// A progress bar on stderr, or a hidden one when stderr is not a styled terminal or
/// the user asked for quiet.
fn progress_bar(quiet: bool, total: Option<u64>) -> ProgressBar {
    if quiet || !output::stderr_is_styled() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:30} {human_pos}/{human_len} records ({rate})",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {human_pos} records ({rate})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        // indicatif's own {per_sec} prints four decimal places.
        bar.set_style(
            style.with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{}/s", HumanCount(state.per_sec() as u64));
            }),
        );
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

fn parse_separator(text: &str) -> anyhow::Result<String> {
    if text.is_empty() {
        anyhow::bail!("the key separator must not be empty");
    }
    Ok(text.to_string())
}

fn parse_header(text: &str) -> anyhow::Result<(String, Bytes)> {
    match text.split_once('=') {
        Some(("", _)) => anyhow::bail!("header {text:?} has an empty key"),
        Some((key, value)) => Ok((key.to_string(), Bytes::copy_from_slice(value.as_bytes()))),
        None => anyhow::bail!("expected KEY=VALUE, got {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(separator: Option<&str>) -> RecordShape {
        RecordShape {
            key: None,
            key_separator: separator.map(|s| s.as_bytes().to_vec()),
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
            partition: None,
        }
    }

    #[test]
    fn key_separator_splits_at_the_first_occurrence() {
        let record = shape(Some("::"))
            .record(Bytes::from_static(b"k::v::w"))
            .unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v::w"[..]));
        assert_eq!(record.headers.len(), 1);
        let empty_key = shape(Some(":")).record(Bytes::from_static(b":v")).unwrap();
        assert_eq!(empty_key.key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_line_without_the_separator_is_refused() {
        assert!(
            shape(Some(":"))
                .record(Bytes::from_static(b"no sep"))
                .is_none()
        );
        assert!(shape(Some(":")).record(Bytes::new()).is_none());
    }

    #[test]
    fn without_a_separator_the_whole_line_is_the_value() {
        let record = shape(None).record(Bytes::from_static(b"a:b")).unwrap();
        assert_eq!(record.key, None);
        assert_eq!(record.value.as_deref(), Some(&b"a:b"[..]));
    }

    #[test]
    fn strips_only_the_line_ending() {
        assert_eq!(strip_newline(b"a b \n".to_vec()), b"a b ");
        assert_eq!(strip_newline(b"a\r\n".to_vec()), b"a");
        assert_eq!(strip_newline(b"\n".to_vec()), b"");
        assert_eq!(strip_newline(b"last".to_vec()), b"last");
    }

    #[test]
    fn headers_parse_at_the_first_equals() {
        assert_eq!(
            parse_header("a=b=c").unwrap(),
            ("a".into(), Bytes::from_static(b"b=c"))
        );
        assert_eq!(parse_header("a=").unwrap(), ("a".into(), Bytes::new()));
        assert!(parse_header("=b").is_err());
        assert!(parse_header("ab").is_err());
    }
}
