//! Segments sealed without syncing (fsync `interval` and `never`): the background
//! flush moves the recovery point past them, and recovery cuts the log at a segment
//! past the point that a crash damaged, instead of refusing to open.

use std::os::unix::fs::FileExt;
use std::path::Path;

use pubsub_storage::{Error, FsyncPolicy, Log, LogConfig};

use crate::{batch, read_all, small_config};

const CHECKPOINT: &str = "recovery-point-checkpoint";

fn fill(log: &Log, batches: u64) {
    for tag in 0..batches {
        log.append(&batch(tag, 5, 1000 + tag as i64), 1).unwrap();
    }
}

/// The offset the recovery-point checkpoint holds.
fn recovery_point(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join(CHECKPOINT)).unwrap();
    assert_eq!(bytes.len(), 12);
    u64::from_be_bytes(bytes[..8].try_into().unwrap())
}

/// Base offsets of the `.log` files, in order.
fn segment_bases(dir: &Path) -> Vec<u64> {
    crate::files(dir)
        .iter()
        .filter_map(|name| name.strip_suffix(".log"))
        .map(|stem| stem.parse().unwrap())
        .collect()
}

fn segment_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// A crash before the flush: the checkpoint does not cover the sealed segments.
fn forget_the_flush(dir: &Path) {
    std::fs::write(dir.join(CHECKPOINT), b"damaged").unwrap();
}

/// Writes a log of several segments whose flush a crash then forgot; returns every
/// record it held and the segments' base offsets.
fn crashed_before_the_flush(dir: &Path) -> (Vec<(u64, String)>, Vec<u64>) {
    let log = Log::open(dir, small_config()).unwrap();
    fill(&log, 500);
    let records = read_all(&log, 0);
    drop(log);
    let bases = segment_bases(dir);
    assert!(bases.len() > 4, "the small config rolls segments");
    forget_the_flush(dir);
    (records, bases)
}

#[test]
fn a_closed_log_has_its_recovery_point_at_the_active_segment() {
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            fsync,
            ..small_config()
        };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(recovery_point(dir.path()), 0, "written when the log opens");
        fill(&log, 500);
        assert!(log.segment_count() > 3);
        drop(log);
        let bases = segment_bases(dir.path());
        assert_eq!(recovery_point(dir.path()), *bases.last().unwrap());
        // Every sealed segment is now trusted: damage in one fails the open.
        let first = segment_path(dir.path(), 0);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        file.write_all_at(&[0xff; 4], 100).unwrap();
        // Without its index the whole segment is checked, strictly.
        std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
        match Log::open(dir.path(), config) {
            Err(Error::SegmentCorrupt { path, .. }) => assert_eq!(path, first),
            Ok(_) => panic!("a damaged segment below the recovery point must fail the open"),
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

#[test]
fn a_damaged_segment_past_the_recovery_point_cuts_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let (before, bases) = crashed_before_the_flush(dir.path());
    // A page of the third segment never reached the disk: it reads back as zeros.
    let damaged = bases[2];
    let path = segment_path(dir.path(), damaged);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&vec![0u8; 512], len / 2).unwrap();
    drop(file);

    let log = Log::open(dir.path(), small_config()).unwrap();
    let end = log.log_end_offset();
    assert!(
        damaged < end && end < bases[3],
        "cut inside the damaged segment"
    );
    let after = read_all(&log, 0);
    assert_eq!(after, before[..after.len()], "what is kept is a prefix");
    assert_eq!(after.len() as u64, end);
    assert_eq!(
        segment_bases(dir.path()),
        bases[..3],
        "later segments removed"
    );
    assert_eq!(recovery_point(dir.path()), damaged);
    // The log goes on from the cut and reopens cleanly.
    assert_eq!(
        log.append(&batch(900, 3, 9000), 2).unwrap().base_offset,
        end
    );
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), end + 3);
}

#[test]
fn whole_segments_past_the_recovery_point_are_kept_and_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (before, bases) = crashed_before_the_flush(dir.path());
    // Indexes that were never written whole are rebuilt.
    std::fs::write(dir.path().join(format!("{:020}.index", bases[1])), b"torn").unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(recovery_point(dir.path()), *bases.last().unwrap());
}

#[test]
fn a_hole_past_the_recovery_point_is_a_cut_not_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bases) = crashed_before_the_flush(dir.path());
    let path = segment_path(dir.path(), bases[1]);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let punched = rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        4096,
        4096,
    );
    if punched.is_err() {
        eprintln!("this filesystem cannot punch holes; zeros were tested instead");
        return;
    }
    drop(file);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert!(log.log_end_offset() < bases[2]);
    assert_eq!(segment_bases(dir.path()), bases[..2]);
}

#[test]
fn truncation_moves_the_recovery_point_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 500);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    let bases = segment_bases(dir.path());
    let point = recovery_point(dir.path());
    assert_eq!(point, *bases.last().unwrap());
    let cut = bases[1] + 2;
    log.truncate_to(cut).unwrap();
    assert!(
        recovery_point(dir.path()) <= bases[1],
        "nothing past the cut may be trusted after it is written again"
    );
    log.reset_to(5_000).unwrap();
    assert!(recovery_point(dir.path()) <= 5_000);
}
