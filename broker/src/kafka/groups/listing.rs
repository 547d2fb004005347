//! DescribeGroups, ListGroups and DeleteGroups over the consumer manager's group
//! subscriptions. A group is Stable while it has members and Empty otherwise; groups
//! the consumer manager does not know are Dead, as Kafka reports them.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use pubsub_proto::v1;

use super::super::conn::Ctx;
use super::{CONSUMER, Groups, group_code, protocol};

fn is_group(info: &v1::SubscriptionInfo) -> bool {
    info.options.as_ref().is_some_and(|o| o.group)
}

fn state(info: &v1::SubscriptionInfo) -> &'static str {
    if info.members.is_empty() {
        "Empty"
    } else {
        "Stable"
    }
}

fn member(info: &v1::SubscriptionInfo, m: &v1::MemberInfo) -> DescribedGroupMember {
    DescribedGroupMember::default()
        .with_member_id(StrBytes::from_string(m.member_id.clone()))
        .with_client_host(StrBytes::from_string(m.client_address.clone()))
        .with_member_metadata(protocol::subscription(&info.topic))
        .with_member_assignment(protocol::assignment(&info.topic, &m.partitions))
}

async fn describe_one(groups: Option<&Groups<'_>>, group_id: GroupId) -> DescribedGroup {
    let answer = DescribedGroup::default().with_group_id(group_id.clone());
    let Some(groups) = groups else {
        return answer.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    match groups.describe(group_id.0.as_str()).await {
        Ok(Some(info)) if is_group(&info) => answer
            .with_group_state(StrBytes::from_static_str(state(&info)))
            .with_protocol_type(StrBytes::from_static_str(CONSUMER))
            .with_members(info.members.iter().map(|m| member(&info, m)).collect()),
        Ok(Some(_)) => answer.with_error_code(ResponseError::GroupIdNotFound.code()),
        Ok(None) => answer.with_group_state(StrBytes::from_static_str("Dead")),
        Err(status) => answer.with_error_code(group_code(&status)),
    }
}

/// Answers DescribeGroups: state, members and their assignments.
pub(in crate::kafka) async fn describe_groups(
    ctx: Ctx,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = Groups::of(&ctx);
    let mut described = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        described.push(describe_one(groups.as_ref(), group_id).await);
    }
    DescribeGroupsResponse::default().with_groups(described)
}

/// Answers ListGroups: every group subscription the caller may see, filtered by
/// state (v4 on) when asked.
pub(in crate::kafka) async fn list_groups(
    ctx: Ctx,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let Some(groups) = Groups::of(&ctx) else {
        return ListGroupsResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let all = match groups.all().await {
        Ok(all) => all,
        Err(status) => return ListGroupsResponse::default().with_error_code(group_code(&status)),
    };
    let wanted = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.as_str().eq_ignore_ascii_case(state))
    };
    let listed = all
        .iter()
        .filter(|info| is_group(info) && wanted(state(info)))
        .map(|info| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(info.name.clone())))
                .with_protocol_type(StrBytes::from_static_str(CONSUMER));
            let listed = if ctx.version >= 4 {
                listed.with_group_state(StrBytes::from_static_str(state(info)))
            } else {
                listed
            };
            if ctx.version >= 5 {
                listed.with_group_type(StrBytes::from_static_str("classic"))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

async fn delete_one(groups: Option<&Groups<'_>>, name: &str) -> i16 {
    let Some(groups) = groups else {
        return ResponseError::CoordinatorNotAvailable.code();
    };
    let info = match groups.describe(name).await {
        Ok(Some(info)) if is_group(&info) => info,
        Ok(_) => return ResponseError::GroupIdNotFound.code(),
        Err(status) => return group_code(&status),
    };
    if !info.members.is_empty() {
        return ResponseError::NonEmptyGroup.code();
    }
    let asked = v1::UnsubscribeRequest {
        topic: info.topic,
        subscription: name.to_string(),
    };
    match groups
        .call(asked, |mut c, r| async move { c.unsubscribe(r).await })
        .await
    {
        Ok(_) => 0,
        Err(status) => group_code(&status),
    }
}

/// Answers DeleteGroups: an empty group's subscription and offsets are deleted.
pub(in crate::kafka) async fn delete_groups(
    ctx: Ctx,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let groups = Groups::of(&ctx);
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let code = delete_one(groups.as_ref(), group_id.0.as_str()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
