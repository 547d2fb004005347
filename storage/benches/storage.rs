//! Throughput and latency of the storage engine: the batch codec, CRC-32C, producer
//! batch validation, appends under each fsync policy (with group commit across 8
//! threads), sequential reads from the page cache and offset lookups.
//!
//! Run with `cargo bench -p pubsub-storage --bench storage`. Logs live under Cargo's
//! `target/tmp`, on the same filesystem as the workspace, so fsync hits the real disk.
//! Throughput counts the encoded, uncompressed batch bytes (header included).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use pubsub_storage::batch::{self, BatchHeader};
use pubsub_storage::{
    BatchBuilder, Compression, DecodedBatch, FsyncPolicy, Log, LogConfig, ProducerStamp,
};
use tempfile::TempDir;

/// Value sizes of the records: a small event and a typical 1 KiB payload.
const RECORD_BYTES: [usize; 2] = [100, 1024];
/// Records per batch: an unbatched producer, a modest batch, a full ~1 MiB batch.
const BATCH_RECORDS: [u32; 3] = [1, 100, 1000];
/// Segment size of the append benchmarks: large enough that rolls are rare.
const SEGMENT_BYTES: u64 = 256 << 20;
/// Concurrent appenders in the group-commit benchmark.
const APPENDERS: u64 = 8;
/// Bound on decompressed batch size for decoding (the default batch limit, twice).
const DECODE_LIMIT_BYTES: usize = 2 << 20;
/// Uncompressed size of the batches the validation benchmark checks.
const VALIDATE_BATCH_BYTES: usize = 1 << 20;
/// The broker's default batch limit, which validation is given.
const VALIDATE_LIMIT_BYTES: usize = 1 << 20;
/// Encoded bytes a 100 B-1 KiB record adds beyond its value at most (length,
/// attributes, deltas, null key, value length, header count: 12 in a 1 MiB batch).
const RECORD_OVERHEAD_BYTES_MAX: usize = 16;
/// Bytes per read, like a consumer's fetch limit.
const READ_MAX_BYTES: usize = 1 << 20;
/// First record timestamp, ms; records step by 1 ms.
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// A small deterministic generator (xorshift64*), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A value of `len` bytes of words drawn at random: compressible, but not trivially.
fn value(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "broker",
        "offset",
        "segment",
        "partition",
        "leader",
        "replica",
        "epoch",
        "topic",
        "42",
        "1700000000",
        "user",
        "checkout",
        "click",
        "true",
        "null",
        "{\"id\":",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[(rng.next() % 16) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn values(record_bytes: usize, count: u32) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ record_bytes as u64);
    (0..count).map(|_| value(&mut rng, record_bytes)).collect()
}

fn push_all(builder: &mut BatchBuilder, values: &[Vec<u8>]) {
    for (i, v) in values.iter().enumerate() {
        builder.push(BASE_TIMESTAMP_MS + i as i64, None, Some(v), &[]);
    }
}

/// One encoded batch and the size it has before compression.
fn build(record_bytes: usize, count: u32, codec: Compression) -> (Vec<u8>, u64) {
    let mut builder = BatchBuilder::new();
    push_all(&mut builder, &values(record_bytes, count));
    let plain = builder.estimated_bytes() as u64;
    (
        builder.build(codec, ProducerStamp::NONE).unwrap().unwrap(),
        plain,
    )
}

fn label(record_bytes: usize, count: u32) -> String {
    let size = if record_bytes >= 1024 {
        format!("{}KiB", record_bytes / 1024)
    } else {
        format!("{record_bytes}B")
    };
    format!("{size}x{count}")
}

/// A benchmark id naming the codec and the batch's shape.
fn codec_id(codec: Compression, record_bytes: usize, count: u32) -> BenchmarkId {
    BenchmarkId::new(
        format!("{codec:?}").to_lowercase(),
        label(record_bytes, count),
    )
}

fn bench_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storage-bench");
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn config(segment_bytes: u64, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes,
        fsync,
        ..LogConfig::default()
    }
}

/// A log in a temporary directory that is replaced by an empty one when it fills,
/// so appends measure the write path and not segment rolls.
struct Fixture {
    root: TempDir,
    config: LogConfig,
    log: Option<Log>,
    generation: u32,
    bytes: u64,
}

impl Fixture {
    fn new(config: LogConfig) -> Fixture {
        let root = tempfile::tempdir_in(bench_root()).unwrap();
        let mut fixture = Fixture {
            root,
            config,
            log: None,
            generation: 0,
            bytes: 0,
        };
        fixture.recreate();
        fixture
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("a fixture always holds a log")
    }

    fn recreate(&mut self) {
        if let Some(log) = self.log.take() {
            log.delete().unwrap();
        }
        self.generation += 1;
        let dir = self.root.path().join(self.generation.to_string());
        self.log = Some(Log::open(&dir, self.config.clone()).unwrap());
        self.bytes = 0;
    }

