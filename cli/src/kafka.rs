//! The Kafka-protocol listener's flags, shared by `pubsubd broker` and `standalone`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use pubsub_broker::KafkaListener;

use crate::server::advertised_address_of;

/// Where standalone serves Kafka clients unless told otherwise: Kafka's own port.
pub const DEFAULT_KAFKA_ADDRESS: &str = "127.0.0.1:9092";

/// The Kafka listener flags of a broker.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Serve Kafka clients (the Kafka wire protocol) on this address; `off` serves
    /// none [standalone: 127.0.0.1:9092, skipped with a warning if in use; broker: off].
    #[arg(long, env = "PUBSUB_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// Address Kafka clients are told to connect to [default: the Kafka listen
    /// address].
    #[arg(long, env = "PUBSUB_KAFKA_ADVERTISED_ADDRESS")]
    pub kafka_advertised_address: Option<String>,
    /// The consumer manager's gRPC address, which serves Kafka consumer groups
    /// (FindCoordinator, JoinGroup, OffsetCommit, ...) [standalone: its own; broker:
    /// none, and Kafka clients get no group APIs].
    #[arg(long, env = "PUBSUB_KAFKA_CONSUMER_MANAGER")]
    pub kafka_consumer_manager: Option<String>,
}

impl KafkaArgs {
    /// Binds the listener. With no `--kafka-listen`, standalone (`default_on`) tries
    /// Kafka's port on loopback and runs without a Kafka listener (logging why) when
    /// that port is taken; an address that was asked for must bind. Groups go to
    /// `--kafka-consumer-manager`, else to `own_consumer_manager` (standalone's).
    pub fn bind(
        &self,
        default_on: bool,
        own_consumer_manager: Option<String>,
    ) -> anyhow::Result<Option<KafkaListener>> {
        let socket = match self.kafka_listen.as_deref() {
            Some("off") => return Ok(None),
            None if !default_on => return Ok(None),
            None => match std::net::TcpListener::bind(DEFAULT_KAFKA_ADDRESS) {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::warn!(address = DEFAULT_KAFKA_ADDRESS, error = %e, "Kafka listener not started: its default address is in use (set --kafka-listen to another)");
                    return Ok(None);
                }
            },
            Some(text) => {
                let address: SocketAddr = text.parse().with_context(|| {
                    format!(
                        "--kafka-listen {text:?} is not an address like 127.0.0.1:9092 (or off)"
                    )
                })?;
                std::net::TcpListener::bind(address)
                    .with_context(|| format!("cannot listen for Kafka clients on {address}"))?
            }
        };
        let bound = socket.local_addr()?;
        let advertised = advertised_address_of(
            "--kafka-advertised-address",
            self.kafka_advertised_address.clone(),
            bound,
            "Kafka listener",
        )?;
        tracing::info!(listen = %bound, advertised = %advertised, "kafka listener bound");
        Ok(Some(KafkaListener {
            socket: Arc::new(socket),
            advertised_address: advertised,
            consumer_manager: self.kafka_consumer_manager.clone().or(own_consumer_manager),
        }))
    }
}
