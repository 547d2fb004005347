//! The server side of the `Raft` service: openraft RPCs from peers, and writes forwarded
//! by followers.
//!
//! Each request and reply is JSON in a `bytes` field (see `raft/codec.rs`). A Raft RPC's
//! reply is the JSON of openraft's `Result`, so the caller gets openraft's own error back;
//! gRPC statuses mean the request itself was unreadable. A forwarded write's errors are
//! the statuses the leader would have given the client.

use std::sync::Arc;

use openraft::raft::InstallSnapshotRequest;
use pubsub_proto::v1::RaftPayload;
use pubsub_proto::v1::raft_server::Raft;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::command::CommandError;
use crate::error::Error;
use crate::manager::{LeaderRequest, Manager};
use crate::raft::TypeConfig;
use crate::raft::codec::{self, PAYLOAD_BYTES_MAX, SNAPSHOT_BYTES_MAX};

/// The `Raft` service of one node.
pub(crate) struct RaftService {
    manager: Arc<Manager>,
}

impl RaftService {
    /// Serves Raft traffic for `manager`'s node.
    pub(crate) fn new(manager: Arc<Manager>) -> Self {
        RaftService { manager }
    }
}

fn decode<T: DeserializeOwned>(
    request: Request<RaftPayload>,
    what: &'static str,
) -> Result<T, Status> {
    codec::decode(&request.into_inner().data, PAYLOAD_BYTES_MAX)
        .map_err(|source| Status::from(Error::Codec { what, source }))
}

fn encode<T: Serialize>(reply: &T, what: &'static str) -> Result<Response<RaftPayload>, Status> {
    let data =
        codec::encode(reply).map_err(|source| Status::from(Error::Codec { what, source }))?;
    Ok(Response::new(RaftPayload { data: data.into() }))
}

#[tonic::async_trait]
impl Raft for RaftService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request, "append entries")?;
        let reply = self.manager.raft().append_entries(rpc).await;
        encode(&reply, "append entries reply")
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request, "vote")?;
        let reply = self.manager.raft().vote(rpc).await;
        encode(&reply, "vote reply")
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request, "install snapshot")?;
        // The chunk is written at its offset into a growing buffer: bound the end first.
        let end = rpc.offset.saturating_add(rpc.data.len() as u64);
        if end > SNAPSHOT_BYTES_MAX as u64 {
            return Err(Error::Command(CommandError::LimitExceeded {
                what: "snapshot byte".into(),
                limit: SNAPSHOT_BYTES_MAX as u64,
            })
            .into());
        }
        let reply = self.manager.raft().install_snapshot(rpc).await;
        encode(&reply, "install snapshot reply")
    }

    #[tracing::instrument(skip_all)]
    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let request: LeaderRequest = decode(request, "forwarded request")?;
        let reply = self.manager.handle_forwarded(request).await?;
        encode(&reply, "forwarded reply")
    }
}
