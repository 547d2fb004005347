//! pubsub-consumer-manager: durable subscriptions and consumer groups over topics.
//!
//! - `cursor`: one partition's delivery state (committed offset, leases, acks,
//!   redeliveries, delivery counts), pure and property-tested.
//! - `assignment`: sticky, balanced partition assignment for groups.
//! - `store`: the sled database; a commit is answered only after it is flushed.
//! - `manager`: subscribe, join, read, ack, nack, commit, seek, presence.
//! - `delivery` and `redelivery`: claim, fetch, resolve and record new records;
//!   redeliveries and dead letters.
//! - `stream`: push delivery with credit-based flow control.
//! - `history`: history reads, dead-letter replay, keep-until-consumed deletion.
//! - `undecodable`: batches that cannot be decoded: dead-lettered whole, or their
//!   partition stopped visibly.
//! - `incarnation`: subscriptions end with their topic's incarnation; positions
//!   past a partition's end are reset.
//! - `supervisor`: a failed database is reopened and the manager reloaded from
//!   disk, without a restart; requests meanwhile get UNAVAILABLE.
//! - `service` and `server`: the gRPC face and the background work; `grpc.rs`
//!   is the one place an [`Error`] becomes a gRPC status.

#![warn(unreachable_pub)]

mod access_watch;
mod assignment;
mod cursor;
mod delivery;
mod error;
mod grpc;
mod history;
mod incarnation;
mod lock;
mod manager;
mod metrics;
mod options;
mod redelivery;
mod server;
mod service;
mod source;
mod store;
mod stream;
mod subscription;
mod supervisor;
mod undecodable;

pub use error::{Error, Result};
pub use manager::{Manager, ManagerConfig};
pub use server::{background, grpc_service, run};
pub use service::ConsumerManagerService;
pub use supervisor::Supervisor;
