//! Integration tests of the cluster manager: nodes started in-process through `run` on
//! loopback gRPC (127.0.0.1:0), data in temporary directories, every wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{Cluster, retry, wait_until};
use pubsub_proto::v1;
use tonic::Code;

/// Upper bound of every test: a hung test fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(45);

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test finished in time");
}

fn create_request(
    name: &str,
    partitions: u32,
    replication_factor: u32,
) -> v1::ClusterCreateTopicRequest {
    v1::ClusterCreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor,
        config: None,
        unclean_leader_election: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_creates_describes_and_deletes_topics() {
    bounded(async {
        let mut cluster = Cluster::start(1, harness::quiet_lease()).await;
        let mut client = cluster.client(1).await;
        cluster.register_brokers(1, 1..=1).await;

        let created = client
            .create_topic(v1::ClusterCreateTopicRequest {
                config: Some(v1::TopicConfig {
                    retention_ms: Some(60_000),
                    ..Default::default()
                }),
                ..create_request("orders", 3, 0)
            })
            .await
            .unwrap()
            .into_inner();
        assert!(created.created);
        let topic = created.topic.unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(topic.replication_factor, 1, "default capped by one broker");
        assert_eq!(topic.config.unwrap().retention_ms, Some(60_000));
        for partition in &topic.partitions {
            assert_eq!(partition.leader, Some(1));
            assert_eq!(partition.in_sync_replicas, vec![1]);
        }

        let again = client
            .create_topic(v1::ClusterCreateTopicRequest {
                config: Some(v1::TopicConfig {
                    retention_ms: Some(60_000),
                    ..Default::default()
                }),
                ..create_request("orders", 3, 0)
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!again.created, "an identical create is idempotent");
        let conflict = client
            .create_topic(create_request("orders", 4, 1))
            .await
            .unwrap_err();
        assert_eq!(conflict.code(), Code::AlreadyExists);
        let too_many = client
            .create_topic(create_request("wide", 1, 3))
            .await
            .unwrap_err();
        assert_eq!(too_many.code(), Code::InvalidArgument);
        assert_eq!(
            too_many.message(),
            "replication factor 3 exceeds the 1 live broker(s)"
        );
        for bad in [create_request("a/b", 1, 1), create_request("ok", 0, 1)] {
            let status = client.create_topic(bad).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        }

        let described = client
            .describe_topic(v1::DescribeTopicRequest {
                name: "orders".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(described.topic.unwrap().name, "orders");
        assert_eq!(described.brokers.len(), 1);
        let huge = client
            .describe_topic(v1::DescribeTopicRequest {
                name: "x".repeat(1 << 20),
            })
            .await
            .unwrap_err();
        assert_eq!(huge.code(), Code::InvalidArgument);
        assert!(huge.message().len() < 200, "{}", huge.message().len());
        let listed = client
            .list_topics(v1::ListTopicsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.topics.len(), 1);
        assert_eq!(listed.topics[0].partitions, 3);

        client
            .delete_topic(v1::DeleteTopicRequest {
                name: "orders".into(),
            })
            .await
            .unwrap();
        let gone = client
            .describe_topic(v1::DescribeTopicRequest {
                name: "orders".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        let gone = client
            .delete_topic(v1::DeleteTopicRequest {
                name: "orders".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);

        // A restart from the same data directory keeps the metadata and does not
        // initialize a new group.
        client
            .create_topic(create_request("kept", 2, 1))
            .await
            .unwrap();
        cluster.stop(1).await;
        cluster.restart(1).await;
        let mut client = cluster.client(1).await;
        let kept = retry(|| {
            let mut client = client.clone();
            async move {
                client
                    .describe_topic(v1::DescribeTopicRequest {
                        name: "kept".into(),
                    })
                    .await
            }
        })
        .await;
        assert_eq!(kept.topic.unwrap().partitions.len(), 2);
        let status = client
            .cluster_status(v1::ClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.members.len(), 1);
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_raft_payloads_are_invalid_arguments() {
    bounded(async {
        let mut cluster = Cluster::start(1, harness::quiet_lease()).await;
        let mut raft = cluster.raft_client(1).await;
        for data in [&b""[..], b"{", b"[1,2,3]", &[0xff; 64]] {
            let status = raft
                .append_entries(v1::RaftPayload {
                    data: data.to_vec().into(),
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            let status = raft
                .forward(v1::RaftPayload {
                    data: data.to_vec().into(),
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
        }
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_forward_writes_and_survive_losing_the_leader() {
    bounded(async {
        let mut cluster = Cluster::start(3, harness::quiet_lease()).await;
        let leader = cluster.wait_leader(&[1, 2, 3]).await;
        let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
        cluster.register_brokers(follower, 1..=3).await;

        // Created through a follower, which forwards to the leader.
        let mut via_follower = cluster.client(follower).await;
        let created = via_follower
            .create_topic(create_request("orders", 6, 3))
            .await
            .unwrap()
            .into_inner();
        assert!(created.created);
        let mut leaders = std::collections::BTreeMap::new();
        for p in created.topic.unwrap().partitions {
            assert_eq!(p.replicas.len(), 3);
            *leaders.entry(p.leader.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        for id in cluster.ids() {
            cluster.wait_for_topic(id, "orders").await;
        }

        // Lose the leader: a new one within 5 s, the data still there, writes work.
        let stopped_at = Instant::now();
        cluster.stop(leader).await;
        eprintln!("old leader stopped after {:?}", stopped_at.elapsed());
        let survivors: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let new_leader = cluster.wait_leader(&survivors).await;
        let failover = stopped_at.elapsed();
        eprintln!("new leader {new_leader} after {failover:?}");
        assert!(
            failover < Duration::from_secs(5),
            "failover took {failover:?}"
        );
        assert_ne!(new_leader, leader);
        for &id in &survivors {
            cluster.wait_for_topic(id, "orders").await;
        }
        let mut client = cluster.client(survivors[0]).await;
        client
            .create_topic(create_request("after-failover", 1, 2))
            .await
            .unwrap();

        // The old leader comes back from its data directory and catches up.
        cluster.restart(leader).await;
        cluster.wait_for_topic(leader, "after-failover").await;
        cluster.wait_for_topic(leader, "orders").await;
        let status = cluster.status(leader).await;
        assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3);
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_a_snapshot_interval_catches_up_after_restart() {
    bounded(async {
        let mut cluster = Cluster::start_with(3, harness::quiet_lease(), 20).await;
        let leader = cluster.wait_leader(&[1, 2, 3]).await;
        cluster.register_brokers(leader, 1..=2).await;
        let mut client = cluster.client(leader).await;
        client
            .create_topic(create_request("before", 1, 2))
            .await
            .unwrap();
        let lagging = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
        cluster.wait_for_topic(lagging, "before").await;
        cluster.stop(lagging).await;

        // Enough writes for several snapshots, so the log the follower needs is purged
        // and it must install a snapshot.
        for i in 0..60 {
            client
                .create_topic(create_request(&format!("while-down-{i}"), 1, 1))
                .await
                .unwrap();
        }
        cluster.restart(lagging).await;
        cluster.wait_for_topic(lagging, "while-down-59").await;
        cluster.wait_for_topic(lagging, "before").await;
        let status = cluster.status(lagging).await;
        assert!(status.applied_index.unwrap() >= 60);
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_fences_the_broker_and_moves_leadership_within_the_isr() {
    bounded(async {
        let lease = Duration::from_millis(1000);
        let mut cluster = Cluster::start(1, lease).await;
        let mut client = cluster.client(1).await;
        cluster.register_brokers(1, 1..=3).await;
        let topic = client
            .create_topic(create_request("fenced", 1, 3))
            .await
            .unwrap()
            .into_inner()
            .topic
            .unwrap();
        let partition = topic.partitions[0].clone();
        let old_leader = partition.leader.unwrap();
        let (out_of_sync, in_sync) = (partition.replicas[1], partition.replicas[2]);
        assert_eq!(partition.leader_epoch, 0);

        // The leader drops one follower from the ISR, so only the other may take over.
        let updated = client
            .update_isr(v1::UpdateIsrRequest {
                broker_id: old_leader,
                topic: "fenced".into(),
                partition: 0,
                leader_epoch: 0,
                in_sync_replicas: vec![old_leader, in_sync],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            updated.partition.unwrap().in_sync_replicas.len(),
            2,
            "ISR shrank"
        );

        let mut watch = client
            .watch_metadata(v1::WatchMetadataRequest {})
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.topics.len(), 1);

        // Everyone but the leader keeps heartbeating; the leader goes silent.
        let beating = cluster.heartbeat_in_background(1, vec![out_of_sync, in_sync]);
        let started = Instant::now();
        let moved = loop {
            let metadata = tokio::time::timeout(Duration::from_secs(10), watch.message())
                .await
                .expect("a metadata update in time")
                .unwrap()
                .unwrap();
            let p = &metadata.topics[0].partitions[0];
            if p.leader != Some(old_leader) {
                break metadata;
            }
        };
        eprintln!(
            "leadership moved {:?} after the watch started",
            started.elapsed()
        );
        let p = &moved.topics[0].partitions[0];
        assert_eq!(p.leader, Some(in_sync), "elected from the ISR only");
        assert_eq!(p.leader_epoch, 1);
        assert_eq!(p.in_sync_replicas, vec![in_sync]);
        let fenced = moved.brokers.iter().find(|b| b.id == old_leader).unwrap();
        assert!(fenced.fenced);

        // The fenced broker's heartbeats are refused until it registers again.
        let refused = client
            .heartbeat(v1::HeartbeatRequest {
                broker_id: old_leader,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);

        // An ISR update at the old epoch is stale; at the new one it works.
        let stale = client
            .update_isr(v1::UpdateIsrRequest {
                broker_id: in_sync,
                topic: "fenced".into(),
                partition: 0,
                leader_epoch: 0,
                in_sync_replicas: vec![in_sync],
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::FailedPrecondition);
        assert!(stale.message().contains("stale"), "{}", stale.message());
        client
            .update_isr(v1::UpdateIsrRequest {
                broker_id: in_sync,
                topic: "fenced".into(),
                partition: 0,
                leader_epoch: 1,
                in_sync_replicas: vec![in_sync, out_of_sync],
            })
            .await
            .unwrap();

        // Registering again unfences it, as a follower outside the ISR.
        cluster.register_brokers(1, old_leader..=old_leader).await;
        let status = cluster.status(1).await;
        let broker = status
            .brokers
            .iter()
            .find(|b| b.broker.as_ref().unwrap().id == old_leader)
            .unwrap();
        assert!(!broker.broker.as_ref().unwrap().fenced);
        assert_eq!(broker.partitions_led, 0);
        assert_eq!(status.under_replicated.len(), 1);
        let heartbeat = client
            .heartbeat(v1::HeartbeatRequest {
                broker_id: in_sync,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(heartbeat.assignments.len(), 1);
        assert_eq!(
            heartbeat.assignments[0].partition.as_ref().unwrap().leader,
            Some(in_sync)
        );
        beating.abort();
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isr_updates_with_a_stale_epoch_are_refused() {
    bounded(async {
        let mut cluster = Cluster::start(1, harness::quiet_lease()).await;
        let mut client = cluster.client(1).await;
        cluster.register_brokers(1, 1..=2).await;
        let topic = client
            .create_topic(create_request("epochs", 1, 2))
            .await
            .unwrap()
            .into_inner()
            .topic
            .unwrap();
        let leader = topic.partitions[0].leader.unwrap();
        for (epoch, broker, code) in [
            (-1, leader, Code::FailedPrecondition),
            (1, leader, Code::FailedPrecondition),
            (0, 99, Code::NotFound),
        ] {
            let status = client
                .update_isr(v1::UpdateIsrRequest {
                    broker_id: broker,
                    topic: "epochs".into(),
                    partition: 0,
                    leader_epoch: epoch,
                    in_sync_replicas: vec![leader],
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), code, "{}", status.message());
        }
        let missing = client
            .update_isr(v1::UpdateIsrRequest {
                broker_id: leader,
                topic: "epochs".into(),
                partition: 7,
                leader_epoch: 0,
                in_sync_replicas: vec![leader],
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_through_add_member() {
    bounded(async {
        let mut cluster = Cluster::start(3, harness::quiet_lease()).await;
        let leader = cluster.wait_leader(&[1, 2, 3]).await;
        cluster.register_brokers(leader, 1..=1).await;
        let mut client = cluster.client(leader).await;
        client
            .create_topic(create_request("existing", 1, 1))
            .await
            .unwrap();

        let address = cluster.start_joiner(4).await;
        let follower = cluster
            .ids()
            .into_iter()
            .find(|&id| id != leader && id != 4)
            .unwrap();
        let mut via_follower = cluster.client(follower).await;
        let added = via_follower
            .add_member(v1::AddMemberRequest {
                node_id: 4,
                address,
            })
            .await
            .unwrap()
            .into_inner();
        let voters: Vec<u64> = added
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        assert!(voters.contains(&4), "{voters:?}");
        cluster.wait_for_topic(4, "existing").await;
        wait_until("node 4 to count itself a voter", || {
            let mut cluster_client = cluster.status_client(4);
            async move {
                let status = cluster_client
                    .cluster_status(v1::ClusterStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                let voters = status.members.iter().filter(|m| m.voter).count();
                (voters == 4 && status.leader_id.is_some()).then_some(())
            }
        })
        .await;

        let removed = client
            .remove_member(v1::RemoveMemberRequest { node_id: 4 })
            .await
            .unwrap()
            .into_inner();
        assert!(removed.members.iter().all(|m| m.id != 4));
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_quorum_fail_unavailable_instead_of_hanging() {
    bounded(async {
        let mut cluster = Cluster::start(3, harness::quiet_lease()).await;
        let leader = cluster.wait_leader(&[1, 2, 3]).await;
        cluster.register_brokers(leader, 1..=1).await;
        for id in cluster.ids().into_iter().filter(|&id| id != leader) {
            cluster.stop(id).await;
        }
        let mut client = cluster.client(leader).await;
        let started = Instant::now();
        let status = client
            .create_topic(create_request("no-quorum", 1, 1))
            .await
            .unwrap_err();
        eprintln!(
            "no-quorum write failed after {:?}: {}",
            started.elapsed(),
            status.message()
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert!(started.elapsed() < Duration::from_secs(10));
        // Reads still answer from the local state.
        client.list_topics(v1::ListTopicsRequest {}).await.unwrap();
        cluster.shutdown().await;
    })
    .await;
}
