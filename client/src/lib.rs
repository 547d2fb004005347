//! pubsub-client: the Rust SDK for pubsub.
//!
//! - [`Client`]: connections to a cluster, from one address or a bootstrap list
//!   (`"a:9392,b:9392"`), shared by everything below. It learns the other brokers
//!   from the metadata and sends each partition's reads and writes to its leader.
//! - [`Admin`]: create, delete, list and describe topics.
//! - [`Producer`]: batches records per partition (size and linger), compresses them,
//!   keeps several batches in flight per partition without reordering, retries, and
//!   reports each record's partition and offset.
//! - [`Consumer`]: reads assigned partitions from earliest, latest, an offset or a
//!   timestamp, and follows new records with long polls.
//! - [`Subscriptions`]: durable subscriptions and groups, through the consumer manager.
//! - [`Router`] and [`decode_fetched`]: the leader-routed call and the fetch decoder
//!   the consumer is built on, for services (the consumer manager) that fetch
//!   partitions themselves.
//!
//! The modules are internal; everything an application names is re-exported here.
//!
//! ```no_run
//! # async fn demo() -> pubsub_client::Result<()> {
//! use pubsub_client::{Client, Producer, ProducerConfig, ProducerRecord};
//! let client = Client::connect("127.0.0.1:9392").await?;
//! let producer = Producer::new(client, "orders", ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::keyed("customer-1", "hello")).await?;
//! let stored = delivery.wait().await?;
//! println!("partition {} offset {:?}", stored.partition, stored.offset);
//! # Ok(()) }
//! ```

#![warn(unreachable_pub)]

mod admin;
mod connection;
mod consumer;
mod error;
mod producer;
mod record;
mod routing;
mod subscriber;

pub use admin::{Admin, NewTopic};
pub use connection::Client;
pub use consumer::{Consumer, ConsumerConfig, StartPosition};
pub use error::{Error, Result};
pub use producer::{Acks, Delivery, Producer, ProducerConfig, RecordMetadata, now_ms};
pub use pubsub_proto::DEFAULT_ADDRESS;
pub use pubsub_proto::auth::Credentials;
pub use pubsub_proto::ids::PartitionId;
pub use pubsub_proto::net::Link;
pub use pubsub_proto::v1::TopicConfig;
pub use pubsub_proto::v1::{DeliveredRecord, SubscriptionOptions};
pub use pubsub_storage::Compression;
pub use record::{ConsumerRecord, ProducerRecord, Undecodable, decode_fetched};
pub use routing::Router;
pub use subscriber::{SubscriberStream, Subscriptions};