    /// Batches of `len` bytes that still fit in the active segment, after replacing
    /// the log if none does.
    fn room(&mut self, len: u64) -> u64 {
        if self.bytes + len > self.config.segment_bytes {
            self.recreate();
        }
        (self.config.segment_bytes - self.bytes) / len
    }
}

/// Appends `iters` copies of `batch` from one thread; replacing a full log is not timed.
fn append_serial(fixture: &mut Fixture, batch: &[u8], iters: u64) -> Duration {
    let len = batch.len() as u64;
    let mut elapsed = Duration::ZERO;
    let mut remaining = iters;
    while remaining > 0 {
        let n = remaining.min(fixture.room(len));
        let log = fixture.log();
        let start = Instant::now();
        for _ in 0..n {
            black_box(log.append(batch, 0).unwrap());
        }
        elapsed += start.elapsed();
        fixture.bytes += n * len;
        remaining -= n;
    }
    elapsed
}

/// Appends `iters` copies of `batch` split over `APPENDERS` threads; wall time of all.
fn append_concurrent(fixture: &mut Fixture, batch: &[u8], iters: u64) -> Duration {
    let len = batch.len() as u64;
    // A sample larger than a segment rolls inside the measurement; that is rare and a
    // roll under fsync=always costs little, since the segment is already synced.
    fixture.room((iters * len).min(fixture.config.segment_bytes));
    let log = fixture.log();
    let barrier = Barrier::new(APPENDERS as usize + 1);
    let start = std::thread::scope(|scope| {
        for thread in 0..APPENDERS {
            let share = iters / APPENDERS + u64::from(thread < iters % APPENDERS);
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..share {
                    black_box(log.append(batch, 0).unwrap());
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let elapsed = start.elapsed();
    fixture.bytes += iters * len;
    elapsed
}

fn codec_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    group
}

fn encode(c: &mut Criterion) {
    let mut group = codec_group(c, "encode");
    for codec in [Compression::None, Compression::Lz4] {
        for record_bytes in RECORD_BYTES {
            for count in BATCH_RECORDS {
                let values = values(record_bytes, count);
                let (encoded, plain) = build(record_bytes, count, codec);
                if count == 1000 {
                    eprintln!(
                        "{codec:?} {}: {plain} bytes encode to {}",
                        label(record_bytes, count),
                        encoded.len()
                    );
                }
                let mut builder = BatchBuilder::new();
                group.throughput(Throughput::Bytes(plain));
                let id = codec_id(codec, record_bytes, count);
                group.bench_function(id, |b| {
                    b.iter(|| {
                        builder.clear();
                        push_all(&mut builder, &values);
                        builder.build(codec, ProducerStamp::NONE).unwrap().unwrap()
                    })
                });
            }
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = codec_group(c, "decode");
    for codec in [Compression::None, Compression::Lz4] {
        for record_bytes in RECORD_BYTES {
            for count in BATCH_RECORDS {
                let (encoded, plain) = build(record_bytes, count, codec);
                group.throughput(Throughput::Bytes(plain));
                let id = codec_id(codec, record_bytes, count);
                group.bench_function(id, |b| {
                    b.iter(|| {
                        let decoded =
                            DecodedBatch::new(black_box(&encoded), DECODE_LIMIT_BYTES).unwrap();
                        let mut value_bytes = 0;
                        for record in decoded.records() {
                            value_bytes += record.unwrap().value.map_or(0, <[u8]>::len);
                        }
                        value_bytes
                    })
                });
            }
        }
    }
    group.finish();
}

fn crc(c: &mut Criterion) {
    let mut group = codec_group(c, "crc32c");
    let buffer: Vec<u8> = values(1 << 20, 1).remove(0);
    group.throughput(Throughput::Bytes(buffer.len() as u64));
    group.bench_function("raw/1MiB", |b| {
        b.iter(|| crc32c::crc32c(black_box(&buffer)))
    });
    let (encoded, _) = build(1024, 1000, Compression::None);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("validate/1KiBx1000", |b| {
        b.iter(|| batch::validate(black_box(&encoded), 1 << 20).unwrap())
    });
    group.finish();
}

/// What `Log::append` checks before writing: header, CRC and (since issue 11) every
/// record, decompressed first; a ~1 MiB batch (before compression) per codec.
fn validate(c: &mut Criterion) {
    let mut group = codec_group(c, "validate");
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        for record_bytes in RECORD_BYTES {
            let count = (VALIDATE_BATCH_BYTES / (record_bytes + RECORD_OVERHEAD_BYTES_MAX)) as u32;
            let (encoded, plain) = build(record_bytes, count, codec);
            group.throughput(Throughput::Bytes(plain));
            let id = codec_id(codec, record_bytes, count);
            group.bench_function(id, |b| {
                b.iter(|| batch::validate(black_box(&encoded), VALIDATE_LIMIT_BYTES).unwrap())
            });
        }
    }
    group.finish();
}

fn append_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat);
    group
}

fn append_never(c: &mut Criterion) {
    let mut group = append_group(c, "append_never");
    let mut fixture = Fixture::new(config(SEGMENT_BYTES, FsyncPolicy::Never));
    for record_bytes in RECORD_BYTES {
        for count in BATCH_RECORDS {
            let (encoded, _) = build(record_bytes, count, Compression::None);
            group.throughput(Throughput::Bytes(encoded.len() as u64));
            group.bench_function(label(record_bytes, count), |b| {
                b.iter_custom(|iters| append_serial(&mut fixture, &encoded, iters))
            });
        }
    }
    group.finish();
}

/// Appends 1 MiB batches to one log that keeps rolling every 256 MiB, under fsync
/// `never` and `always`: sustained throughput with the rolls' cost included.
///
/// Closed segments are deleted between samples, outside the timing, as retention
/// would: on a virtual machine, page cache that grows without bound lands on memory
/// the host has not backed yet, and the copy into it costs up to 10x more system time
/// (measured), which would be charged to the roll. `append_never` recycles its memory
/// the same way, so the two compare.
fn append_rolling(c: &mut Criterion) {
    let mut group = append_group(c, "append_rolling");
    let (encoded, _) = build(1024, 1000, Compression::None);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Always] {
        let root = tempfile::tempdir_in(bench_root()).unwrap();
        let log = Log::open(root.path(), config(SEGMENT_BYTES, fsync)).unwrap();
        let name = format!("{fsync:?}").to_lowercase();
        group.bench_function(BenchmarkId::new(name, label(1024, 1000)), |b| {
            b.iter_custom(|iters| {
                log.delete_segments_below(log.log_end_offset()).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(log.append(&encoded, 0).unwrap());
                }
                start.elapsed()
            })
        });
        eprintln!(
            "append_rolling/{fsync:?}: log end offset {} ({} records per segment)",
            log.log_end_offset(),
            SEGMENT_BYTES / (encoded.len() as u64) * 1000
        );
    }
    group.finish();
}

