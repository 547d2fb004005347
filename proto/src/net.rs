//! The one transport setup of every pubsub connection: how an endpoint is built, the
//! pool of channels by address, the wire metadata keys, and which failed calls are
//! worth sending again.
//!
//! Clients, brokers (to their leaders and to the cluster managers) and the cluster
//! managers (to their Raft peers) all dial through [`endpoint`] and keep their
//! channels in a [`ChannelPool`], so every link has the same frame size, message
//! limits and keepalive, and a status means the same thing to every caller. TLS will
//! be configured here, once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{self, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::MAX_FRAME_BYTES;
use crate::auth::Credentials;
use crate::dial::Dialer;

/// A channel that adds the caller's credentials to every call: what every pubsub stub
/// is built on.
pub type Channel = InterceptedService<transport::Channel, Credentials>;

/// Metadata keys the servers set on statuses, read by clients without parsing text.
pub mod keys {
    /// On a not-leader UNAVAILABLE: the partition leader's client address.
    pub const LEADER_ADDRESS: &str = "pubsub-leader-address";
    /// On a consumer manager's UNAVAILABLE for a subscription it does not own: the
    /// address of the consumer manager that does.
    pub const OWNER_ADDRESS: &str = "pubsub-owner-address";
    /// On OUT_OF_RANGE: the partition's log start offset.
    pub const LOG_START_OFFSET: &str = "pubsub-log-start-offset";
    /// On OUT_OF_RANGE: the partition's log end offset.
    pub const LOG_END_OFFSET: &str = "pubsub-log-end-offset";
    /// On a consumer-manager refusal that a caller acts on by kind (the Kafka
    /// listener, choosing an error code): one of [`super::reasons`].
    pub const REASON: &str = "pubsub-reason";
}

/// Values of [`keys::REASON`].
pub mod reasons {
    /// A group member's generation is not the current one.
    pub const STALE_GENERATION: &str = "stale-generation";
    /// The caller is not a member of the group.
    pub const UNKNOWN_MEMBER: &str = "unknown-member";
    /// The partition does not exist in the subscription's topic.
    pub const NO_SUCH_PARTITION: &str = "no-such-partition";
    /// A commit above the partition's high watermark.
    pub const COMMIT_PAST_END: &str = "commit-past-end";
    /// The server refused the call because it does not serve the subscription right
    /// now (it is loading it, is not its owner, or its lease lapsed), and nothing the
    /// call did was acknowledged: the same call succeeds once the subscription is
    /// served again, here or at the owner named.
    pub const NOT_SERVING: &str = "not-serving";
}

