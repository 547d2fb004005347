//! Every request a server decodes off the wire: the first byte picks the message type,
//! the rest is decoded by prost as tonic does. Any bytes decode or are refused, never
//! sized into an allocation from a length prefix (the run's malloc limit catches
//! that); what decodes encodes and decodes back to the same message; the validators
//! every server runs on what decoded (names, topic settings, access rules, principals,
//! the access snapshot each node keeps) answer a value or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use pubsub_proto::auth::{AccessSnapshot, Rule, validate_principal};
use pubsub_proto::ids::TopicName;
use pubsub_proto::v1;

/// Decodes `bytes` as an `M`, and checks that it survives encoding and decoding.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("an encoded message decodes");
    assert_eq!(again, message, "encode and decode disagree");
    Some(message)
}

fn topic_settings(name: &str, config: Option<v1::TopicConfig>, replication_factor: Option<u32>) {
    let _ = TopicName::new(name);
    if let Some(config) = config {
        let _ = config.validate(replication_factor);
        if let Some(factor) = replication_factor.filter(|f| (1..=16).contains(f)) {
            let _ = config.with_defaults(factor).min_insync(factor);
        }
    }
}

/// Messages decoded without a validator of their own beyond their fields' types.
fn plain(which: u8, rest: &[u8]) {
    macro_rules! each {
        ($($n:literal => $t:ty),* $(,)?) => {
            match which {
                $($n => { let _ = decode::<$t>(rest); })*
                _ => {}
            }
        };
    }
    each! {
        10 => v1::ProduceRequest, 11 => v1::FetchRequest, 12 => v1::ListOffsetsRequest,
        13 => v1::DeleteRecordsRequest, 14 => v1::OffsetForLeaderEpochRequest,
        15 => v1::PublishRequest, 16 => v1::ReadRecordsRequest, 17 => v1::DeleteTopicRequest,
        18 => v1::DescribeTopicRequest, 19 => v1::CreatePartitionsRequest,
        20 => v1::RegisterBrokerRequest, 21 => v1::HeartbeatRequest, 22 => v1::UpdateIsrRequest,
        23 => v1::WatchMetadataRequest, 24 => v1::AddMemberRequest, 25 => v1::RemoveMemberRequest,
        26 => v1::ShutdownBrokerRequest, 27 => v1::DecommissionBrokerRequest,
        28 => v1::PlanBalanceRequest, 29 => v1::SetBalancingRequest, 30 => v1::JoinGroupRequest,
        31 => v1::LeaveGroupRequest, 32 => v1::ReadRequest, 33 => v1::AckRequest,
        34 => v1::NackRequest, 35 => v1::CommitRequest, 36 => v1::SeekRequest,
        37 => v1::StreamRequest, 38 => v1::PresenceRequest, 39 => v1::HistoryRequest,
        40 => v1::ReplayDeadLettersRequest, 41 => v1::UnsubscribeRequest,
        42 => v1::ListSubscriptionsRequest, 43 => v1::RevokeTokensRequest,
        44 => v1::RemoveAclRequest, 45 => v1::ListAclsRequest, 46 => v1::WatchAccessRequest,
        47 => v1::ClusterStatusRequest, 48 => v1::ListTopicsRequest,
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&which, rest)) = bytes.split_first() else {
        return;
    };
    match which % 49 {
        0 => {
            if let Some(r) = decode::<v1::CreateTopicRequest>(rest) {
                topic_settings(&r.name, r.config, Some(r.replication_factor));
            }
        }
        1 => {
            if let Some(r) = decode::<v1::AlterTopicConfigRequest>(rest) {
                topic_settings(&r.name, r.config, None);
            }
        }
        2 => {
            if let Some(r) = decode::<v1::ClusterCreateTopicRequest>(rest) {
                topic_settings(&r.name, r.config, Some(r.replication_factor));
            }
        }
        3 => {
            if let Some(rule) = decode::<v1::AclRule>(rest) {
                if let Ok(parsed) = Rule::from_wire(&rule) {
                    assert_eq!(Rule::from_wire(&parsed.to_wire()).ok(), Some(parsed));
                }
            }
        }
        4 => {
            if let Some(r) = decode::<v1::AddAclRequest>(rest) {
                let _ = r.rule.as_ref().map(Rule::from_wire);
            }
        }
        5 => {
            if let Some(access) = decode::<v1::AccessControl>(rest) {
                let _ = AccessSnapshot::from_wire(&access);
            }
        }
        6 => {
            if let Some(r) = decode::<v1::CreateTokenRequest>(rest) {
                let _ = validate_principal(&r.principal);
            }
        }
        7 => {
            if let Some(r) = decode::<v1::SubscribeRequest>(rest) {
                let _ = TopicName::new(&r.topic);
            }
        }
        8 => {
            let _ = decode::<v1::SubscriptionOptions>(rest);
        }
        9 => {
            let _ = decode::<v1::ListTokensRequest>(rest);
        }
        n => plain(n, rest),
    }
});