fn append_always(c: &mut Criterion) {
    let mut group = append_group(c, "append_always");
    let mut fixture = Fixture::new(config(SEGMENT_BYTES, FsyncPolicy::Always));
    for record_bytes in RECORD_BYTES {
        for count in BATCH_RECORDS {
            let (encoded, _) = build(record_bytes, count, Compression::None);
            group.throughput(Throughput::Bytes(encoded.len() as u64));
            group.bench_function(
                BenchmarkId::new("1thread", label(record_bytes, count)),
                |b| b.iter_custom(|iters| append_serial(&mut fixture, &encoded, iters)),
            );
            group.bench_function(
                BenchmarkId::new("8threads", label(record_bytes, count)),
                |b| b.iter_custom(|iters| append_concurrent(&mut fixture, &encoded, iters)),
            );
        }
    }
    group.finish();
}

/// A log of `total_bytes` of one repeated batch, in segments of `segment_bytes`;
/// everything it wrote is still in the page cache.
fn filled_log(
    record_bytes: usize,
    count: u32,
    segment_bytes: u64,
    total_bytes: u64,
) -> (TempDir, Log) {
    let root = tempfile::tempdir_in(bench_root()).unwrap();
    let log = Log::open(root.path(), config(segment_bytes, FsyncPolicy::Never)).unwrap();
    let (encoded, _) = build(record_bytes, count, Compression::None);
    while log.size_bytes() + encoded.len() as u64 <= total_bytes {
        log.append(&encoded, 0).unwrap();
    }
    (root, log)
}

/// Reads the whole log front to back; returns the bytes read.
fn read_all(log: &Log) -> u64 {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut total = 0;
    while offset < end {
        let slice = log.read(offset, READ_MAX_BYTES).unwrap();
        let mut rest = slice.as_ref();
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest).unwrap();
            offset = header.next_offset();
            rest = &rest[header.total_bytes()..];
        }
        total += slice.len() as u64;
    }
    total
}

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_sequential");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for (record_bytes, count) in [(1024, 1000), (100, 100)] {
        let (_root, log) = filled_log(record_bytes, count, 32 << 20, 128 << 20);
        let total = read_all(&log);
        group.throughput(Throughput::Bytes(total));
        let id = format!(
            "{}/{}MiB_{}segments",
            label(record_bytes, count),
            total >> 20,
            log.segment_count()
        );
        group.bench_function(id, |b| b.iter(|| read_all(&log)));
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("offset_lookup");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for (record_bytes, count) in [(100, 1), (100, 100)] {
        let (_root, log) = filled_log(record_bytes, count, 8 << 20, 32 << 20);
        let end = log.log_end_offset();
        let mut rng = Rng(0x5eed);
        let id = format!(
            "{}/{}records_{}segments",
            label(record_bytes, count),
            end,
            log.segment_count()
        );
        group.bench_function(id, |b| {
            b.iter(|| {
                let slice = log.read(rng.next() % end, 1).unwrap();
                slice.len()
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    encode,
    decode,
    crc,
    validate,
    read,
    lookup,
    append_never,
    append_always,
    append_rolling
);
criterion_main!(benches);