/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keepalive: a peer that stops answering pings (paused, or cut off behind a
/// socket that stays open) is dropped within interval + timeout, so calls on it fail
/// and are retried elsewhere instead of hanging. Pings are answered by the peer's
/// HTTP/2 layer, not its request handlers, so a busy peer still answers them.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a keepalive ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most channels a pool keeps: bounds what a stream of changing addresses can make it
/// hold (it starts over past this).
const CHANNELS_MAX: usize = 1_024;

/// An address that is not `host:port` or an `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad address {address:?}: {reason}")]
pub struct InvalidAddress {
    /// The address given.
    pub address: String,
    /// Why it does not parse.
    pub reason: String,
}

/// The endpoint of `address` (`host:port`, or a URL) with the project's transport
/// settings: frame size, Nagle off, connect timeout and keepalive.
pub fn endpoint(address: &str) -> Result<Endpoint, InvalidAddress> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(url).map_err(|e| InvalidAddress {
        address: address.to_string(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Why [`ChannelPool::connect`] has no channel.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address does not parse.
    #[error(transparent)]
    Address(InvalidAddress),
    /// Nothing answered there.
    #[error(transparent)]
    Transport(transport::Error),
}

/// How a caller secures its links: the credentials every call carries, and TLS (the
/// CA it trusts, and its own certificate under mutual TLS).
#[derive(Clone, Debug, Default)]
pub struct Link {
    /// What every call carries.
    pub credentials: Credentials,
    /// TLS settings; `None`: plain TCP.
    pub tls: Option<ClientTlsConfig>,
    /// Opens connections in place of TCP (a simulated network); `None`: TCP.
    pub dialer: Option<Dialer>,
}

impl Link {
    /// Plain links whose calls carry `credentials`.
    pub fn with_credentials(credentials: Credentials) -> Link {
        Link {
            credentials,
            tls: None,
            dialer: None,
        }
    }
}

/// One lazily connected channel per address, shared by every caller: a channel
/// multiplexes their calls on one HTTP/2 connection. Every call on them carries the
/// pool's credentials, over TLS when the pool's link says so.
#[derive(Debug, Default)]
pub struct ChannelPool {
    channels: Mutex<HashMap<String, transport::Channel>>,
    link: Link,
}

impl ChannelPool {
    /// A pool whose links are secured as `link` says.
    pub fn new(link: Link) -> ChannelPool {
        ChannelPool {
            channels: Mutex::default(),
            link,
        }
    }

    /// The endpoint of `address` with the project's settings and this pool's TLS.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, InvalidAddress> {
        let Some(tls) = &self.link.tls else {
            return endpoint(address);
        };
        let url = if address.contains("://") {
            address.replacen("http://", "https://", 1)
        } else {
            format!("https://{address}")
        };
        endpoint(&url)?
            .tls_config(tls.clone())
            .map_err(|e| InvalidAddress {
                address: address.to_string(),
                reason: e.to_string(),
            })
    }

    /// `channel` with this pool's credentials added to every call.
    pub fn with_credentials(&self, channel: transport::Channel) -> Channel {
        InterceptedService::new(channel, self.link.credentials.clone())
    }

    /// The channel to `address`, created on first use with `customize` applied to the
    /// project's endpoint (a per-call timeout, say).
    pub fn channel_with(
        &self,
        address: &str,
        customize: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, InvalidAddress> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(self.with_credentials(channel.clone()));
        }
        let endpoint = customize(self.endpoint(address)?);
        let channel = match &self.link.dialer {
            Some(dialer) => endpoint.connect_with_connector_lazy(dialer.clone()),
            None => endpoint.connect_lazy(),
        };
        if channels.len() >= CHANNELS_MAX {
            channels.clear();
        }
        channels.insert(address.to_string(), channel.clone());
        Ok(self.with_credentials(channel))
    }

    /// A channel to `address` connected now (through the link's dialer, if any): for
    /// a caller that wants to know the address answers before it keeps the channel.
    pub async fn connect(&self, address: &str) -> Result<transport::Channel, ConnectError> {
        let endpoint = self.endpoint(address).map_err(ConnectError::Address)?;
        let connected = match &self.link.dialer {
            Some(dialer) => endpoint.connect_with_connector(dialer.clone()).await,
            None => endpoint.connect().await,
        };
        connected.map_err(ConnectError::Transport)
    }

    /// The channel to `address`, created on first use.
    pub fn channel(&self, address: &str) -> Result<Channel, InvalidAddress> {
        self.channel_with(address, |endpoint| endpoint)
    }

    /// Keeps an already connected channel for `address`.
    pub fn insert(&self, address: &str, channel: transport::Channel) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.insert(address.to_string(), channel);
    }

    /// How many addresses have a channel.
    pub fn len(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True before any channel was made.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a caller should do about a failed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The broker does not lead the partition; send it to `leader` if named, else
    /// look the leader up again.
    LeaderMoved {
        /// The leader's client address, when the broker knew it.
        leader: Option<String>,
    },
    /// The link broke or the server could not serve it right now: the same call may
    /// succeed on another node, or on this one a moment later.
    Retriable,
    /// The server refused it for a reason a retry does not change.
    Fatal,
}

/// The one classification of a failed call.
pub fn classify(status: &Status) -> Disposition {
    if let Some(leader) = leader_hint(status) {
        return Disposition::LeaderMoved {
            leader: Some(leader),
        };
    }
    if is_transient(status.code()) {
        Disposition::Retriable
    } else {
        Disposition::Fatal
    }
}

/// Codes a retry may cure: the server was unavailable, the link broke (h2 reports a
/// vanished peer as UNKNOWN or CANCELLED), no answer came in time, or the call was
/// aborted for a reason that passes (a produce stream ended behind a failed request).
/// Not RESOURCE_EXHAUSTED: a size limit or a full disk does not go away by sending the
/// same thing again a moment later.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

/// True if the call failed before it was sent: no connection could be made.
pub fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The leader address a broker named when it refused a call it does not lead.
pub fn leader_hint(status: &Status) -> Option<String> {
    address_in(status, keys::LEADER_ADDRESS)
}

/// The owner a consumer manager named when it refused a subscription it does not own.
pub fn owner_hint(status: &Status) -> Option<String> {
    address_in(status, keys::OWNER_ADDRESS)
}

fn address_in(status: &Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The [`keys::REASON`] the server put on a status, if any.
pub fn reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(keys::REASON)
        .and_then(|v| v.to_str().ok())
}

/// A `u64` the server put in the status metadata under `key`.
pub fn metadata_u64(status: &Status, key: &str) -> Option<u64> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        let mut moved = Status::unavailable("broker 2 is not the leader");
        moved
            .metadata_mut()
            .insert(keys::LEADER_ADDRESS, "b1:9392".parse().unwrap());
        assert_eq!(
            classify(&moved),
            Disposition::LeaderMoved {
                leader: Some("b1:9392".into())
            }
        );
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert_eq!(
                classify(&Status::new(code, "")),
                Disposition::Retriable,
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::OutOfRange,
        ] {
            assert_eq!(
                classify(&Status::new(code, "")),
                Disposition::Fatal,
                "{code:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_pool_keeps_one_channel_per_address() {
        let pool = ChannelPool::default();
        assert!(pool.is_empty());
        for _ in 0..10 {
            pool.channel("127.0.0.1:9").unwrap();
        }
        pool.channel("127.0.0.1:10").unwrap();
        assert_eq!(pool.len(), 2);
        assert!(pool.channel("not an address\u{0}").is_err());
    }

    #[test]
    fn numbers_in_metadata_are_read() {
        let mut status = Status::out_of_range("before the log start");
        status
            .metadata_mut()
            .insert(keys::LOG_START_OFFSET, "42".parse().unwrap());
        assert_eq!(metadata_u64(&status, keys::LOG_START_OFFSET), Some(42));
        assert_eq!(metadata_u64(&status, keys::LOG_END_OFFSET), None);
    }
}
