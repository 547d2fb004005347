//! A partition directory as a crash, a bad disk or a person could leave it, opened by
//! `Log::open`: the segment recovery scanner, the offset and time index readers (with
//! their trailers) and the check that segments follow one another. Opening must end
//! in a log or an error, never a panic or an allocation sized from a length on disk;
//! a log it opens must read back batch by batch from start to end, every batch with a
//! good CRC, and take a new batch at its end.
//!
//! The input is cut into the files of up to two segments: two little-endian u16
//! lengths (offset index, time index), a u16 base offset for a second segment (0: none),
//! then the index bytes, the time index bytes and the first segment's `.log`. With a
//! second segment the first is opened as sealed (indexes and trailers checked), and the
//! second, empty, as the active one; an odd base offset also writes a damaged
//! recovery-point checkpoint, so the sealed segment is checked as one a crash may have
//! cut short (and the log cut there) instead of trusted.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pubsub_storage::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, ProducerStamp, batch,
};

/// Small segments and indexes, so a run stays in memory and fast.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        segment_age: Duration::from_secs(3600),
        index_bytes: 64 << 10,
        index_interval_bytes: 4096,
        max_batch_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
    }
}

/// The next `len` bytes of `input`, or all that is left.
fn take<'a>(input: &mut &'a [u8], len: usize) -> &'a [u8] {
    let (head, tail) = input.split_at(len.min(input.len()));
    *input = tail;
    head
}

fn u16_at(input: &mut &[u8]) -> u16 {
    let bytes = take(input, 2);
    u16::from_le_bytes([
        bytes.first().copied().unwrap_or(0),
        bytes.get(1).copied().unwrap_or(0),
    ])
}

/// Writes the segment files the input describes into `dir`.
fn write_files(dir: &Path, mut input: &[u8]) {
    let index_len = usize::from(u16_at(&mut input));
    let time_len = usize::from(u16_at(&mut input));
    let second = u16_at(&mut input);
    let index = take(&mut input, index_len);
    let time = take(&mut input, time_len);
    let name = |base: u64, ext: &str| dir.join(format!("{base:020}.{ext}"));
    std::fs::write(name(0, "log"), input).expect("write the segment");
    std::fs::write(name(0, "index"), index).expect("write the index");
    std::fs::write(name(0, "timeindex"), time).expect("write the time index");
    if second > 0 {
        std::fs::write(name(u64::from(second), "log"), b"").expect("write the next segment");
    }
    if second % 2 == 1 {
        // A crash before the background flush: the first segment is past the recovery
        // point, checked batch by batch and cut rather than trusted.
        std::fs::write(dir.join("recovery-point-checkpoint"), b"0").expect("write the checkpoint");
    }
}

/// Reads every batch from the log's start to its end, checking each one's CRC.
fn read_all(log: &Log) {
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log
            .read(offset, 1 << 20)
            .expect("a recovered log reads back");
        assert!(
            !slice.is_empty(),
            "a read below the log end returns a batch"
        );
        let mut next = offset;
        for item in batch::batches(slice.as_ref()) {
            // The iterator checks each batch's length and CRC.
            let (header, _) = item.expect("a recovered log holds whole, intact batches");
            next = header.last_offset() + 1;
        }
        assert!(next > offset, "reads progress");
        offset = next;
    }
}

/// Appends one small batch at the log's end.
fn append_one(log: &Log) {
    let mut builder = BatchBuilder::new();
    builder.push(0, None, Some(b"after recovery"), &[]);
    let bytes = builder
        .build(Compression::None, ProducerStamp::NONE)
        .expect("build a batch")
        .expect("one record");
    let end = log.log_end_offset();
    let appended = log
        .append(&bytes, 0)
        .expect("a recovered log takes an append");
    assert_eq!(appended.base_offset, end);
}

fuzz_target!(|input: &[u8]| {
    // Memory-backed where there is one: the open syncs the directory every run.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let scratch = base.join(format!("pubsub-fuzz-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("create the scratch dir");
    write_files(&scratch, input);
    if let Ok(log) = Log::open(&scratch, config()) {
        read_all(&log);
        append_one(&log);
        read_all(&log);
    }
    let _ = std::fs::remove_dir_all(&scratch);
});
