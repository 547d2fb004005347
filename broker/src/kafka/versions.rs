//! Which Kafka APIs this listener serves, at which versions, and the ApiVersions answer
//! that tells clients so. APIs left out (transactions; consumer groups on a listener
//! without a consumer manager) are absent from the answer, so a client refuses them
//! up front instead of failing midway.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// The served APIs with their lowest and highest version. Lower bounds start where
/// RecordBatch v2 (magic 2) begins, which is all partitions store; upper bounds stop
/// before versions that address topics by id only.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The consumer-group APIs, served when the listener has a consumer manager. OffsetFetch
/// starts at v2, the first whose answer carries a group's error; FindCoordinator stops
/// before the versions for share groups.
const GROUPS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 2, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
];

/// The served APIs, the group APIs included when `groups` is set.
fn served(groups: bool) -> impl Iterator<Item = &'static (ApiKey, i16, i16)> {
    SERVED.iter().chain(GROUPS.iter().filter(move |_| groups))
}

/// Whether `version` of `api_key` is served (group APIs only with `groups`).
pub(super) fn serves(api_key: ApiKey, version: i16, groups: bool) -> bool {
    served(groups).any(|(key, min, max)| *key == api_key && (*min..=*max).contains(&version))
}

fn api_keys(groups: bool) -> Vec<ApiVersion> {
    served(groups)
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// The ApiVersions answer.
pub(super) fn answer(groups: bool) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys(groups))
}

/// The answer to an ApiVersions request of a version this listener does not know:
/// UNSUPPORTED_VERSION with the served versions, encoded as v0 (KIP-511).
pub(super) fn unsupported(groups: bool) -> ApiVersionsResponse {
    answer(groups).with_error_code(ResponseError::UnsupportedVersion.code())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    use super::*;

    fn range<M: Message>() -> (i16, i16) {
        (M::VERSIONS.min, M::VERSIONS.max)
    }

    /// Every advertised version can be decoded and answered by the crate.
    #[test]
    fn served_versions_are_within_the_codec() {
        for (key, min, max) in served(true) {
            let (lo, hi) = match key {
                ApiKey::Produce => range::<ProduceRequest>(),
                ApiKey::Fetch => range::<FetchRequest>(),
                ApiKey::ListOffsets => range::<ListOffsetsRequest>(),
                ApiKey::Metadata => range::<MetadataRequest>(),
                ApiKey::ApiVersions => range::<ApiVersionsRequest>(),
                ApiKey::CreateTopics => range::<CreateTopicsRequest>(),
                ApiKey::DeleteTopics => range::<DeleteTopicsRequest>(),
                ApiKey::CreatePartitions => range::<CreatePartitionsRequest>(),
                ApiKey::DeleteRecords => range::<DeleteRecordsRequest>(),
                ApiKey::InitProducerId => range::<InitProducerIdRequest>(),
                ApiKey::OffsetForLeaderEpoch => range::<OffsetForLeaderEpochRequest>(),
                ApiKey::DescribeConfigs => range::<DescribeConfigsRequest>(),
                ApiKey::AlterConfigs => range::<AlterConfigsRequest>(),
                ApiKey::IncrementalAlterConfigs => range::<IncrementalAlterConfigsRequest>(),
                ApiKey::SaslHandshake => range::<SaslHandshakeRequest>(),
                ApiKey::SaslAuthenticate => range::<SaslAuthenticateRequest>(),
                ApiKey::FindCoordinator => range::<FindCoordinatorRequest>(),
                ApiKey::JoinGroup => range::<JoinGroupRequest>(),
                ApiKey::SyncGroup => range::<SyncGroupRequest>(),
                ApiKey::Heartbeat => range::<HeartbeatRequest>(),
                ApiKey::LeaveGroup => range::<LeaveGroupRequest>(),
                ApiKey::OffsetCommit => range::<OffsetCommitRequest>(),
                ApiKey::OffsetFetch => range::<OffsetFetchRequest>(),
                ApiKey::DescribeGroups => range::<DescribeGroupsRequest>(),
                ApiKey::ListGroups => range::<ListGroupsRequest>(),
                ApiKey::DeleteGroups => range::<DeleteGroupsRequest>(),
                other => panic!("{other:?} has no range check"),
            };
            assert!(
                lo <= *min && *max <= hi,
                "{key:?} {min}..={max} outside {lo}..={hi}"
            );
        }
    }

    #[test]
    fn unknown_versions_are_not_served() {
        assert!(serves(ApiKey::Produce, 9, false));
        assert!(!serves(ApiKey::Produce, 2, false));
        assert!(!serves(ApiKey::Produce, 10, false));
        assert!(!serves(ApiKey::JoinGroup, 0, false));
        assert!(serves(ApiKey::JoinGroup, 0, true));
        assert!(!serves(ApiKey::OffsetFetch, 1, true));
        assert!(!serves(ApiKey::InitProducerId, 5, true));
    }
}
