//! The one way the storage crate takes a `std::sync` lock.
//!
//! A lock is poisoned only when a thread panicked while holding it. Release builds
//! abort on panic (`panic = "abort"`), so a running broker never sees one; in tests
//! and debug builds the guard is taken as it is, so one panic shows where it happened
//! instead of spreading as errors through every later call. The log's writer lock is
//! the one place that asks whether it was poisoned: a write that panicked half-way
//! may have left the segment and its caches apart, so the log stops taking writes.

use std::sync::{LockResult, PoisonError};

/// The guard of a lock, poisoned or not.
pub(crate) fn recover<G>(locked: LockResult<G>) -> G {
    locked.unwrap_or_else(PoisonError::into_inner)
}
