//! Opening a log: recovery of whatever a crash left in its directory.
//!
//! Closed segments below the recovery point are checked against their indexes
//! (rebuilt when missing or damaged; a corrupt one fails the open) and must follow
//! one another with no gap; closed segments past it (sealed under fsync `interval` or
//! `never` and perhaps not flushed before a crash) are checked batch by batch, and the
//! log is cut at the first damaged one; the last segment's tail is checked batch by
//! batch and cut at the first torn or corrupt batch. The idempotent producers' recent
//! sequences are read back from the newest batches, so a retry sent before the crash
//! is still recognised.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::flusher::Flusher;
use super::sync::SyncState;
use super::{
    Alterable, Clock, Log, Segments, recovery_point, remove_segment_files, sync_dir, system_clock,
};
use crate::batch;
use crate::config::LogConfig;
use crate::epochs::EpochCache;
use crate::error::{Error, IoContext, Result};
use crate::producers::ProducerStates;
use crate::segment::{self, ActiveSegment, SealedSegment};

/// Bytes at the end of the newest closed segment scanned for producer state on open.
const PRODUCER_SCAN_BYTES: usize = 16 << 20;

impl Log {
    /// Opens (or creates) the log in `dir` with the system clock.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        Log::open_with_clock(dir, config, system_clock())
    }

    /// Opens (or creates) the log in `dir`, recovering from whatever a crash left.
    ///
    /// Closed segments are checked against their indexes (rebuilt when missing or
    /// damaged; a corrupt closed segment fails the open); the last segment's tail is
    /// checked batch by batch and cut at the first torn or corrupt batch.
    pub fn open_with_clock(dir: &Path, config: LogConfig, clock: Clock) -> Result<Log> {
        config.validate()?;
        std::fs::create_dir_all(dir).at(dir)?;
        let checkpoint = recovery_point::load(dir)?;
        let Recovered {
            sealed,
            active,
            unsynced,
        } = recover_segments(dir, &config, clock(), checkpoint)?;
        sync_dir(dir)?;
        // Checked whole, but maybe still only in the page cache: make them durable
        // before the recovery point moves past them.
        for segment in &unsynced {
            segment.sync_files()?;
        }
        let recovery_point = store_recovery_point(dir, checkpoint, active.base_offset());
        let failed = Arc::new(AtomicBool::new(false));
        let durable_offset = active.next_offset();
        let epochs = EpochCache::load(dir, durable_offset, || epochs_in(&sealed, &active))?;
        let producers = recover_producers(sealed.last().map(|s| &**s), &active);
        Ok(Log {
            dir: dir.to_path_buf(),
            alterable: RwLock::new(Alterable {
                max_batch_bytes: config.max_batch_bytes,
                fsync: config.fsync,
            }),
            config,
            clock,
            segments: RwLock::new(Segments {
                sealed,
                active: Arc::new(active),
            }),
            writer: Mutex::new(()),
            epochs: Mutex::new(epochs),
            producers: Mutex::new(producers),
            sync: Mutex::new(SyncState {
                durable_offset,
                running: false,
                generation: 0,
                last_sync: Instant::now(),
            }),
            synced: Condvar::new(),
            flusher: Arc::new(Flusher::new(
                dir.to_path_buf(),
                recovery_point,
                failed.clone(),
            )),
            failed,
        })
    }
}

/// Moves the checkpoint to `point` (every closed segment is now on disk) and returns
/// what the file then says, `u64::MAX` for no file (every closed segment trusted). A
/// checkpoint that cannot be written (a full disk) keeps the old one: the next open
/// checks more segments than it needs, and the log opens all the same.
fn store_recovery_point(dir: &Path, checkpoint: Option<u64>, point: u64) -> u64 {
    if checkpoint == Some(point) {
        return point;
    }
    match recovery_point::store(dir, point) {
        Ok(()) => point,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot move the recovery point; the next open checks more segments");
            checkpoint.unwrap_or(u64::MAX)
        }
    }
}

/// The segments recovery opened.
struct Recovered {
    sealed: Vec<Arc<SealedSegment>>,
    active: ActiveSegment,
    /// The sealed segments past the recovery point: checked whole, maybe not on disk.
    unsynced: Vec<Arc<SealedSegment>>,
}

