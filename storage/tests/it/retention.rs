//! Retention by time (with an injected clock) and by size, and rolling by age.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pubsub_storage::{Error, Log, RetentionPolicy};

use crate::{batch, manual_clock, read_all, small_config};

#[test]
fn time_retention_deletes_only_expired_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_000_000);
    let log = Log::open_with_clock(dir.path(), small_config(), clock).unwrap();
    for tag in 0..300u64 {
        // Record timestamps follow the clock: 1 s apart.
        let ts = now.load(Ordering::SeqCst);
        let bytes = batch(tag, 4, ts);
        log.append(&bytes, 1).unwrap();
        now.fetch_add(1000, Ordering::SeqCst);
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    let policy = RetentionPolicy {
        retention: Some(Duration::from_secs(3600)),
        retention_bytes: None,
    };
    assert_eq!(
        log.apply_retention(policy).unwrap(),
        0,
        "nothing is an hour old yet"
    );
    now.fetch_add(3600 * 1000 - 30_000, Ordering::SeqCst);
    let deleted = log.apply_retention(policy).unwrap();
    assert!(
        deleted > 0 && deleted < segments - 1,
        "only the oldest segments expire: {deleted}"
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    let err = log.read(0, 100).err().unwrap();
    assert!(
        matches!(err, Error::OffsetOutOfRange { log_start_offset, .. } if log_start_offset == start)
    );
    assert_eq!(read_all(&log, start).len() as u64, 1200 - start);
    now.fetch_add(3600 * 1000 * 24, Ordering::SeqCst);
    log.apply_retention(policy).unwrap();
    assert_eq!(
        log.segment_count(),
        1,
        "the active segment is never deleted"
    );
    assert_eq!(log.log_end_offset(), 1200);
}

#[test]
fn size_retention_keeps_the_log_under_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for tag in 0..200u64 {
        let bytes = batch(tag, 4, 0);
        log.append(&bytes, 1).unwrap();
    }
    let limit = 20_000;
    log.apply_retention(RetentionPolicy {
        retention: None,
        retention_bytes: Some(limit),
    })
    .unwrap();
    assert!(log.size_bytes() <= limit + small_config().segment_bytes);
    assert_eq!(log.log_end_offset(), 800);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(0);
    let config = pubsub_storage::LogConfig {
        segment_age: Duration::from_secs(60),
        ..small_config()
    };
    let log = Log::open_with_clock(dir.path(), config, clock).unwrap();
    let bytes = batch(1, 1, 0);
    log.append(&bytes, 1).unwrap();
    now.store(61_000, Ordering::SeqCst);
    let bytes = batch(2, 1, 61_000);
    log.append(&bytes, 1).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn delete_segments_below_keeps_the_segment_holding_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for tag in 0..300u64 {
        let bytes = batch(tag, 4, 0);
        log.append(&bytes, 1).unwrap();
    }
    assert!(log.segment_count() > 2);
    log.delete_segments_below(350).unwrap();
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 350, "start {start}");
    assert!(log.read(350, 1).is_ok());
}

#[test]
fn altering_an_open_log_changes_its_batch_limit_and_fsync_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let bytes = batch(1, 20, 1000);
    log.append(&bytes, 1).unwrap();
    let smaller = pubsub_storage::LogConfig {
        max_batch_bytes: bytes.len() - 1,
        fsync: pubsub_storage::FsyncPolicy::Always,
        ..small_config()
    };
    log.alter(&smaller).unwrap();
    assert!(matches!(
        log.append(&bytes, 1),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(log.config().fsync, pubsub_storage::FsyncPolicy::Always);
    // A follower still copies batches its leader took under the older, higher limit.
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = Log::open(follower_dir.path(), small_config()).unwrap();
    follower.alter(&smaller).unwrap();
    let slice = log.read(0, 1 << 20).unwrap();
    assert!(
        follower
            .append_replicated(slice.as_ref())
            .unwrap()
            .is_some()
    );
    assert_eq!(read_all(&follower, 0), read_all(&log, 0));
    let other_layout = pubsub_storage::LogConfig {
        segment_bytes: 16384,
        ..small_config()
    };
    assert!(matches!(
        log.alter(&other_layout),
        Err(Error::InvalidConfig(_))
    ));
}
