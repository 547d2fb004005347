//! Kafka consumer groups, served by the consumer manager: a Kafka group is the
//! consumer manager's group subscription of the same name, so its members, generation,
//! committed offsets and lag are the ones `pubsub groups describe` shows, and a
//! `pubsub subscribe --group` member and a Kafka consumer of the same group share its
//! partitions.
//!
//! The broker keeps no group state. Every broker answers FindCoordinator with itself
//! and turns each group request into consumer-manager calls, made with the caller's
//! own token, so access rules apply as they do over gRPC. The consumer manager
//! assigns partitions itself (sticky, as for its own members), so every Kafka member
//! is a follower: JoinGroup names a leader no member is, and SyncGroup hands each
//! member the partitions the consumer manager gave it.
//!
//! - `protocol`: the consumer protocol's subscription and assignment bytes.
//! - `membership`: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
//! - `commits`: OffsetCommit and OffsetFetch.
//! - `listing`: DescribeGroups, ListGroups, DeleteGroups.

mod commits;
mod listing;
mod membership;
mod protocol;

pub(super) use commits::{offset_commit, offset_fetch};
pub(super) use listing::{delete_groups, describe_groups, list_groups};
pub(super) use membership::{find_coordinator, heartbeat, join_group, leave_group, sync_group};

use std::future::Future;
use std::time::Duration;

use kafka_protocol::ResponseError;
use pubsub_proto::MAX_MESSAGE_BYTES;
use pubsub_proto::auth::AUTHORIZATION;
use pubsub_proto::net::{self, Channel, ChannelPool, Link, reasons};
use pubsub_proto::v1;
use pubsub_proto::v1::consumer_manager_client::ConsumerManagerClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::ClientTlsConfig;
use tonic::{Code, Request, Response, Status};

use super::conn::Ctx;

/// Deadline of one call to the consumer manager.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Kafka's protocol type for consumers; groups of other types are refused.
const CONSUMER: &str = "consumer";

/// The consumer manager that serves this listener's groups.
pub(crate) struct GroupLink {
    address: String,
    channels: ChannelPool,
}

impl GroupLink {
    /// A link to the consumer manager at `address`, over TLS when `tls` is set. Calls
    /// carry the Kafka client's token, never this broker's secret.
    pub(crate) fn new(address: String, tls: Option<ClientTlsConfig>) -> GroupLink {
        let link = Link {
            tls,
            ..Link::default()
        };
        GroupLink {
            address,
            channels: ChannelPool::new(link),
        }
    }