/// Opens the segments in `dir`: every one but the last as sealed, the last as active
/// (an empty active segment at offset 0 in an empty directory), checked to follow one
/// another with no gap.
///
/// A sealed segment that ends at or below `recovery_point` (all of them when there is
/// no checkpoint) was synced at its seal: damage there fails the open. One past it
/// may have lost pages in a crash: it is checked batch by batch, and the first
/// damaged one becomes the active segment (its tail cut) with every later one removed.
fn recover_segments(
    dir: &Path,
    config: &LogConfig,
    now: i64,
    recovery_point: Option<u64>,
) -> Result<Recovered> {
    let bases = list_segments(dir)?;
    let Some(&last) = bases.last() else {
        let (active, _) = ActiveSegment::recover(dir, 0, config, now)?;
        return Ok(Recovered {
            sealed: Vec::new(),
            active,
            unsynced: Vec::new(),
        });
    };
    let mut sealed: Vec<Arc<SealedSegment>> = Vec::with_capacity(bases.len());
    let mut unsynced = Vec::new();
    let mut active_base = last;
    for pair in bases.windows(2) {
        let (base, end) = (pair[0], pair[1]);
        let synced = recovery_point.is_none_or(|point| end <= point);
        let segment = if synced {
            SealedSegment::open(dir, base, config)?
        } else if let Some(segment) = SealedSegment::open_checked(dir, base, config)? {
            segment
        } else {
            active_base = base;
            break;
        };
        check_contiguous(sealed.last().map(|s| s.next_offset()), &segment)?;
        let segment = Arc::new(segment);
        if !synced {
            unsynced.push(segment.clone());
        }
        sealed.push(segment);
    }
    if active_base != last {
        cut_after(dir, &bases, active_base)?;
    }
    let (active, _dropped) = ActiveSegment::recover(dir, active_base, config, now)?;
    if let Some(prev) = sealed.last()
        && prev.next_offset() != active.base_offset()
    {
        return Err(Error::SegmentCorrupt {
            path: prev.path().to_path_buf(),
            position: prev.size(),
            reason: format!(
                "segment ends at offset {} but the next one starts at {}",
                prev.next_offset(),
                active.base_offset()
            ),
        });
    }
    Ok(Recovered {
        sealed,
        active,
        unsynced,
    })
}

/// Removes every segment after `base`, newest first: recovery found `base` damaged
/// past the recovery point, and nothing after a lost page can be kept.
fn cut_after(dir: &Path, bases: &[u64], base: u64) -> Result<()> {
    let later: Vec<u64> = bases.iter().copied().filter(|&b| b > base).collect();
    for &doomed in later.iter().rev() {
        remove_segment_files(dir, doomed)?;
    }
    tracing::warn!(
        path = %segment::log_path(dir, base).display(),
        removed_segments = later.len(),
        "a segment sealed after the recovery point is damaged (lost in a crash under fsync interval or never); the log is cut there"
    );
    Ok(())
}

/// The idempotent producers' recent sequences, read from the active segment and the
/// newest closed one (`previous`).
fn recover_producers(previous: Option<&SealedSegment>, active: &ActiveSegment) -> ProducerStates {
    // The newest closed segment too: batches a producer had in flight when the
    // segment rolled are still ones its retries may repeat.
    let mut producers = ProducerStates::default();
    // Only its tail (batches still in flight at the roll are near its end), found
    // through the offset index, so a 1 GiB segment is not read whole at start.
    let previous = previous.map_or(&[][..], |segment| {
        let bytes = segment.bytes();
        let from = bytes.len().saturating_sub(PRODUCER_SCAN_BYTES);
        let start = segment
            .offset_entries()
            .iter()
            .map(|e| e.position as usize)
            .filter(|&p| p <= from)
            .max()
            .unwrap_or(0);
        bytes.get(start..).unwrap_or_default()
    });
    for bytes in [previous, active.bytes()] {
        for item in batch::batches(bytes) {
            let Ok((header, _)) = item else { break };
            producers.record(&header);
        }
    }
    producers
}

/// Where each leader epoch starts in the log, from its batches' headers: what a
/// missing or damaged leader-epoch checkpoint is rebuilt from (the whole log is read,
/// but only then).
fn epochs_in(sealed: &[Arc<SealedSegment>], active: &ActiveSegment) -> Vec<(i32, u64)> {
    let segments = sealed.iter().map(|s| s.bytes()).chain([active.bytes()]);
    let batches = segments
        .flat_map(|bytes| batch::batches(bytes).map_while(|b| b.ok()))
        .map(|(header, _)| (header.leader_epoch, header.base_offset));
    crate::epochs::starts(batches)
}

/// A closed segment must start exactly where the one before it ends.
fn check_contiguous(previous_end: Option<u64>, segment: &SealedSegment) -> Result<()> {
    match previous_end {
        Some(end) if end != segment.base_offset() => Err(Error::SegmentCorrupt {
            path: segment.path().to_path_buf(),
            position: 0,
            reason: format!(
                "segment starts at offset {} but the previous one ends at {end}",
                segment.base_offset()
            ),
        }),
        _ => Ok(()),
    }
}

/// Base offsets of the segments in `dir`, sorted; removes index files without a log.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let Some(base) = segment::parse_base_offset(stem) else {
            continue;
        };
        match ext {
            "log" => logs.push(base),
            "index" | "timeindex" => indexes.push((base, path)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(logs)
}
