//! The one way the consumer manager takes a `std::sync` lock.
//!
//! A lock is poisoned only when a thread panicked while holding it. Release builds
//! abort on panic (`panic = "abort"`), so a running consumer manager never sees one;
//! in tests and debug builds the guard is taken as it is, so one panic shows where it
//! happened instead of spreading as errors through every later request. Each lock
//! here guards in-memory state that is rebuilt from the database on a reload.

use std::sync::{LockResult, PoisonError};

/// The guard of a lock, poisoned or not.
pub(crate) fn recover<G>(locked: LockResult<G>) -> G {
    locked.unwrap_or_else(PoisonError::into_inner)
}
