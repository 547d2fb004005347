//! The client side of the `Raft` gRPC service: how this node reaches its peers, for
//! openraft's replication and votes and for forwarding writes to the leader.
//!
//! Each peer address gets one lazily connected tonic channel, shared by every caller.
//! Channels use HTTP/2 keepalive every 500 ms: without it a connection through a healed
//! network partition stays wedged, and the group would not recover. openraft
//! puts its own deadline on every RPC; the connect timeout keeps a dead address from
//! holding a call for long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use pubsub_proto::v1::RaftPayload;
use pubsub_proto::v1::raft_client::RaftClient;
use pubsub_proto::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::codec::{self, PAYLOAD_BYTES_MAX};
use super::{NodeId, TypeConfig};
use crate::error::{Error, Result};

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 keepalive interval: a dead or partitioned connection is noticed, and replaced,
/// within interval + timeout.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a keepalive ping may go unanswered.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most peer channels kept. The Raft group has a handful of members; the cap only stops a
/// stream of changing addresses from growing the map without end.
const CHANNELS_MAX: usize = 64;

/// Lazily connected channels to peers, by address. Cheap to clone.
#[derive(Clone, Default)]
pub struct Channels {
    by_address: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// The channel to `address` (`host:port`), created on first use.
    pub fn get(&self, address: &str) -> Result<Channel> {
        // The crate's one lock: a poisoned map (a panic elsewhere, seen only where
        // panics unwind) still holds whole channels, so it is taken as it is.
        let mut by_address = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = by_address.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::InvalidArgument(format!("bad peer address {address:?}: {e}")))?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        if by_address.len() >= CHANNELS_MAX {
            by_address.clear();
        }
        by_address.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// A `Raft` service client for `address`, with the message limits set.
    pub fn raft_client(&self, address: &str) -> Result<RaftClient<Channel>> {
        Ok(RaftClient::new(self.get(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Creates a [`Peer`] per replication target; handed to `openraft::Raft::new`.
pub struct NetworkFactory {
    channels: Channels,
}

impl NetworkFactory {
    /// A factory dialling through `channels`.
    pub fn new(channels: Channels) -> Self {
        NetworkFactory { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            address: node.addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// One peer as openraft sees it.
pub struct Peer {
    target: NodeId,
    address: String,
    channels: Channels,
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Peer {
    /// Sends `request` and returns the peer's `Result`, which travels JSON-encoded.
    async fn call<Req, Resp, E>(
        &self,
        method: Method,
        request: &Req,
    ) -> std::result::Result<std::result::Result<Resp, E>, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = codec::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .channels
            .raft_client(&self.address)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let payload = RaftPayload { data: data.into() };
        let reply = match method {
            Method::AppendEntries => client.append_entries(payload).await,
            Method::Vote => client.vote(payload).await,
            Method::InstallSnapshot => client.install_snapshot(payload).await,
        };
        let reply = reply.map_err(|status| {
            if status.code() == tonic::Code::Unavailable {
                // Connection refused or reset: openraft backs off before retrying.
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        codec::decode(&reply.into_inner().data, PAYLOAD_BYTES_MAX)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    fn remote<E: std::error::Error>(&self, error: E) -> RPCError<NodeId, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            BasicNode::new(&self.address),
            error,
        ))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> std::result::Result<
        AppendEntriesResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId>>,
    > {
        self.call(Method::AppendEntries, &rpc)
            .await?
            .map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Method::InstallSnapshot, &rpc)
            .await?
            .map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>
    {
        self.call(Method::Vote, &rpc)
            .await?
            .map_err(|e| self.remote(e))
    }
}
