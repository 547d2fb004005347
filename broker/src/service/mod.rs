//! The gRPC services the broker serves.

pub mod admin;
pub mod data;
