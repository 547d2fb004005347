//! Three cluster managers and three brokers as real processes: Raft leader failover,
//! restart from disk, broker fencing and partition leader election.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pubsub_client::{
    Admin, Client, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord,
};
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use pubsub_tests::{Cluster, pubsub};

pub async fn status(address: &str) -> Option<v1::ClusterStatusResponse> {
    let mut stub = ClusterManagerClient::connect(format!("http://{address}"))
        .await
        .ok()?;
    let call = stub.cluster_status(v1::ClusterStatusRequest {});
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
}

/// Waits until some live manager reports a leader that is live; returns its node id.
async fn wait_for_leader(cluster: &Cluster, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let live: HashSet<u64> = (0..3)
        .filter(|&i| cluster.managers[i].pid().is_some())
        .map(|i| i as u64 + 1)
        .collect();
    loop {
        for address in cluster.live_managers() {
            if let Some(status) = status(&address).await
                && let Some(leader) = status.leader_id
                && live.contains(&leader)
            {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no Raft leader within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until all three brokers are registered and alive.
pub async fn wait_for_brokers(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for address in cluster.live_managers() {
            if let Some(status) = status(&address).await {
                let alive = status
                    .brokers
                    .iter()
                    .filter(|b| b.broker.as_ref().is_some_and(|b| !b.fenced))
                    .count();
                if alive == 3 {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the three brokers did not register"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn topics(client: &Client) -> Vec<String> {
    Admin::new(client.clone())
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

fn topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions: 6,
        replication_factor: 3,
        ..NewTopic::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_leader_kill_9_elects_a_new_leader_and_keeps_every_topic() {
    let mut cluster = Cluster::start("6s");
    wait_for_brokers(&cluster).await;
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let admin = Admin::new(client.clone());
    for name in ["a", "b", "c"] {
        admin.create_topic(topic(name)).await.unwrap();
    }
    let leader = wait_for_leader(&cluster, Duration::from_secs(10)).await;
    cluster.managers[leader as usize - 1].kill9();
    let killed_at = Instant::now();
    let new_leader = wait_for_leader(&cluster, Duration::from_secs(5)).await;
    assert_ne!(new_leader, leader);
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "new leader after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(topics(&client).await, ["a", "b", "c"]);
    admin.create_topic(topic("d")).await.unwrap();
    assert_eq!(topics(&client).await, ["a", "b", "c", "d"]);

    // Stop everything, start everything: the metadata comes back from disk.
    for node in cluster
        .managers
        .iter_mut()
        .chain(cluster.brokers.iter_mut())
    {
        node.kill9();
    }
    for node in cluster
        .managers
        .iter_mut()
        .chain(cluster.brokers.iter_mut())
    {
        node.restart();
    }
    let client = Client::connect(cluster.brokers[1].address()).await.unwrap();
    assert_eq!(topics(&client).await, ["a", "b", "c", "d"]);
    let described = Admin::new(client.clone())
        .describe_topic("d")
        .await
        .unwrap();
    let partitions = described.topic.unwrap().partitions;
    assert_eq!(partitions.len(), 6);
    assert!(partitions.iter().all(|p| p.replicas.len() == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker_is_fenced_and_its_partitions_get_leaders_from_the_isr() {
    let mut cluster = Cluster::start("2s");
    wait_for_brokers(&cluster).await;
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let created = Admin::new(client.clone())
        .create_topic(topic("t"))
        .await
        .unwrap();
    let led_by = |id: u32, partitions: &[v1::PartitionDescription]| -> Vec<u32> {
        partitions
            .iter()
            .filter(|p| p.leader == Some(id))
            .map(|p| p.partition)
            .collect()
    };
    // Leaders are spread: every broker leads two of the six partitions.
    for id in 1..=3 {
        assert_eq!(
            led_by(id, &created.partitions).len(),
            2,
            "{:?}",
            created.partitions
        );
    }
    // Records reach whichever broker leads each partition.
    let producer = Producer::new(client.clone(), "t", ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..60 {
        let record = ProducerRecord {
            partition: Some(PartitionId(i % 6)),
            ..ProducerRecord::value(format!("r{i}"))
        };
        producer.send(record).await.unwrap().wait().await.unwrap();
    }

    let victim = 3u32;
    let orphaned = led_by(victim, &created.partitions);
    cluster.brokers[victim as usize - 1].kill9();
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(2 + 2);
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    loop {
        // While leases are judged (2 s here), a survivor unsure of its own lease
        // answers UNAVAILABLE, and so may every broker at once: ask again.
        let described = match Admin::new(client.clone()).describe_topic("t").await {
            Ok(described) => described,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no broker describes the topic: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let partitions = described.topic.unwrap().partitions;
        let moved = orphaned.iter().all(|&p| {
            let partition = &partitions[p as usize];
            partition.leader.is_some_and(|l| l != victim)
                && partition.leader_epoch > created.partitions[p as usize].leader_epoch
                && !partition.in_sync_replicas.contains(&victim)
        });
        if moved {
            for &p in &orphaned {
                let partition = &partitions[p as usize];
                let before = &created.partitions[p as usize];
                assert!(
                    before.in_sync_replicas.contains(&partition.leader.unwrap()),
                    "new leader came from the ISR"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions of broker {victim} still without a new leader: {partitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let fenced = |status: &v1::ClusterStatusResponse| {
        status.brokers.iter().any(|b| {
            b.broker
                .as_ref()
                .is_some_and(|b| b.id == victim && b.fenced)
        })
    };
    let manager = cluster.live_managers()[0].clone();
    assert!(
        fenced(&status(&manager).await.unwrap()),
        "cluster status shows broker {victim} fenced"
    );
    let printed = pubsub(
        cluster.brokers[0].address(),
        &["cluster", "status", "--cluster-manager", &manager],
        b"",
    );
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(text.contains("fenced"), "{text}");

    // Restarted, it registers again and is no longer fenced.
    cluster.brokers[victim as usize - 1].restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fenced(&status(&manager).await.unwrap()) {
        assert!(
            Instant::now() < deadline,
            "broker {victim} still fenced after its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_epoch_is_rejected() {
    let cluster = Cluster::start("6s");
    wait_for_brokers(&cluster).await;
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let created = Admin::new(client).create_topic(topic("s")).await.unwrap();
    let partition = &created.partitions[0];
    let mut stub =
        ClusterManagerClient::connect(format!("http://{}", cluster.managers[0].address()))
            .await
            .unwrap();
    let stale = v1::UpdateIsrRequest {
        broker_id: partition.leader.unwrap(),
        topic: "s".into(),
        partition: 0,
        leader_epoch: partition.leader_epoch - 1,
        in_sync_replicas: vec![partition.leader.unwrap()],
    };
    let err = stub.update_isr(stale).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );
}
