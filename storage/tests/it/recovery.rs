//! Reopening after clean and unclean stops: index rebuilds, corrupt closed segments,
//! truncation and reset.

use pubsub_storage::{Error, Log};

use crate::{batch, files, read_all, small_config};

fn fill(log: &Log, batches: u64) {
    for tag in 0..batches {
        let bytes = batch(tag, 5, 1000 + tag as i64 * 10);
        log.append(&bytes, 1).unwrap();
    }
}

#[test]
fn deleted_indexes_are_rebuilt_and_lookups_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 200);
    assert!(log.segment_count() > 3, "the small config rolls segments");
    let before = read_all(&log, 0);
    let end = log.log_end_offset();
    drop(log);
    for name in files(dir.path()) {
        if name.ends_with(".index") || name.ends_with(".timeindex") {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log, 0), before);
    for offset in (0..end).step_by(37) {
        let slice = log.read(offset, 1).unwrap();
        let first = pubsub_storage::batch::batches(slice.as_ref())
            .next()
            .unwrap()
            .unwrap()
            .0;
        assert!(first.base_offset <= offset && offset <= first.last_offset());
    }
    assert_eq!(log.offset_for_timestamp(1000 + 50 * 10).unwrap(), Some(250));
}

#[test]
fn damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 100);
    let before = read_all(&log, 0);
    drop(log);
    let index = dir.path().join(format!("{:020}.index", 0));
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&index, bytes).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0), before);
}

#[test]
fn a_corrupt_closed_segment_stops_the_open_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 100);
    drop(log);
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
    let err = Log::open(dir.path(), small_config())
        .err()
        .expect("open must fail");
    match &err {
        Error::SegmentCorrupt { path, position, .. } => {
            assert_eq!(path, &segment);
            assert!(*position <= middle as u64);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
}

#[test]
fn corrupt_bytes_in_a_closed_segment_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 100);
    drop(log);
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 80;
    bytes[last] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    // The index trailer still matches the size, so the damage is found on read.
    match Log::open(dir.path(), small_config()) {
        Err(Error::SegmentCorrupt { .. }) => {}
        Ok(log) => {
            let mut offset = 0;
            let mut saw_error = false;
            while offset < log.log_end_offset() {
                match log.read(offset, 1 << 20) {
                    Ok(slice) => {
                        for item in pubsub_storage::batch::batches(slice.as_ref()) {
                            offset = item.unwrap().0.next_offset();
                        }
                    }
                    Err(Error::SegmentCorrupt { .. }) => {
                        saw_error = true;
                        break;
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            assert!(saw_error, "the damaged batch must not be served");
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn reads_outside_the_log_are_out_of_range_with_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 2);
    assert!(
        log.read(10, 100).unwrap().is_empty(),
        "reading at the log end is empty"
    );
    let err = log.read(11, 100).err().unwrap();
    assert!(matches!(
        err,
        Error::OffsetOutOfRange {
            offset: 11,
            log_start_offset: 0,
            log_end_offset: 10
        }
    ));
    assert!(err.to_string().contains("0..=10"), "{err}");
}

#[test]
fn read_below_stops_at_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 4);
    let slice = log.read_below(0, 1 << 20, 10).unwrap();
    let count = pubsub_storage::batch::batches(slice.as_ref()).count();
    assert_eq!(count, 2);
    assert!(log.read_below(10, 1 << 20, 10).unwrap().is_empty());
}

#[test]
fn truncate_across_segments_then_append_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 100);
    let segments = log.segment_count();
    log.truncate_to(52).unwrap();
    assert_eq!(
        log.log_end_offset(),
        50,
        "truncation removes the whole batch holding the offset"
    );
    assert!(log.segment_count() < segments);
    let bytes = batch(500, 2, 5000);
    assert_eq!(log.append(&bytes, 2).unwrap().base_offset, 50);
    let before = read_all(&log, 0);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 52);
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(before.last().unwrap().1, "500-1");
}

#[test]
fn reset_starts_an_empty_log_at_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 10);
    log.reset_to(1_000).unwrap();
    assert_eq!(log.log_start_offset(), 1_000);
    assert_eq!(log.log_end_offset(), 1_000);
    let bytes = batch(1, 1, 1);
    assert_eq!(log.append(&bytes, 4).unwrap().base_offset, 1_000);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_start_offset(), 1_000);
    assert_eq!(log.log_end_offset(), 1_001);
}

