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

pub mod admin;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod partitioner;
pub mod producer;
pub mod record;
pub mod routing;
pub mod subscriber;

pub use admin::{Admin, NewTopic};
pub use connection::Client;
pub use consumer::{Consumer, ConsumerConfig, StartPosition};
pub use error::{Error, Result};
pub use producer::{Acks, Delivery, Producer, ProducerConfig, RecordMetadata, now_ms};
pub use pubsub_proto::DEFAULT_ADDRESS;
pub use pubsub_proto::auth::Credentials;
pub use pubsub_proto::net::Link;
pub use pubsub_proto::v1::TopicConfig;
pub use pubsub_proto::v1::{DeliveredRecord, SubscriptionOptions};
pub use pubsub_storage::Compression;
pub use record::{ConsumerRecord, ProducerRecord};
pub use subscriber::{SubscriberStream, Subscriptions};
pub use tonic::Code;
