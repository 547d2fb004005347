//! A crash leaves a torn or corrupted tail: cut the active segment at many points, or
//! flip bits in it, and expect a clean prefix of what was written on reopen.

use pubsub_storage::Log;

use crate::{batch, read_all, small_config};

const BATCHES: u64 = 12;

/// Writes `BATCHES` batches of 3 records into one segment and returns the byte
/// position where each batch ends.
fn write_log(dir: &std::path::Path) -> Vec<u64> {
    let config = pubsub_storage::LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir, config).unwrap();
    let mut ends = Vec::new();
    let mut position = 0;
    for tag in 0..BATCHES {
        let bytes = batch(tag, 3, 1000);
        log.append(&bytes, 1).unwrap();
        position += bytes.len() as u64;
        ends.push(position);
    }
    ends
}

fn reopen(dir: &std::path::Path) -> Log {
    let config = pubsub_storage::LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    Log::open(dir, config).unwrap()
}

fn expected(batches: u64) -> Vec<(u64, String)> {
    (0..batches)
        .flat_map(|tag| (0..3).map(move |i| (tag * 3 + i, format!("{tag}-{i}"))))
        .collect()
}

#[test]
fn a_cut_anywhere_in_the_tail_leaves_the_intact_prefix() {
    let source = tempfile::tempdir().unwrap();
    let ends = write_log(source.path());
    let segment = source.path().join(format!("{:020}.log", 0));
    let original = std::fs::read(&segment).unwrap();
    let written = *ends.last().unwrap() as usize;
    let first_cut = ends[ends.len() - 4] as usize;
    for cut in (first_cut..=written)
        .step_by(7)
        .chain([written - 1, written])
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:020}.log", 0)), &original[..cut]).unwrap();
        let log = reopen(dir.path());
        let intact = ends.iter().filter(|&&end| end as usize <= cut).count() as u64;
        assert_eq!(log.log_end_offset(), intact * 3, "cut at {cut}");
        assert_eq!(read_all(&log, 0), expected(intact), "cut at {cut}");
        // The log accepts appends right after the intact prefix.
        let more = batch(99, 1, 2000);
        assert_eq!(log.append(&more, 2).unwrap().base_offset, intact * 3);
    }
}

#[test]
fn flipped_bits_never_serve_a_bad_record() {
    let source = tempfile::tempdir().unwrap();
    let ends = write_log(source.path());
    let segment = source.path().join(format!("{:020}.log", 0));
    let original = std::fs::read(&segment).unwrap();
    let written = *ends.last().unwrap() as usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = ends[ends.len() - 5] as usize
            + (seed as usize % (written - ends[ends.len() - 5] as usize));
        let bit = (seed >> 32) as u8 % 8;
        let mut damaged = original.clone();
        damaged[at] ^= 1 << bit;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:020}.log", 0)), &damaged).unwrap();
        let log = reopen(dir.path());
        // The batch holding the flipped bit and everything after it are gone, unless
        // the bit is in the leader epoch, which the format leaves outside the CRC so
        // a leader can stamp it (Kafka's layout; replication checks epochs itself).
        let holder = ends.iter().position(|&end| at < end as usize).unwrap();
        let batch_start = if holder == 0 {
            0
        } else {
            ends[holder - 1] as usize
        };
        let in_epoch = (12..16).contains(&(at - batch_start));
        let intact = if in_epoch { BATCHES } else { holder as u64 };
        assert_eq!(
            log.log_end_offset(),
            intact * 3,
            "round {round}: flip at byte {at} bit {bit}"
        );
        assert_eq!(read_all(&log, 0), expected(intact), "round {round}");
    }
}

#[test]
fn garbage_after_the_tail_is_cut_and_reported_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_log(dir.path());
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.truncate(*ends.last().unwrap() as usize);
    bytes.extend_from_slice(&[0xab; 100]);
    std::fs::write(&segment, &bytes).unwrap();
    let log = reopen(dir.path());
    assert_eq!(log.log_end_offset(), BATCHES * 3);
    assert_eq!(read_all(&log, 0), expected(BATCHES));
}