#[test]
fn replicated_batches_keep_their_offsets_and_must_be_contiguous() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = Log::open(leader_dir.path(), small_config()).unwrap();
    let follower = Log::open(follower_dir.path(), small_config()).unwrap();
    fill(&leader, 30);
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let slice = leader.read(offset, 1000).unwrap();
        let info = follower.append_replicated(slice.as_ref()).unwrap().unwrap();
        offset = info.last_offset + 1;
    }
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
    let stale = leader.read(0, 100).unwrap();
    assert!(matches!(
        follower.append_replicated(stale.as_ref()),
        Err(Error::NonContiguousOffset { .. })
    ));
}

#[test]
fn fsync_always_reports_everything_durable_and_group_commits_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let config = pubsub_storage::LogConfig {
        fsync: pubsub_storage::FsyncPolicy::Always,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = std::sync::Arc::new(Log::open(dir.path(), config).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let bytes = batch(t * 1000 + i, 2, 1);
                    let info = log.append(&bytes, 1).unwrap();
                    assert!(
                        log.durable_offset() > info.last_offset,
                        "acknowledged only once durable"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.log_end_offset(), 400);
    assert_eq!(log.durable_offset(), 400);
}

#[test]
fn concurrent_readers_see_only_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = pubsub_storage::LogConfig {
        segment_bytes: 64 << 10,
        ..small_config()
    };
    let log = std::sync::Arc::new(Log::open(dir.path(), config).unwrap());
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for tag in 0..2000 {
                let bytes = batch(tag, 3, tag as i64);
                log.append(&bytes, 1).unwrap();
            }
        })
    };
    let mut offset = 0;
    while offset < 6000 {
        let slice = log.read(offset, 4096).unwrap();
        for item in pubsub_storage::batch::batches(slice.as_ref()) {
            let (header, _) = item.expect("a reader never sees a torn batch");
            assert!(header.last_offset() >= offset);
            offset = header.next_offset();
        }
    }
    writer.join().unwrap();
}

#[test]
fn an_idempotent_retry_is_answered_with_the_stored_offsets_even_after_reopen() {
    use pubsub_storage::batch::restamp_producer;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut first = batch(1, 3, 10);
    restamp_producer(&mut first, 42, 0, 0);
    let mut second = batch(2, 2, 10);
    restamp_producer(&mut second, 42, 0, 3);
    let stored = log.append(&first, 1).unwrap();
    assert_eq!(
        log.append(&first, 1).unwrap(),
        stored,
        "a retry gets the stored offsets"
    );
    assert_eq!(log.log_end_offset(), 3, "and is not stored twice");
    let mut gap = batch(3, 1, 10);
    restamp_producer(&mut gap, 42, 0, 9);
    assert!(matches!(
        log.append(&gap, 1),
        Err(Error::OutOfOrderSequence { .. })
    ));
    log.append(&second, 1).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(
        log.append(&second, 1).unwrap().base_offset,
        3,
        "state is rebuilt on open"
    );
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn a_time_search_answers_the_first_record_at_or_after_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // One batch of 10 records at 100, 110, ..., 190, compressed, then one at 500.
    let mut builder = pubsub_storage::BatchBuilder::new();
    for i in 0..10 {
        builder.push(100 + i * 10, None, Some(b"v"), &[]);
    }
    let stamp = pubsub_storage::ProducerStamp::NONE;
    let first = builder.build(pubsub_storage::Compression::Lz4, stamp);
    log.append(&first.unwrap().unwrap(), 0).unwrap();
    log.append(&crate::batch(1, 1, 500), 0).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(100).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(101).unwrap(), Some(1));
    assert_eq!(log.offset_for_timestamp(155).unwrap(), Some(6));
    assert_eq!(log.offset_for_timestamp(190).unwrap(), Some(9));
    assert_eq!(log.offset_for_timestamp(191).unwrap(), Some(10));
    assert_eq!(log.offset_for_timestamp(501).unwrap(), None);
    // The same from a closed segment.
    log.roll().unwrap();
    assert_eq!(log.offset_for_timestamp(155).unwrap(), Some(6));
}
