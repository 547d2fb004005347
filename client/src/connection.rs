//! Opening a channel to a server with the project's transport settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pubsub_proto::v1::admin_client::AdminClient;
use pubsub_proto::v1::broker_client::BrokerClient;
use pubsub_proto::v1::consumer_manager_client::ConsumerManagerClient;
use pubsub_proto::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long to wait for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive: a wedged connection is noticed within interval + timeout, and
/// long-lived streams need no whole-stream deadline.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection to a pubsub cluster, cheap to clone and share.
///
/// Admin calls go to the bootstrap server; data calls go to each partition's leader,
/// over channels kept in a pool shared by all clones.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    address: String,
    pool: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Client {
    /// Connects to `address` (`host:port`, or a full `http://` URL).
    pub async fn connect(address: &str) -> Result<Client> {
        let channel = endpoint(address)?
            .connect()
            .await
            .map_err(|e| Error::Transport {
                address: address.to_string(),
                message: source_chain(&e),
            })?;
        let pool = HashMap::from([(address.to_string(), channel.clone())]);
        Ok(Client {
            channel,
            address: address.to_string(),
            pool: Arc::new(Mutex::new(pool)),
        })
    }

    /// A Broker stub for the broker at `address` (connected lazily, then reused).
    pub fn broker_stub_at(&self, address: &str) -> Result<BrokerClient<Channel>> {
        let mut pool = self.pool.lock().map_err(|_| Error::Closed)?;
        let channel = match pool.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = endpoint(address)?.connect_lazy();
                pool.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(BrokerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The address this client dialled.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A raw Admin stub with the message limits set.
    pub fn admin_stub(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A raw ConsumerManager stub with the message limits set.
    pub fn consumer_manager_stub(&self) -> ConsumerManagerClient<Channel> {
        ConsumerManagerClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A raw Broker stub with the message limits set.
    pub fn broker_stub(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// An endpoint with the project's transport settings.
fn endpoint(address: &str) -> Result<Endpoint> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| Error::InvalidArgument(format!("bad server address {address:?}: {e}")))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// The error and its causes on one line ("a: b: c").
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
