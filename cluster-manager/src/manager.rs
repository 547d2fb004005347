//! A running cluster-manager node: its Raft handle, its view of the metadata, and the
//! routing of writes to the Raft leader.
//!
//! Reads are served from the local state machine (possibly a little behind the leader).
//! Writes are proposed locally when this node leads; otherwise they are forwarded once,
//! through the leader's `Raft/Forward` RPC, and the leader's answer (or error status) is
//! passed back. The leader never forwards again, so requests cannot loop. While no leader
//! is known, or the leader cannot be reached, a write is retried with capped backoff for
//! at most [`ROUTE_TIMEOUT`], long enough to ride out one election; then the client gets
//! UNAVAILABLE with the leader's address when one is known.
//!
//! Retrying is safe because a retried write either never reached the log (not leader,
//! connection refused) or is idempotent (topic creation, registration, heartbeats, ISR
//! updates at the same epoch); a retried topic deletion may answer NOT_FOUND.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};
use pubsub_proto::v1::RaftPayload;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::command::{ADDRESS_BYTES_MAX, Command, Response};
use crate::error::{Error, Result};
use crate::grpc::LEADER_ADDRESS_KEY;
use crate::raft::codec::{self, PAYLOAD_BYTES_MAX};
use crate::raft::network::Channels;
use crate::raft::state_machine::MetadataView;
use crate::raft::{NodeId, Raft};

/// Longest a write waits for a reachable leader, retries included: covers one election
/// (under 3 s with the default Raft settings, see `RaftSettings`).
pub(crate) const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest pause between write attempts while there is no usable leader.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Longest the leader waits for a quorum to commit one write: milliseconds when
/// healthy; past this the quorum is presumed lost.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(4);
/// Deadline of one forwarded write: the leader's commit timeout plus a margin for the
/// round trip; past this the leader is presumed gone.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of a membership change: a new member first catches up as a learner.
pub(crate) const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a node waits for its own state machine to apply a write it just made, before
/// answering from it.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// What only the Raft leader can do, as forwarded to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// Propose a metadata command.
    Command(Command),
    /// Add a node as learner, then promote it to voter.
    AddMember {
        /// Node id.
        id: NodeId,
        /// `host:port` of its gRPC server.
        address: String,
    },
    /// Remove a node from the group.
    RemoveMember {
        /// Node id.
        id: NodeId,
    },
}

/// The leader's answer to a [`LeaderRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderReply {
    /// The command was committed and applied at `log_index`.
    Command {
        /// Raft log index of the command.
        log_index: u64,
        /// What applying it did.
        response: Response,
    },
    /// The membership change was committed at `log_index`.
    Membership {
        /// Raft log index of the final membership entry.
        log_index: u64,
    },
}

/// A committed write.
#[derive(Clone, Debug)]
pub struct Written {
    /// Its Raft log index: the metadata version that includes it.
    pub log_index: u64,
    /// What applying it did.
    pub response: Response,
}

/// One cluster-manager node, shared by its gRPC services and background tasks.
pub struct Manager {
    id: NodeId,
    address: String,
    raft: Raft,
    view: watch::Receiver<MetadataView>,
    channels: Channels,
    lease: Duration,
    stopping: watch::Receiver<bool>,
}

/// Milliseconds since the Unix epoch by this node's clock; commands carry it so `apply`
/// reads no clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn client_write_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => Error::NotLeader {
            leader_id: forward.leader_id,
            leader_address: forward.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Membership(e.to_string())
        }
        RaftError::Fatal(fatal) => Error::RaftStopped(fatal.to_string()),
    }
}

