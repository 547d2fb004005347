//! The gRPC services the broker serves.

pub(crate) mod admin;
pub(crate) mod data;
pub(crate) mod records;
