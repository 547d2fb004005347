//! pubsub-consumer-manager: durable subscriptions and consumer groups over topics.
//!
//! - [`cursor`]: one partition's delivery state (committed offset, leases, acks,
//!   redeliveries, delivery counts), pure and property-tested.
//! - [`assignment`]: sticky, balanced partition assignment for groups.
//! - [`store`]: the sled database; a commit is answered only after it is flushed.
//! - [`manager`]: subscribe, join, read, ack, nack, commit, seek, presence.
//! - [`stream`]: push delivery with credit-based flow control.
//! - [`history`]: history reads, dead-letter replay, keep-until-consumed deletion.
//! - [`service`] and [`server`]: the gRPC face and the background work.

pub mod assignment;
pub mod cursor;
pub mod error;
pub mod history;
pub mod manager;
pub mod options;
pub mod server;
pub mod service;
pub mod source;
pub mod store;
pub mod stream;
pub mod subscription;

pub use error::{Error, Result};
pub use manager::{Manager, ManagerConfig};
pub use server::{background, grpc_service, run};
