//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup over the consumer
//! manager's membership.
//!
//! A JoinGroup joins (or renews) the member in the consumer manager, which moves the
//! group to a new generation at each join and leave. Heartbeat and SyncGroup renew the
//! membership too, and answer REBALANCE_IN_PROGRESS once the generation has moved
//! on, so members join again and pick up their new partitions. The consumer manager
//! refuses commits of an old generation, so a member that has lost a partition
//! cannot move its offset: a record may be read twice across a rebalance, never
//! skipped.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tonic::Code;

use super::super::conn::Ctx;
use super::super::metadata::{host_port, str_bytes};
use super::{CONSUMER, Groups, generation_id, group_code, protocol};

/// The leader JoinGroup names: no member is, so every member takes its assignment
/// from SyncGroup instead of computing one.
const SERVER_ASSIGNS: &str = "pubsub-consumer-manager";
/// FindCoordinator's key type for groups (1 is transactions, not served).
const KEY_TYPE_GROUP: i8 = 0;

/// Where the coordinator of one key is, or why there is none.
struct Found {
    node_id: i32,
    host: String,
    port: i32,
    error: i16,
    message: Option<String>,
}

/// This broker, when it can coordinate groups of `key_type`.
fn coordinator(ctx: &Ctx, key_type: i8) -> Found {
    let refused = |error: ResponseError, message: &str| Found {
        node_id: -1,
        host: String::new(),
        port: -1,
        error: error.code(),
        message: Some(message.to_string()),
    };
    if key_type != KEY_TYPE_GROUP {
        return refused(
            ResponseError::InvalidRequest,
            "only consumer groups have coordinators here; transactions are not served",
        );
    }
    if ctx.groups.is_none() {
        return refused(
            ResponseError::CoordinatorNotAvailable,
            "this broker was started without --kafka-consumer-manager",
        );
    }
    let address = ctx
        .broker
        .config()
        .kafka
        .as_ref()
        .map(|k| k.advertised_address.as_str());
    match address.and_then(host_port) {
        Some((host, port)) => Found {
            node_id: ctx.broker.config().broker_id.0 as i32,
            host,
            port,
            error: 0,
            message: None,
        },
        None => refused(
            ResponseError::CoordinatorNotAvailable,
            "this broker's Kafka address has no port",
        ),
    }
}

/// Answers FindCoordinator with this broker: group state lives in the consumer
/// manager, so any broker coordinates any group.
pub(in crate::kafka) async fn find_coordinator(
    ctx: Ctx,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let found = coordinator(&ctx, request.key_type);
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(found.node_id))
                    .with_host(str_bytes(&found.host))
                    .with_port(found.port)
                    .with_error_code(found.error)
                    .with_error_message(found.message.map(StrBytes::from_string))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = coordinator(&ctx, request.key_type);
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(found.node_id))
        .with_host(str_bytes(&found.host))
        .with_port(found.port)
        .with_error_code(found.error)
        .with_error_message(
            found
                .message
                .filter(|_| ctx.version >= 1)
                .map(StrBytes::from_string),
        )
}

fn join_answer(version: i16, error: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error)
        .with_generation_id(-1)
        // Not nullable before v7.
        .with_protocol_name((version < 7).then(StrBytes::default))
}

/// Answers JoinGroup: the member joins the consumer manager's group of the topic it
/// subscribes to (created if missing), and learns its member id and generation.
pub(in crate::kafka) async fn join_group(ctx: Ctx, request: JoinGroupRequest) -> JoinGroupResponse {
    let version = ctx.version;
    let Some(groups) = Groups::of(&ctx) else {
        return join_answer(version, ResponseError::CoordinatorNotAvailable.code());
    };
    let group = request.group_id.0.as_str();
    let inconsistent = ResponseError::InconsistentGroupProtocol.code();
    if request.protocol_type.as_str() != CONSUMER {
        return join_answer(version, inconsistent);
    }
    let Some(chosen) = protocol::choose(&request.protocols) else {
        return join_answer(version, inconsistent);
    };
    let topic = match protocol::subscribed_topics(&chosen.metadata) {
        Ok(topics) if topics.len() == 1 => topics[0].clone(),
        Ok(topics) => {
            tracing::info!(
                group,
                ?topics,
                "kafka group refused: a group reads exactly one topic here"
            );
            return join_answer(version, inconsistent);
        }
        Err(reason) => {
            tracing::info!(group, reason, "kafka group refused");
            return join_answer(version, inconsistent);
        }
    };
    if let Err(code) = groups.ensure(group, &topic).await {
        return join_answer(version, code);
    }
    match groups.join(group, request.member_id.as_str()).await {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(generation_id(joined.generation))
            .with_protocol_type((version >= 7).then(|| StrBytes::from_static_str(CONSUMER)))
            .with_protocol_name(Some(chosen.name.clone()))
            .with_leader(StrBytes::from_static_str(SERVER_ASSIGNS))
            .with_member_id(StrBytes::from_string(joined.member_id)),
        Err(status) => join_answer(version, group_code(&status)),
    }
}

