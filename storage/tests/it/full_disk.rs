//! A log on a really full filesystem (a small tmpfs, mounted as root): every append
//! that returned Ok is readable, before and after a reopen on the still-full disk; a
//! failed append is reported as `DiskFull` naming the file, leaves no trace that a
//! retry could mistake for success, and succeeds by itself once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;

use pubsub_storage::{
    BatchBuilder, Compression, Error, FsyncPolicy, Log, LogConfig, ProducerStamp,
};

use crate::read_all;

/// A tmpfs of `size` mounted over a temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts it, or returns `None` when not root (the test then says it did not run,
    /// and fails if `PUBSUB_TESTS_REQUIRE_ROOT` is set, as in CI).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        if !status.status.success() {
            let why = String::from_utf8_lossy(&status.stderr).to_string();
            assert!(
                std::env::var_os("PUBSUB_TESTS_REQUIRE_ROOT").is_none(),
                "cannot mount a tmpfs: {why}"
            );
            eprintln!("full-disk test NOT RUN: mounting a tmpfs needs root ({why})");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// Batch `sequence` of an idempotent producer: 4 records of about 1 KiB.
fn batch(sequence: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let value = vec![b'x'; 1000];
    for i in 0..4 {
        let key = format!("{sequence}-{i}");
        builder.push(0, Some(key.as_bytes()), Some(&value), &[]);
    }
    let stamp = ProducerStamp {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: sequence * 4,
    };
    builder.build(Compression::None, stamp).unwrap().unwrap()
}

/// Fills the rest of the filesystem with a file, so the log meets a full disk.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![1u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_they_resume_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount("6m") else {
        return;
    };
    let dir: PathBuf = disk.path().join("p0");
    let log = Log::open(&dir, config()).unwrap();
    let mut acked = 0u64;
    let mut sequence = 0;
    // Some records, then somebody else fills the disk.
    for _ in 0..100 {
        let info = log.append(&batch(sequence), 0).unwrap();
        assert_eq!(info.base_offset, acked);
        acked += 4;
        sequence += 1;
    }
    fill(&disk.path().join("filler"));
    let failed = loop {
        match log.append(&batch(sequence), 0) {
            Ok(info) => {
                assert_eq!(info.base_offset, acked, "acknowledged where it was stored");
                acked += 4;
                sequence += 1;
                assert!(sequence < 10_000, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    println!("acknowledged {acked} records before: {failed}");
    assert!(matches!(failed, Error::DiskFull { .. }), "{failed:?}");
    assert!(
        failed
            .to_string()
            .contains(&disk.path().display().to_string())
    );
    // A retry of the failed batch is written again, never answered as stored.
    for _ in 0..3 {
        let retry = log.append(&batch(sequence), 0).unwrap_err();
        assert!(matches!(retry, Error::DiskFull { .. }), "{retry:?}");
    }
    assert_eq!(log.log_end_offset(), acked, "the log end did not move");
    assert_eq!(read_all(&log, 0).len() as u64, acked, "reads keep working");
    drop(log);

    // A reopen on the still-full disk serves everything acknowledged.
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!(log.log_end_offset(), acked);
    assert_eq!(read_all(&log, 0).len() as u64, acked, "lost 0 after reopen");

    // Space comes back: the same retry is now stored, where it belongs.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let info = log.append(&batch(sequence), 0).unwrap();
    assert_eq!(info.base_offset, acked);
    acked += 4;
    for _ in 0..50 {
        sequence += 1;
        log.append(&batch(sequence), 0).unwrap();
        acked += 4;
    }
    drop(log);
    let log = Log::open(&dir, config()).unwrap();
    let records = read_all(&log, 0);
    assert_eq!(records.len() as u64, acked);
    assert!(records.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    println!("acknowledged {acked}, lost 0");
}

#[test]
fn a_log_that_fills_the_disk_itself_seals_and_reopens() {
    let Some(disk) = Tmpfs::mount("3m") else {
        return;
    };
    let dir = disk.path().join("p0");
    let log = Log::open(&dir, config()).unwrap();
    let mut acked = 0u64;
    let mut sequence = 0;
    let failed = loop {
        match log.append(&batch(sequence), 0) {
            Ok(_) => {
                acked += 4;
                sequence += 1;
                assert!(sequence < 10_000, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(failed, Error::DiskFull { .. }), "{failed:?}");
    assert!(
        log.segment_count() >= 2,
        "segments rolled before the disk filled"
    );
    assert_eq!(read_all(&log, 0).len() as u64, acked);
    drop(log);
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!(read_all(&log, 0).len() as u64, acked, "lost 0 after reopen");
    println!(
        "acknowledged {acked}, lost 0, {} segments",
        log.segment_count()
    );
}
