//! The table of every RPC of every service, as the auth tests call each one, and the
//! list of every method the protos define (so a new RPC cannot miss the table).

use std::future::Future;
use std::pin::Pin;

use pubsub_proto::net::Channel;
use pubsub_proto::v1::{
    self, access_client::AccessClient, admin_client::AdminClient, broker_client::BrokerClient,
    cluster_manager_client::ClusterManagerClient, consumer_manager_client::ConsumerManagerClient,
    raft_client::RaftClient,
};
use tonic::Code;

pub(super) type Call = Box<dyn Fn(Channel) -> Pin<Box<dyn Future<Output = Code> + Send>>>;

/// The code a unary call ended with.
fn unary<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// The code a server-streaming call ended with, counting its first message.
async fn streaming<T>(result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>) -> Code {
    match result {
        Err(status) => status.code(),
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status.code(),
            Ok(_) => Code::Ok,
        },
    }
}

macro_rules! call {
    ($calls:ident, $name:literal, $node_only:expr, $listing:expr, |$ch:ident| $body:expr) => {
        $calls.push((
            $name,
            $node_only,
            $listing,
            Box::new(move |$ch: Channel| {
                Box::pin(async move { $body }) as Pin<Box<dyn Future<Output = Code> + Send>>
            }),
        ));
    };
}

