//! Connections to a pubsub cluster: a bootstrap list, one channel per broker, and
//! calls that move on to another broker when one cannot be reached.
//!
//! A client starts from one or more bootstrap addresses (`a:9392,b:9392`) and learns
//! every broker's address from the metadata it reads (`DescribeTopic` names the
//! brokers of a topic). Admin and metadata calls go to the broker that answered last
//! and move on to the next known one when it is down; data calls go to each
//! partition's leader (see `routing.rs`). So a dead bootstrap server costs one
//! refused connection, not the client.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pubsub_proto::MAX_MESSAGE_BYTES;
use pubsub_proto::net::{self, Channel, ChannelPool, Link};
use pubsub_proto::v1::admin_client::AdminClient;
use pubsub_proto::v1::broker_client::BrokerClient;
use pubsub_proto::v1::consumer_manager_client::ConsumerManagerClient;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use crate::error::{Error, Result};

/// Deadline of one metadata read (describe, list) on one broker: a broker that is
/// paused accepts connections but answers nothing, and the next one should be asked.
const METADATA_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most broker addresses a client remembers: bounds what metadata can make it keep.
const ADDRESSES_MAX: usize = 1_024;

/// Whether a call may be sent again to another broker after its link failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A read: safe to send anywhere again, whatever happened to the first attempt.
    /// Each attempt but the last has a deadline, so a paused broker does not hold it.
    Idempotent,
    /// A change: sent again only if the first attempt never left (no connection).
    OnlyIfNotSent,
}

/// A connection to a pubsub cluster, cheap to clone and share.
///
/// Admin calls go to the broker that answered last (a bootstrap server first); data
/// calls go to each partition's leader, over channels kept in a pool shared by all
/// clones.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Every broker address known: the bootstrap list, then those the metadata named.
    addresses: Mutex<Vec<String>>,
    /// Where admin calls go first: the address that answered last.
    preferred: Mutex<String>,
    /// One channel per broker address.
    pool: ChannelPool,
}

impl Client {
    /// Connects to the first reachable server of `servers`: one `host:port` (or
    /// `http://` URL), or a comma-separated bootstrap list of them.
    pub async fn connect(servers: &str) -> Result<Client> {
        Client::connect_any(parse_servers(servers)?).await
    }

    /// Connects to `servers` as [`Client::connect`] does, every call carrying
    /// `credentials` (a principal's bearer token: `Credentials::bearer(token)`).
    pub async fn connect_with(servers: &str, link: Link) -> Result<Client> {
        connect_first(parse_servers(servers)?, link).await
    }

    /// Connects to the first reachable address of `addresses`, in order, and keeps
    /// the others to fall back on.
    pub(crate) async fn connect_any<I, S>(addresses: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let addresses = addresses.into_iter().map(Into::into).collect();
        connect_first(addresses, Link::default()).await
    }

