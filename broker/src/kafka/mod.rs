//! The Kafka-protocol listener: Kafka clients (librdkafka, the Java client,
//! kafka-python, kcat) produce to and fetch from this broker's partitions as they would
//! from a Kafka broker.
//!
//! The wire format comes from the `kafka-protocol` crate. Partitions already hold Kafka
//! RecordBatch v2, so Produce hands a request's batches to the same append as gRPC
//! (validated, stamped, stored as sent) and Fetch answers with the bytes of the log.
//! Metadata names each partition's leader at its Kafka address, which brokers register
//! with the cluster manager beside their gRPC address.
//!
//! - `conn`: one connection: framing, the request header, answers in request order.
//! - `versions`: which APIs and versions are served; ApiVersions.
//! - `sasl`: SASL/PLAIN with a token as the password, when authentication is on.
//! - `metadata`, `produce`, `fetch`, `offsets`, `admin`: the APIs.
//! - `groups`: consumer groups, served by the consumer manager.
//! - `codes`: broker errors as Kafka error codes.

mod admin;
mod codes;
mod conn;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod sasl;
mod versions;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use self::groups::GroupLink;
use crate::broker::Broker;

/// Accepts Kafka connections on `listener` (TLS when the broker's gRPC port uses it)
/// until the task is dropped; each connection runs in its own task.
pub(crate) async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "kafka listener listening");
    let config = broker.config();
    let tls = config.security.server_tls.clone();
    let groups = config
        .kafka
        .as_ref()
        .and_then(|k| k.consumer_manager.clone())
        .map(|address| Arc::new(GroupLink::new(address, config.security.link.tls.clone())));
    if groups.is_none() {
        tracing::info!(
            "kafka consumer groups are not served: no consumer manager given (--kafka-consumer-manager)"
        );
    }
    let limit = pubsub_proto::serve::ConnectionLimit::new(config.security.max_connections);
    let mut incoming = pubsub_proto::serve::incoming(listener, tls);
    while let Some(accepted) = incoming.next().await {
        match accepted {
            Ok(stream) => {
                // Over the cap the connection is closed: Kafka clients reconnect with
                // their backoff.
                let Some(place) = limit.place() else {
                    continue;
                };
                let serving = conn::serve(broker.clone(), groups.clone(), stream);
                tokio::spawn(async move {
                    serving.await;
                    drop(place);
                });
            }
            Err(e) => tracing::debug!(error = %e, "kafka connection not accepted"),
        }
    }
}