/// (name, node only, a listing a principal without rules gets empty, the call).
pub(super) fn every_rpc() -> Vec<(&'static str, bool, bool, Call)> {
    let t = || "orders.t".to_string();
    let s = || "orders.s".to_string();
    let mut c: Vec<(&'static str, bool, bool, Call)> = Vec::new();
    call!(c, "Admin/CreateTopic", false, false, |ch| unary(
        AdminClient::new(ch)
            .create_topic(v1::CreateTopicRequest {
                name: "orders.new".into(),
                partitions: 1,
                ..Default::default()
            })
            .await
    ));
    call!(c, "Admin/DeleteTopic", false, false, |ch| unary(
        AdminClient::new(ch)
            .delete_topic(v1::DeleteTopicRequest {
                name: "orders.none".into()
            })
            .await
    ));
    call!(c, "Admin/ListTopics", false, true, |ch| unary(
        AdminClient::new(ch)
            .list_topics(v1::ListTopicsRequest {})
            .await
    ));
    call!(c, "Admin/DescribeTopic", false, false, |ch| unary(
        AdminClient::new(ch)
            .describe_topic(v1::DescribeTopicRequest { name: t() })
            .await
    ));
    call!(c, "Admin/AlterTopicConfig", false, false, |ch| unary(
        AdminClient::new(ch)
            .alter_topic_config(v1::AlterTopicConfigRequest {
                name: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/Produce", false, false, |ch| unary(
        BrokerClient::new(ch)
            .produce(v1::ProduceRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/ProduceStream", false, false, |ch| {
        let one = v1::ProduceRequest {
            topic: t(),
            ..Default::default()
        };
        streaming(
            BrokerClient::new(ch)
                .produce_stream(tokio_stream::iter([one]))
                .await,
        )
        .await
    });
    call!(c, "Broker/Fetch", false, false, |ch| unary(
        BrokerClient::new(ch)
            .fetch(v1::FetchRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/Fetch as a replica", true, false, |ch| unary(
        BrokerClient::new(ch)
            .fetch(v1::FetchRequest {
                topic: t(),
                replica_id: Some(7),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/OffsetForLeaderEpoch", false, false, |ch| unary(
        BrokerClient::new(ch)
            .offset_for_leader_epoch(v1::OffsetForLeaderEpochRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/ListOffsets", false, false, |ch| unary(
        BrokerClient::new(ch)
            .list_offsets(v1::ListOffsetsRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/DeleteRecords", false, false, |ch| unary(
        BrokerClient::new(ch)
            .delete_records(v1::DeleteRecordsRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/Publish", false, false, |ch| unary(
        BrokerClient::new(ch)
            .publish(v1::PublishRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "Broker/ReadRecords", false, false, |ch| unary(
        BrokerClient::new(ch)
            .read_records(v1::ReadRecordsRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ClusterManager/RegisterBroker", true, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .register_broker(v1::RegisterBrokerRequest {
                broker_id: 0,
                address: "10.6.6.6:1".into(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ClusterManager/Heartbeat", true, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .heartbeat(v1::HeartbeatRequest {
                broker_id: 99,
                ..Default::default()
            })
            .await
    ));
    call!(
        c,
        "ClusterManager/ConsumerManagerHeartbeat",
        true,
        false,
        |ch| unary(
            ClusterManagerClient::new(ch)
                .consumer_manager_heartbeat(v1::ConsumerManagerHeartbeatRequest {
                    address: "10.6.6.6:1".into(),
                    held: vec![],
                })
                .await
        )
    );
    call!(c, "ClusterManager/UpdateIsr", true, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .update_isr(v1::UpdateIsrRequest {
                topic: t(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ClusterManager/ShutdownBroker", true, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .shutdown_broker(v1::ShutdownBrokerRequest { broker_id: 99 })
            .await
    ));
    call!(c, "ClusterManager/WatchMetadata", true, false, |ch| {
        streaming(
            ClusterManagerClient::new(ch)
                .watch_metadata(v1::WatchMetadataRequest {})
                .await,
        )
        .await
    });
    call!(c, "ClusterManager/CreateTopic", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .create_topic(v1::ClusterCreateTopicRequest {
                name: "orders.cm".into(),
                partitions: 1,
                ..Default::default()
            })
            .await
    ));
    call!(c, "ClusterManager/DeleteTopic", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .delete_topic(v1::DeleteTopicRequest {
                name: "orders.none".into()
            })
            .await
    ));
    call!(c, "ClusterManager/ListTopics", false, true, |ch| unary(
        ClusterManagerClient::new(ch)
            .list_topics(v1::ListTopicsRequest {})
            .await
    ));
    call!(c, "ClusterManager/DescribeTopic", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .describe_topic(v1::DescribeTopicRequest { name: t() })
            .await
    ));
    call!(c, "ClusterManager/AlterTopicConfig", false, false, |ch| {
        unary(
            ClusterManagerClient::new(ch)
                .alter_topic_config(v1::AlterTopicConfigRequest {
                    name: t(),
                    ..Default::default()
                })
                .await,
        )
    });
    call!(c, "Admin/CreatePartitions", false, false, |ch| unary(
        AdminClient::new(ch)
            .create_partitions(v1::CreatePartitionsRequest {
                name: t(),
                partitions: 2,
            })
            .await
    ));
    call!(c, "ClusterManager/CreatePartitions", false, false, |ch| {
        unary(
            ClusterManagerClient::new(ch)
                .create_partitions(v1::CreatePartitionsRequest {
                    name: t(),
                    partitions: 2,
                })
                .await,
        )
    });
    call!(c, "ClusterManager/ClusterStatus", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .cluster_status(v1::ClusterStatusRequest {})
            .await
    ));
    call!(c, "ClusterManager/PlanBalance", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .plan_balance(v1::PlanBalanceRequest::default())
            .await
    ));
    call!(c, "ClusterManager/DecommissionBroker", false, false, |ch| {
        unary(
            ClusterManagerClient::new(ch)
                .decommission_broker(v1::DecommissionBrokerRequest {
                    broker_id: 999,
                    cancel: false,
                })
                .await,
        )
    });
    call!(c, "ClusterManager/SetBalancing", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .set_balancing(v1::SetBalancingRequest::default())
            .await
    ));
    call!(c, "ClusterManager/AddMember", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .add_member(v1::AddMemberRequest {
                node_id: 9,
                address: String::new()
            })
            .await
    ));
    call!(c, "ClusterManager/RemoveMember", false, false, |ch| unary(
        ClusterManagerClient::new(ch)
            .remove_member(v1::RemoveMemberRequest { node_id: 99 })
            .await
    ));
    for (name, rpc) in [
        ("Raft/AppendEntries", 0),
        ("Raft/Vote", 1),
        ("Raft/InstallSnapshot", 2),
        ("Raft/Forward", 3),
    ] {
        call!(c, "Raft", true, false, |ch| {
            let mut raft = RaftClient::new(ch);
            let payload = v1::RaftPayload::default();
            unary(match rpc {
                0 => raft.append_entries(payload).await,
                1 => raft.vote(payload).await,
                2 => raft.install_snapshot(payload).await,
                _ => raft.forward(payload).await,
            })
        });
        c.last_mut().unwrap().0 = name;
    }
    call!(c, "Access/CreateToken", false, false, |ch| unary(
        AccessClient::new(ch)
            .create_token(v1::CreateTokenRequest {
                principal: "someone".into(),
                expires_in_ms: None
            })
            .await
    ));
    call!(c, "Access/ListTokens", false, false, |ch| unary(
        AccessClient::new(ch)
            .list_tokens(v1::ListTokensRequest::default())
            .await
    ));
    call!(c, "Access/RevokeTokens", false, false, |ch| unary(
        AccessClient::new(ch)
            .revoke_tokens(v1::RevokeTokensRequest {
                target: Some(v1::revoke_tokens_request::Target::Id(
                    "0000000000000000".into()
                ))
            })
            .await
    ));
    call!(c, "Access/AddAcl", false, false, |ch| unary(
        AccessClient::new(ch)
            .add_acl(v1::AddAclRequest {
                rule: Some(rule("someone", "orders.", v1::Operation::Describe))
            })
            .await
    ));
    call!(c, "Access/RemoveAcl", false, false, |ch| unary(
        AccessClient::new(ch)
            .remove_acl(v1::RemoveAclRequest {
                rule: Some(rule("nobody-ever", "x", v1::Operation::Describe))
            })
            .await
    ));
    call!(c, "Access/ListAcls", false, false, |ch| unary(
        AccessClient::new(ch)
            .list_acls(v1::ListAclsRequest::default())
            .await
    ));
    call!(c, "Access/WatchAccess", true, false, |ch| streaming(
        AccessClient::new(ch)
            .watch_access(v1::WatchAccessRequest {})
            .await
    )
    .await);
    call!(c, "ConsumerManager/Subscribe", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .subscribe(v1::SubscribeRequest {
                topic: t(),
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Unsubscribe", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .unsubscribe(v1::UnsubscribeRequest {
                topic: t(),
                subscription: "orders.none".into()
            })
            .await
    ));
    call!(c, "ConsumerManager/ListSubscriptions", false, true, |ch| {
        unary(
            ConsumerManagerClient::new(ch)
                .list_subscriptions(v1::ListSubscriptionsRequest::default())
                .await,
        )
    });
    call!(c, "ConsumerManager/JoinGroup", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .join_group(v1::JoinGroupRequest {
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/LeaveGroup", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .leave_group(v1::LeaveGroupRequest {
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Read", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .read(v1::ReadRequest {
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Ack", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .ack(v1::AckRequest {
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Nack", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .nack(v1::NackRequest {
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Commit", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .commit(v1::CommitRequest {
                subscription: s(),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Seek", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .seek(v1::SeekRequest {
                subscription: s(),
                target: Some(v1::seek_request::Target::Earliest(true)),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/Stream", false, false, |ch| {
        let open = v1::StreamRequest {
            kind: Some(v1::stream_request::Kind::Open(v1::StreamOpen {
                subscription: "orders.none".into(),
                member_id: String::new(),
                credits: 1,
                batched: false,
            })),
        };
        streaming(
            ConsumerManagerClient::new(ch)
                .stream(tokio_stream::iter([open]))
                .await,
        )
        .await
    });
    call!(c, "ConsumerManager/Presence", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .presence(v1::PresenceRequest {
                topic: t(),
                subscription: String::new()
            })
            .await
    ));
    call!(c, "ConsumerManager/History", false, false, |ch| unary(
        ConsumerManagerClient::new(ch)
            .history(v1::HistoryRequest {
                topic: t(),
                range: Some(v1::history_request::Range::Last(1)),
                ..Default::default()
            })
            .await
    ));
    call!(c, "ConsumerManager/ReplayDeadLetters", false, false, |ch| {
        unary(
            ConsumerManagerClient::new(ch)
                .replay_dead_letters(v1::ReplayDeadLettersRequest {
                    subscription: s(),
                    ..Default::default()
                })
                .await,
        )
    });
    c
}

/// Every `Service/Method` of package pubsub.v1, from the descriptors reflection serves.
pub(super) fn methods() -> Vec<&'static str> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(pubsub_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut names: Vec<&'static str> = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .flat_map(|s| {
            s.method
                .iter()
                .map(move |m| format!("{}/{}", s.name(), m.name()))
        })
        .map(|n| &*Box::leak(n.into_boxed_str()))
        .collect();
    names.sort();
    names
}

fn rule(principal: &str, prefix: &str, operation: v1::Operation) -> v1::AclRule {
    v1::AclRule {
        principal: principal.into(),
        resource_type: v1::ResourceType::TopicPrefix as i32,
        resource_name: prefix.into(),
        operation: operation as i32,
    }
}