/// Renews `member_id` in `group`: its partitions when `generation` is still current,
/// else the Kafka error that sends it to join again.
async fn renew(
    groups: &Groups<'_>,
    group: &str,
    member_id: &str,
    generation: i32,
) -> Result<Vec<u32>, i16> {
    if member_id.is_empty() {
        return Err(ResponseError::UnknownMemberId.code());
    }
    match groups.join(group, member_id).await {
        Ok(joined) if generation_id(joined.generation) == generation => Ok(joined.partitions),
        Ok(_) => Err(ResponseError::RebalanceInProgress.code()),
        Err(status) if status.code() == Code::NotFound => {
            Err(ResponseError::UnknownMemberId.code())
        }
        Err(status) => Err(group_code(&status)),
    }
}

/// Answers SyncGroup with the partitions the consumer manager gave this member in
/// this generation (what a leader sends is not used).
pub(in crate::kafka) async fn sync_group(ctx: Ctx, request: SyncGroupRequest) -> SyncGroupResponse {
    let answer = SyncGroupResponse::default();
    let answer = if ctx.version >= 5 {
        answer
            .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER)))
            .with_protocol_name(request.protocol_name.clone())
    } else {
        answer
    };
    let Some(groups) = Groups::of(&ctx) else {
        return answer.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let group = request.group_id.0.as_str();
    let partitions = match renew(&groups, group, &request.member_id, request.generation_id).await {
        Ok(partitions) => partitions,
        Err(code) => return answer.with_error_code(code),
    };
    match groups.describe(group).await {
        Ok(Some(info)) => answer.with_assignment(protocol::assignment(&info.topic, &partitions)),
        Ok(None) => answer.with_error_code(ResponseError::UnknownMemberId.code()),
        Err(status) => answer.with_error_code(group_code(&status)),
    }
}

/// Answers Heartbeat: renews the membership, REBALANCE_IN_PROGRESS once the
/// generation moved on.
pub(in crate::kafka) async fn heartbeat(ctx: Ctx, request: HeartbeatRequest) -> HeartbeatResponse {
    let Some(groups) = Groups::of(&ctx) else {
        return HeartbeatResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let group = request.group_id.0.as_str();
    let renewed = renew(&groups, group, &request.member_id, request.generation_id).await;
    HeartbeatResponse::default().with_error_code(renewed.err().unwrap_or(0))
}

/// Answers LeaveGroup: each member leaves at once, so its partitions move without
/// waiting for its session to expire.
pub(in crate::kafka) async fn leave_group(
    ctx: Ctx,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let Some(groups) = Groups::of(&ctx) else {
        return LeaveGroupResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let group = request.group_id.0.as_str();
    let leaving: Vec<StrBytes> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| m.member_id.clone())
            .collect()
    } else {
        vec![request.member_id.clone()]
    };
    let mut members = Vec::with_capacity(leaving.len());
    let mut first_error = 0;
    for member_id in leaving {
        let asked = pubsub_proto::v1::LeaveGroupRequest {
            subscription: group.to_string(),
            member_id: member_id.to_string(),
        };
        let left = groups
            .call(asked, |mut c, r| async move { c.leave_group(r).await })
            .await;
        let code = left.err().map_or(0, |status| group_code(&status));
        if first_error == 0 {
            first_error = code;
        }
        members.push(
            MemberResponse::default()
                .with_member_id(member_id)
                .with_error_code(code),
        );
    }
    let answer = LeaveGroupResponse::default();
    if ctx.version >= 3 {
        answer.with_members(members)
    } else {
        answer.with_error_code(first_error)
    }
}
