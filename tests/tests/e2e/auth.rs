//! Authentication and access rules end to end, on `pubsubd standalone --auth`: every
//! RPC of every service against every kind of caller, prefix rules across every read
//! path, the bootstrap token, and the refused takeover of a live broker id.

use std::future::Future;
use std::pin::Pin;

use pubsub_proto::auth::Credentials;
use pubsub_proto::net::{Channel, ChannelPool, Link};
use pubsub_proto::v1::{
    self, access_client::AccessClient, admin_client::AdminClient, broker_client::BrokerClient,
    cluster_manager_client::ClusterManagerClient, consumer_manager_client::ConsumerManagerClient,
    raft_client::RaftClient,
};
use pubsub_tests::{Server, admin_token, lists_tokens, pubsub};
use tonic::Code;

type Call = Box<dyn Fn(Channel) -> Pin<Box<dyn Future<Output = Code> + Send>>>;

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
fn every_rpc() -> Vec<(&'static str, bool, bool, Call)> {
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
fn methods() -> Vec<&'static str> {
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

/// A standalone server with authentication on, and its admin token.
fn start_with_auth(dir: &std::path::Path) -> (Server, String) {
    let server = Server::start_with(dir, "127.0.0.1:0", &["--auth"]);
    let token = admin_token(dir, lists_tokens(server.address(), &[]));
    (server, token)
}

fn channel(server: &Server, credentials: Credentials) -> Channel {
    ChannelPool::new(Link::with_credentials(credentials))
        .channel(server.address())
        .unwrap()
}

/// A new token of `principal`, made with the admin token.
fn token_for(server: &Server, admin: &str, principal: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--token",
        admin,
        "token",
        "create",
        "--principal",
        principal,
    ];
    args.extend_from_slice(extra);
    let out = pubsub(server.address(), &args, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = pubsub(server.address(), args, b"");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every RPC of every service, called with no token, a malformed one, an expired one,
/// a revoked one, a valid one without rules and a valid one with admin on the cluster:
/// each answers the status its row says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_who_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start_with_auth(dir.path());
    cli_ok(&server, &["--token", &admin, "create", "orders.t"]);
    let expired = token_for(&server, &admin, "late", &["--expires", "1ms"]);
    let revoked = token_for(&server, &admin, "gone", &[]);
    cli_ok(
        &server,
        &["--token", &admin, "token", "revoke", "--principal", "gone"],
    );
    let nobody = token_for(&server, &admin, "nobody", &[]);
    let root = token_for(&server, &admin, "root", &[]);
    cli_ok(
        &server,
        &[
            "--token",
            &admin,
            "acl",
            "add",
            "--principal",
            "root",
            "--cluster",
            "--operation",
            "admin",
        ],
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bearer = |t: &str| Credentials::bearer(t).unwrap();
    let callers = [
        ("no token", Credentials::none()),
        ("malformed token", bearer("pst_not-a-token")),
        ("expired token", bearer(&expired)),
        ("revoked token", bearer(&revoked)),
        ("token without rules", bearer(&nobody)),
        ("token with admin on the cluster", bearer(&root)),
    ];
    let rpcs = every_rpc();
    let mut names: Vec<&str> = rpcs
        .iter()
        .map(|r| r.0)
        .filter(|n| !n.ends_with("as a replica"))
        .collect();
    names.sort();
    assert_eq!(names, methods(), "the matrix must cover every RPC");
    let mut wrong = Vec::new();
    for (name, node_only, listing, call) in rpcs {
        for (who, credentials) in &callers {
            let got = call(channel(&server, credentials.clone())).await;
            let ok = match *who {
                "token without rules" if listing => got == Code::Ok,
                "token without rules" => got == Code::PermissionDenied,
                "token with admin on the cluster" if node_only => got == Code::PermissionDenied,
                "token with admin on the cluster" => {
                    !matches!(got, Code::PermissionDenied | Code::Unauthenticated)
                }
                _ => got == Code::Unauthenticated,
            };
            if !ok {
                wrong.push(format!("{name} with {who}: {got:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
}

/// A principal allowed on topics under `orders.` reads them, and cannot read
/// `payments` through the broker, the consumer manager, history or presence; nor see
/// it listed.
#[test]
fn prefix_rules_hold_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start_with_auth(dir.path());
    for topic in ["orders.eu", "payments"] {
        cli_ok(&server, &["--token", &admin, "create", topic]);
        cli_ok(&server, &["--token", &admin, "write", topic, "secret"]);
    }
    let alice = token_for(&server, &admin, "alice", &[]);
    for args in [
        ["--topic-prefix", "orders."],
        ["--subscription-prefix", "orders."],
    ] {
        let mut rule = vec![
            "--token",
            &admin,
            "acl",
            "add",
            "--principal",
            "alice",
            "--operation",
            "consume",
        ];
        rule.extend_from_slice(&args);
        cli_ok(&server, &rule);
    }
    let as_alice = |args: &[&str]| {
        let mut all = vec!["--token", alice.as_str()];
        all.extend_from_slice(args);
        pubsub(server.address(), &all, b"")
    };
    // Allowed: the topic and its subscriptions.
    let read = as_alice(&["read", "orders.eu"]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("secret"));
    let history = as_alice(&["history", "orders.eu", "--last", "1"]);
    assert!(
        history.status.success(),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    let listed = as_alice(&["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("orders.eu") && !listed.contains("payments"),
        "{listed}"
    );
    // Refused: payments, whichever way.
    for args in [
        &["read", "payments"][..],
        &["describe", "payments"],
        &["history", "payments", "--last", "1"],
        &["presence", "payments"],
        &[
            "subscribe",
            "payments",
            "--subscription",
            "orders.sneaky",
            "--count",
            "1",
        ],
        &[
            "subscribe",
            "orders.eu",
            "--subscription",
            "other",
            "--count",
            "1",
        ],
        &["write", "orders.eu", "no produce right"],
    ] {
        let out = as_alice(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(said.contains("may not"), "{args:?}: {said}");
    }
}

/// The first start with --auth writes the admin token (mode 0600, never logged); a
/// restart keeps it and makes no other.
#[test]
fn the_admin_token_is_made_once_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, admin) = start_with_auth(dir.path());
    let path = dir.path().join("admin.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    server.restart();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), admin);
    let tokens = cli_ok(&server, &["--token", &admin, "token", "list"]);
    assert_eq!(
        tokens.lines().filter(|l| l.contains("admin")).count(),
        1,
        "{tokens}"
    );
}

/// A registration that would move a live broker's id to another address is refused,
/// with authentication (a client token cannot even try) and without it (the lease
/// guards the id); the broker keeps serving at its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_broker_id_cannot_be_taken_over() {
    let takeover = v1::RegisterBrokerRequest {
        broker_id: 0,
        address: "10.6.6.6:9392".into(),
        ..Default::default()
    };
    let open_dir = tempfile::tempdir().unwrap();
    let open = Server::start(open_dir.path());
    // Once the broker has joined (it serves a create).
    cli_ok(&open, &["create", "still-here"]);
    let refused = ClusterManagerClient::new(channel(&open, Credentials::none()))
        .register_broker(takeover.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("lease holds"), "{refused:?}");
    cli_ok(&open, &["write", "still-here", "v"]);

    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start_with_auth(dir.path());
    let refused = ClusterManagerClient::new(channel(&server, Credentials::bearer(&admin).unwrap()))
        .register_broker(takeover.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = ClusterManagerClient::new(channel(
        &server,
        Credentials::node("a guessed secret").unwrap(),
    ))
    .register_broker(takeover)
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// An admin token made ahead with `pubsub token generate` (kept in a secret store) and
/// given with --admin-token-file is the first token; no file is written.
#[test]
fn an_admin_token_made_by_the_operator_is_the_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let generated = pubsub("127.0.0.1:1", &["token", "generate"], b"");
    assert!(generated.status.success());
    let token = String::from_utf8(generated.stdout)
        .unwrap()
        .trim()
        .to_string();
    let given = dir.path().join("given.token");
    std::fs::write(&given, format!("{token}\n")).unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        "127.0.0.1:0",
        &["--auth", "--admin-token-file", given.to_str().unwrap()],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = pubsub(server.address(), &["--token", &token, "token", "list"], b"");
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!data.join("admin.token").exists());
}