    /// A Broker stub for the broker at `address` (connected lazily, then reused).
    pub fn broker_stub_at(&self, address: &str) -> Result<BrokerClient<Channel>> {
        Ok(BrokerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The address admin calls go to first: the server that answered last.
    pub(crate) fn address(&self) -> String {
        self.shared
            .preferred
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Every broker address this client knows: the bootstrap list, then the brokers
    /// the metadata named.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.shared
            .addresses
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Remembers broker addresses named by the metadata, to fall back on later.
    pub(crate) fn learn<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) {
        let Ok(mut known) = self.shared.addresses.lock() else {
            return;
        };
        for address in addresses {
            if known.len() < ADDRESSES_MAX && !known.iter().any(|k| k == address) {
                known.push(address.to_string());
            }
        }
    }

    /// A raw Admin stub with the message limits set, on the preferred server.
    pub fn admin_stub(&self) -> AdminClient<Channel> {
        admin(self.preferred_channel())
    }

    /// A raw ConsumerManager stub with the message limits set, on the server at
    /// `address` (connected lazily, then reused).
    pub(crate) fn consumer_manager_stub_at(
        &self,
        address: &str,
    ) -> Result<ConsumerManagerClient<Channel>> {
        Ok(ConsumerManagerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A raw Broker stub with the message limits set, on the preferred server.
    pub fn broker_stub(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.preferred_channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs an Admin call on the preferred server, then on each other known one while
    /// the link fails (as `retry` allows); the server that answers becomes preferred.
    pub(crate) async fn on_any_admin<T, F, Fut>(&self, retry: Retry, call: F) -> Result<T>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let preferred = self.address();
        let mut order = vec![preferred.clone()];
        order.extend(self.addresses().into_iter().filter(|a| *a != preferred));
        let mut last = None;
        let count = order.len();
        for (index, address) in order.into_iter().enumerate() {
            let attempt = call(admin(self.channel(&address)?));
            // The last server left is waited for: there is nowhere else to go.
            let outcome = match retry {
                Retry::Idempotent if index + 1 < count => {
                    tokio::time::timeout(METADATA_CALL_TIMEOUT, attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Status::deadline_exceeded(format!(
                                "no answer from {address} within {METADATA_CALL_TIMEOUT:?}"
                            )))
                        })
                }
                Retry::Idempotent | Retry::OnlyIfNotSent => attempt.await,
            };
            match outcome {
                Ok(response) => {
                    if let Ok(mut slot) = self.shared.preferred.lock() {
                        *slot = address;
                    }
                    return Ok(response.into_inner());
                }
                Err(status) if may_try_elsewhere(&status, retry) => {
                    tracing::debug!(address = %address, error = %status.message(), "no answer; trying the next server");
                    last = Some(if net::never_sent(&status) {
                        Error::Transport {
                            address,
                            message: status_chain(&status),
                        }
                    } else {
                        Error::from(status)
                    });
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(last.unwrap_or(Error::Closed))
    }

    fn preferred_channel(&self) -> Channel {
        let address = self.address();
        match self.channel(&address) {
            Ok(channel) => channel,
            // The preferred address was connected once, so it parses; this is unreachable
            // but not worth a panic: a channel to nowhere fails each call instead.
            Err(_) => self
                .shared
                .pool
                .with_credentials(Endpoint::from_static("http://0.0.0.0:0").connect_lazy()),
        }
    }

    /// The pooled channel to `address`, created (lazily connected) on first use.
    fn channel(&self, address: &str) -> Result<Channel> {
        self.shared
            .pool
            .channel(address)
            .map_err(|e| Error::InvalidArgument(format!("server: {e}")))
    }
}

/// Connects to the first reachable address of `addresses`, in order.
async fn connect_first(addresses: Vec<String>, link: Link) -> Result<Client> {
    if addresses.is_empty() {
        return Err(Error::InvalidArgument("no server address given".into()));
    }
    let pool = ChannelPool::new(link);
    let mut failures = Vec::new();
    for address in &addresses {
        match pool.connect(address).await {
            Err(net::ConnectError::Address(e)) => {
                return Err(Error::InvalidArgument(format!("server: {e}")));
            }
            Ok(channel) => {
                pool.insert(address, channel);
                return Ok(Client {
                    shared: Arc::new(Shared {
                        preferred: Mutex::new(address.clone()),
                        addresses: Mutex::new(addresses.clone()),
                        pool,
                    }),
                });
            }
            Err(net::ConnectError::Transport(e)) => failures.push(source_chain(&e)),
        }
    }
    failures.dedup();
    Err(Error::Transport {
        address: addresses.join(","),
        message: failures.join("; "),
    })
}

/// Splits a bootstrap list (`a:9392, b:9392`) into addresses.
pub(crate) fn parse_servers(servers: &str) -> Result<Vec<String>> {
    let addresses: Vec<String> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if addresses.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no server address in {servers:?}"
        )));
    }
    Ok(addresses)
}

fn admin(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// True if a call that failed with `status` may go to another broker: it never left
/// (no connection), or it is a read and the link broke, the broker did not answer in
/// time, or it could not serve it right now (INTERNAL too: h2 reports some broken
/// links so, and a read is safe to repeat).
fn may_try_elsewhere(status: &Status, retry: Retry) -> bool {
    net::never_sent(status)
        || (retry == Retry::Idempotent
            && (net::is_transient(status.code()) || status.code() == Code::Internal))
}

/// The status message and the causes of its source, on one line.
fn status_chain(status: &Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => format!("{}: {}", status.message(), source_chain(source)),
        None => status.message().to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_list_is_split_on_commas_and_trimmed() {
        assert_eq!(
            parse_servers("a:1, b:2,,c:3 ").unwrap(),
            ["a:1", "b:2", "c:3"]
        );
        assert_eq!(parse_servers("a:1").unwrap(), ["a:1"]);
        assert!(parse_servers(" , ").is_err());
    }

    #[tokio::test]
    async fn connect_skips_dead_servers_and_fails_naming_them_all_when_none_answers() {
        let dead = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let (a, b) = (dead(), dead());
        let error = Client::connect(&format!("{a},{b}")).await.unwrap_err();
        let Error::Transport { address, .. } = error else {
            panic!("expected a transport error, got {error:?}");
        };
        assert_eq!(address, format!("{a},{b}"), "every address tried is named");
    }
}
