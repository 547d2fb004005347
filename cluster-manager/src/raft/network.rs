//! The client side of the `Raft` gRPC service: how this node reaches its peers, for
//! openraft's replication and votes and for forwarding writes to the leader.
//!
//! Each peer address gets one lazily connected tonic channel, shared by every caller.
//! Channels use the project's HTTP/2 keepalive (`pubsub_proto::net`): without it a
//! connection through a healed network partition stays wedged, and the group would
//! not recover. openraft
//! puts its own deadline on every RPC; the connect timeout keeps a dead address from
//! holding a call for long.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use pubsub_proto::MAX_MESSAGE_BYTES;
use pubsub_proto::net::{Channel, ChannelPool, Link};
use pubsub_proto::v1::RaftPayload;
use pubsub_proto::v1::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{self, PAYLOAD_BYTES_MAX};
use super::{NodeId, TypeConfig};
use crate::error::{Error, Result};

/// Lazily connected channels to peers, by address (the project's one endpoint
/// setup, `pubsub_proto::net`). Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Channels {
    pool: Arc<ChannelPool>,
}

impl Channels {
    /// Channels over links secured as `link` says.
    pub(crate) fn new(link: Link) -> Channels {
        Channels {
            pool: Arc::new(ChannelPool::new(link)),
        }
    }

    /// The channel to `address` (`host:port`), created on first use.
    pub(crate) fn get(&self, address: &str) -> Result<Channel> {
        self.pool
            .channel(address)
            .map_err(|e| Error::InvalidArgument(format!("raft peer: {e}")))
    }

    /// A `Raft` service client for `address`, with the message limits set.
    pub(crate) fn raft_client(&self, address: &str) -> Result<RaftClient<Channel>> {
        Ok(RaftClient::new(self.get(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Creates a [`Peer`] per replication target; handed to `openraft::Raft::new`.
pub(crate) struct NetworkFactory {
    channels: Channels,
}

impl NetworkFactory {
    /// A factory dialling through `channels`.
    pub(crate) fn new(channels: Channels) -> Self {
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
pub(crate) struct Peer {
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