    fn client(&self) -> Result<ConsumerManagerClient<Channel>, Status> {
        let channel = self
            .channels
            .channel_with(&self.address, |endpoint| endpoint.timeout(CALL_TIMEOUT))
            .map_err(|e| Status::unavailable(format!("consumer manager: {e}")))?;
        Ok(ConsumerManagerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// One request's way to the consumer manager: the link and the caller's token.
pub(super) struct Groups<'a> {
    link: &'a GroupLink,
    token: Option<&'a str>,
}

impl<'a> Groups<'a> {
    /// The consumer manager as `ctx`'s caller; `None` when the listener has none.
    pub(super) fn of(ctx: &'a Ctx) -> Option<Groups<'a>> {
        Some(Groups {
            link: ctx.groups.as_deref()?,
            token: ctx.token.as_deref(),
        })
    }

    async fn call<T, R, F, Fut>(&self, message: T, call: F) -> Result<R, Status>
    where
        F: FnOnce(ConsumerManagerClient<Channel>, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut request = Request::new(message);
        if let Some(token) = self.token {
            let header: AsciiMetadataValue = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::unauthenticated("the token cannot be sent"))?;
            request.metadata_mut().insert(AUTHORIZATION, header);
        }
        call(self.link.client()?, request)
            .await
            .map(Response::into_inner)
    }

    /// The subscription named `group`, or `None` if there is none.
    async fn describe(&self, group: &str) -> Result<Option<v1::SubscriptionInfo>, Status> {
        let asked = v1::ListSubscriptionsRequest {
            topic: String::new(),
            subscription: group.to_string(),
        };
        match self
            .call(
                asked,
                |mut c, r| async move { c.list_subscriptions(r).await },
            )
            .await
        {
            Ok(answer) => Ok(answer.subscriptions.into_iter().next()),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Every subscription (groups among them).
    async fn all(&self) -> Result<Vec<v1::SubscriptionInfo>, Status> {
        let asked = v1::ListSubscriptionsRequest::default();
        let answer = self
            .call(
                asked,
                |mut c, r| async move { c.list_subscriptions(r).await },
            )
            .await?;
        Ok(answer.subscriptions)
    }

    /// The group subscription `group` on `topic`, created with the default options
    /// (reading from the earliest record) if missing. A subscription of that name that
    /// is not a group of `topic` is INCONSISTENT_GROUP_PROTOCOL: a Kafka group reads
    /// one topic here. The group's session timeout is the subscription's, not the
    /// client's: Kafka clients heartbeat from a thread of their own, well within it.
    async fn ensure(&self, group: &str, topic: &str) -> Result<v1::SubscriptionInfo, i16> {
        if let Some(existing) = self.describe(group).await.map_err(|s| group_code(&s))? {
            return fits(existing, group, topic);
        }
        let asked = v1::SubscribeRequest {
            topic: topic.to_string(),
            subscription: group.to_string(),
            options: Some(v1::SubscriptionOptions {
                group: true,
                ..Default::default()
            }),
        };
        match self
            .call(asked, |mut c, r| async move { c.subscribe(r).await })
            .await
        {
            Ok(answer) => answer
                .subscription
                .ok_or(ResponseError::CoordinatorNotAvailable.code()),
            // Another member created it a moment ago, perhaps with other options.
            Err(status) if status.code() == Code::AlreadyExists => {
                let existing = self.describe(group).await.map_err(|s| group_code(&s))?;
                fits(
                    existing.ok_or(ResponseError::CoordinatorNotAvailable.code())?,
                    group,
                    topic,
                )
            }
            Err(status) if status.code() == Code::NotFound => {
                Err(ResponseError::UnknownTopicOrPartition.code())
            }
            Err(status) => Err(group_code(&status)),
        }
    }

    /// Joins `group` as `member_id` (empty: a new member), or renews the membership.
    async fn join(&self, group: &str, member_id: &str) -> Result<v1::JoinGroupResponse, Status> {
        let asked = v1::JoinGroupRequest {
            subscription: group.to_string(),
            member_id: member_id.to_string(),
        };
        self.call(asked, |mut c, r| async move { c.join_group(r).await })
            .await
    }
}

/// `existing` if it is a group reading `topic`.
fn fits(
    existing: v1::SubscriptionInfo,
    group: &str,
    topic: &str,
) -> Result<v1::SubscriptionInfo, i16> {
    let is_group = existing.options.as_ref().is_some_and(|o| o.group);
    if is_group && existing.topic == topic {
        return Ok(existing);
    }
    tracing::info!(group, topic, existing_topic = %existing.topic, is_group, "kafka group refused: its name is a subscription of another kind or topic");
    Err(ResponseError::InconsistentGroupProtocol.code())
}

/// The Kafka error code for a consumer-manager refusal of a group call.
fn group_code(status: &Status) -> i16 {
    let error = match status.code() {
        Code::NotFound => ResponseError::GroupIdNotFound,
        Code::PermissionDenied | Code::Unauthenticated => ResponseError::GroupAuthorizationFailed,
        Code::InvalidArgument => ResponseError::InvalidGroupId,
        Code::FailedPrecondition if net::reason(status) == Some(reasons::STALE_GENERATION) => {
            ResponseError::IllegalGeneration
        }
        Code::FailedPrecondition => ResponseError::UnknownMemberId,
        _ => {
            tracing::debug!(status = %status, "consumer manager did not answer a group call");
            ResponseError::CoordinatorNotAvailable
        }
    };
    error.code()
}

/// A u64 generation as Kafka's i32 (generations never come near the limit).
fn generation_id(generation: u64) -> i32 {
    i32::try_from(generation).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_the_codes_clients_act_on() {
        let mut stale = Status::failed_precondition("generation 3 of group \"g\" is stale");
        stale.metadata_mut().insert(
            net::keys::REASON,
            tonic::metadata::MetadataValue::from_static(reasons::STALE_GENERATION),
        );
        assert_eq!(group_code(&stale), ResponseError::IllegalGeneration.code());
        let gone = Status::failed_precondition("member \"m\" is not in group \"g\"");
        assert_eq!(group_code(&gone), ResponseError::UnknownMemberId.code());
        let denied = Status::permission_denied("no");
        assert_eq!(
            group_code(&denied),
            ResponseError::GroupAuthorizationFailed.code()
        );
        let down = Status::unavailable("down");
        assert_eq!(
            group_code(&down),
            ResponseError::CoordinatorNotAvailable.code()
        );
        assert_eq!(generation_id(7), 7);
        assert_eq!(generation_id(u64::MAX), i32::MAX);
    }

    #[test]
    fn only_a_group_of_the_same_topic_fits() {
        let info = |topic: &str, group: bool| v1::SubscriptionInfo {
            topic: topic.into(),
            options: Some(v1::SubscriptionOptions {
                group,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(fits(info("t", true), "g", "t").is_ok());
        assert!(fits(info("u", true), "g", "t").is_err());
        assert!(fits(info("t", false), "g", "t").is_err());
    }
}
