//! Opening a log: recovery of whatever a crash left in its directory.
//!
//! Closed segments are checked against their indexes (rebuilt when missing or
//! damaged; a corrupt closed segment fails the open) and must follow one another with
//! no gap; the last segment's tail is checked batch by batch and cut at the first torn
//! or corrupt batch. The idempotent producers' recent sequences are read back from the
//! newest batches, so a retry sent before the crash is still recognised.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::sync::SyncState;
use super::{Alterable, Clock, Log, Segments, sync_dir, system_clock};
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
        let (sealed, active) = recover_segments(dir, &config, clock())?;
        sync_dir(dir)?;
        let durable_offset = active.next_offset();
        let epochs = EpochCache::load(dir, durable_offset)?;
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
            failed: AtomicBool::new(false),
        })
    }
}

/// Opens the segments in `dir`: every one but the last as sealed, the last as active
/// (an empty active segment at offset 0 in an empty directory), checked to follow one
/// another with no gap.
fn recover_segments(
    dir: &Path,
    config: &LogConfig,
    now: i64,
) -> Result<(Vec<Arc<SealedSegment>>, ActiveSegment)> {
    let bases = list_segments(dir)?;
    let Some((&last, rest)) = bases.split_last() else {
        return Ok((Vec::new(), ActiveSegment::recover(dir, 0, config, now)?.0));
    };
    let mut sealed = Vec::with_capacity(rest.len());
    for &base in rest {
        let segment = SealedSegment::open(dir, base, config)?;
        check_contiguous(
            sealed.last().map(|s: &Arc<SealedSegment>| s.next_offset()),
            &segment,
        )?;
        sealed.push(Arc::new(segment));
    }
    let (active, _dropped) = ActiveSegment::recover(dir, last, config, now)?;
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
    Ok((sealed, active))
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
