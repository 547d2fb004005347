//! pubsub-consumer-manager: durable subscriptions and consumer groups over topics.
//!
//! - `cursor`: one partition's delivery state (committed offset, leases, acks,
//!   redeliveries, delivery counts), pure and property-tested.
//! - `assignment`: sticky, balanced partition assignment for groups.
//! - `store`: the sled database; a commit is answered only after it is flushed.
//! - `commit`: group commit, one flush at a time for every subscription's writes.
//! - `manager`: subscriptions (subscribe, unsubscribe, load) and pull reads.
//! - `command`: the pure decisions of ack, nack, commit and seek over a
//!   subscription's state; `acks`, `seek`, `membership` and `describe` are their
//!   edges (checks, broker calls, answers).
//! - `persist`: the one write step (under the subscription's lock, then group
//!   commit).
//! - `delivery` and `redelivery`: claim, fetch, resolve and record new records;
//!   redeliveries and dead letters.
//! - `stream`: push delivery with credit-based flow control.
//! - `source` and `fetches`: the brokers; one fetch serves every reader of a
//!   partition position; `decoded`: a batch decoded once serves later readers.
//! - `history`: history reads and dead-letter replay; `consumed`:
//!   keep-until-consumed deletion.
//! - `undecodable`: batches that cannot be decoded: dead-lettered whole, or their
//!   partition stopped visibly.
//! - `incarnation`: subscriptions end with their topic's incarnation; positions
//!   past a partition's end are reset.
//! - `ownership`: which subscriptions this node serves when several consumer
//!   managers share them (journal partitions granted by the cluster managers).
//! - `supervisor`: a failed database is reopened and the manager reloaded from
//!   disk, without a restart; requests meanwhile get UNAVAILABLE.
//! - `service` and `server`: the gRPC face and the background work; `grpc.rs`
//!   is the one place an [`Error`] becomes a gRPC status.

#![warn(unreachable_pub)]

mod access_watch;
mod acks;
mod assignment;
mod command;
mod commit;
mod consumed;
mod cursor;
mod decoded;
mod delivery;
mod describe;
mod error;
mod fetches;
mod grpc;
mod history;
mod id_map;
mod incarnation;
mod journal;
mod lock;
mod manager;
mod membership;
mod metrics;
mod options;
mod ownership;
mod persist;
mod ranges;
mod redelivery;
mod seek;
mod server;
mod service;
mod source;
mod store;
mod stream;
mod subscription;
mod supervisor;
mod undecodable;

/// What `benches/owner.rs` drives: a subscription's decisions without I/O. Not a
/// stable API.
#[doc(hidden)]
pub mod bench_api;

pub use error::{Error, Result};
pub use manager::{Manager, ManagerConfig};
pub use ownership::Ownership;
pub use server::{background, grpc_service, run};
pub use service::ConsumerManagerService;
pub use source::LocalLog;
pub use supervisor::Supervisor;