impl Manager {
    /// Wraps a started Raft node.
    pub(crate) fn new(
        id: NodeId,
        address: String,
        raft: Raft,
        view: watch::Receiver<MetadataView>,
        channels: Channels,
        lease: Duration,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Manager {
            id,
            address,
            raft,
            view,
            channels,
            lease,
            stopping,
        }
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address this node advertises.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The broker lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The metadata as applied on this node now.
    pub fn view(&self) -> MetadataView {
        self.view.borrow().clone()
    }

    /// A receiver woken whenever the watched metadata changes.
    pub fn subscribe(&self) -> watch::Receiver<MetadataView> {
        self.view.clone()
    }

    /// A receiver that turns `true` when the node starts shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// The latest Raft metrics of this node.
    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// The Raft leader as this node knows it.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Commits `command` through the Raft leader, wherever it is.
    pub async fn write(&self, command: Command) -> Result<Written> {
        command.validate()?;
        match self.route(LeaderRequest::Command(command)).await? {
            LeaderReply::Command {
                log_index,
                response,
            } => Ok(Written {
                log_index,
                response,
            }),
            LeaderReply::Membership { .. } => Err(Error::Internal(
                "the leader answered a command with a membership reply".into(),
            )),
        }
    }

    /// Adds a node to the Raft group as a voter, through the leader.
    pub async fn add_member(&self, id: NodeId, address: String) -> Result<u64> {
        if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "member address must be 1 to {ADDRESS_BYTES_MAX} bytes"
            )));
        }
        self.membership(LeaderRequest::AddMember { id, address })
            .await
    }

    /// Removes a node from the Raft group, through the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<u64> {
        self.membership(LeaderRequest::RemoveMember { id }).await
    }

    async fn membership(&self, request: LeaderRequest) -> Result<u64> {
        match self.route(request).await? {
            LeaderReply::Membership { log_index } => Ok(log_index),
            LeaderReply::Command { .. } => Err(Error::Internal(
                "the leader answered a membership change with a command reply".into(),
            )),
        }
    }

    /// Waits until this node's state machine has applied `log_index`, so a read after a
    /// write sees it.
    pub async fn wait_applied(&self, log_index: u64) -> Result<()> {
        self.raft
            .wait(Some(APPLY_WAIT))
            .applied_index_at_least(Some(log_index), "read after write")
            .await
            .map(|_| ())
            .map_err(|_| Error::Timeout {
                what: "this node to apply the write",
                waited: APPLY_WAIT,
            })
    }

    /// Runs a forwarded request here, the leader, without forwarding it again.
    pub async fn handle_forwarded(&self, request: LeaderRequest) -> Result<LeaderReply> {
        self.execute(request).await
    }

    async fn route(&self, request: LeaderRequest) -> Result<LeaderReply> {
        let deadline = Instant::now() + ROUTE_TIMEOUT;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let error = match self.execute(request.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(Error::NotLeader {
                    leader_id: Some(leader),
                    leader_address: Some(address),
                }) if leader != self.id => match self.forward(leader, &address, &request).await {
                    Ok(reply) => return Ok(reply),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            let retry = match &error {
                Error::NotLeader { .. } => true,
                Error::Forwarded(status) => status.code() == tonic::Code::Unavailable,
                _ => false,
            };
            if !retry || Instant::now() + backoff > deadline || *self.stopping.borrow() {
                return Err(error);
            }
            tracing::debug!(error = %error, "no usable raft leader yet; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Proposes on this node, which must lead.
    async fn execute(&self, request: LeaderRequest) -> Result<LeaderReply> {
        match request {
            LeaderRequest::Command(mut command) => {
                // Forwarded commands were only checked by the follower.
                command.validate()?;
                // The leader's clock judges leases; a follower's stamp is replaced.
                command.stamp(now_ms());
                // A leader cut off from its quorum stays leader until a new one is
                // elected elsewhere, and its writes never commit: give up rather than
                // hang. The outcome is then unknown; the write may still commit.
                let written = tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(command))
                    .await
                    .map_err(|_| Error::Timeout {
                        what: "a quorum to commit the write (it may still commit)",
                        waited: COMMIT_TIMEOUT,
                    })?
                    .map_err(client_write_error)?;
                let response = written.data.map_err(Error::Command)?;
                Ok(LeaderReply::Command {
                    log_index: written.log_id.index,
                    response,
                })
            }
            LeaderRequest::AddMember { id, address } => {
                let change = async {
                    self.raft
                        .add_learner(id, BasicNode::new(&address), true)
                        .await
                        .map_err(client_write_error)?;
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(client_write_error)
                };
                let written = tokio::time::timeout(MEMBERSHIP_TIMEOUT, change)
                    .await
                    .map_err(|_| Error::Timeout {
                        what: "the new member to catch up",
                        waited: MEMBERSHIP_TIMEOUT,
                    })??;
                tracing::info!(node_id = id, address = %address, "raft member added");
                Ok(LeaderReply::Membership {
                    log_index: written.log_id.index,
                })
            }
            LeaderRequest::RemoveMember { id } => {
                let change = self
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false);
                let written = tokio::time::timeout(MEMBERSHIP_TIMEOUT, change)
                    .await
                    .map_err(|_| Error::Timeout {
                        what: "the membership change to commit",
                        waited: MEMBERSHIP_TIMEOUT,
                    })?
                    .map_err(client_write_error)?;
                tracing::info!(node_id = id, "raft member removed");
                Ok(LeaderReply::Membership {
                    log_index: written.log_id.index,
                })
            }
        }
    }

    /// Sends `request` to the leader's `Raft/Forward`.
    async fn forward(
        &self,
        leader: NodeId,
        address: &str,
        request: &LeaderRequest,
    ) -> Result<LeaderReply> {
        let unreachable = || Error::NotLeader {
            leader_id: Some(leader),
            leader_address: Some(address.to_string()),
        };
        let data = codec::encode(request).map_err(|source| Error::Codec {
            what: "forwarded request",
            source,
        })?;
        let mut client = self.channels.raft_client(address)?;
        let deadline = match request {
            LeaderRequest::Command(_) => FORWARD_TIMEOUT,
            LeaderRequest::AddMember { .. } | LeaderRequest::RemoveMember { .. } => {
                MEMBERSHIP_TIMEOUT + FORWARD_TIMEOUT
            }
        };
        let call = client.forward(RaftPayload { data: data.into() });
        let reply = match tokio::time::timeout(deadline, call).await {
            Err(_) => return Err(unreachable()),
            Ok(Err(status)) => {
                // A status without the leader key is tonic's own (connection refused):
                // report the leader we could not reach, so the client may try it.
                let from_leader = status.metadata().get(LEADER_ADDRESS_KEY).is_some();
                if status.code() == tonic::Code::Unavailable && !from_leader {
                    tracing::debug!(leader, address, status = %status.message(), "forward failed");
                    return Err(unreachable());
                }
                return Err(Error::Forwarded(status));
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        codec::decode(&reply.data, PAYLOAD_BYTES_MAX).map_err(|source| Error::Codec {
            what: "forwarded reply",
            source,
        })
    }

    /// Raft members with their addresses and whether they vote, from this node's view.
    pub fn members(&self) -> Vec<(NodeId, String, bool)> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, String> = membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        nodes
            .into_iter()
            .map(|(id, address)| (id, address, voters.contains(&id)))
            .collect()
    }
}
