//! Growing a topic: `pubsub alter --partitions` on a 3-broker cluster while a producer
//! runs; the producer starts using the new partitions without a restart and nothing
//! written before or after is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pubsub_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use pubsub_tests::{Cluster, pubsub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_are_placed_served_and_used_by_a_running_producer() {
    let cluster = Cluster::start("6s");
    let server = cluster.brokers[0].address().to_string();
    let (client, _) = crate::create_replicated(&cluster, "grow", 3).await;
    // acks=all: a record acknowledged is below the high watermark, so the read sees it.
    let config = ProducerConfig {
        acks: Acks::All,
        metadata_max_age: Duration::from_millis(200),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, "grow", config).await.unwrap();
    let mut sent = 0u64;
    let mut send = async |producer: &Producer, count: u64| {
        let mut deliveries = Vec::new();
        for _ in 0..count {
            let record = ProducerRecord::keyed(format!("key-{sent}"), format!("value-{sent}"));
            deliveries.push(producer.send(record).await.unwrap());
            sent += 1;
        }
        producer.flush().await.unwrap();
        let mut partitions = HashSet::new();
        for delivery in deliveries {
            partitions.insert(delivery.wait().await.unwrap().partition.0);
        }
        partitions
    };
    assert!(send(&producer, 300).await.iter().all(|p| *p < 3));

    let altered = pubsub(&server, &["alter", "grow", "--partitions", "6"], b"");
    assert!(
        altered.status.success(),
        "{}",
        String::from_utf8_lossy(&altered.stderr)
    );
    assert!(String::from_utf8_lossy(&altered.stdout).contains("6 partitions"));
    let refused = pubsub(&server, &["alter", "grow", "--partitions", "4"], b"");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("must be higher"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while producer.partitions() < 6 {
        assert!(
            Instant::now() < deadline,
            "the producer never saw the new partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used = send(&producer, 600).await;
    assert!(
        used.iter().any(|p| *p >= 3),
        "keyed records reach the new partitions: {used:?}"
    );

    // Every replica of the new partitions serves: all records read back, each once.
    let read = pubsub(&server, &["read", "grow"], b"");
    let lines: Vec<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(String::from)
        .collect();
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(lines.len() as u64, sent);
    assert_eq!(unique.len() as u64, sent);
    let described = pubsub(&server, &["describe", "grow", "--output", "json"], b"");
    let description: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    let partitions = description["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 6);
    assert!(
        partitions
            .iter()
            .all(|p| p["in_sync_replicas"].as_array().unwrap().len() == 3),
        "{description}"
    );

    // The balance plan: placement left replicas even; draining a broker of three with
    // RF 3 has nowhere to go, so every partition is stuck and only leaders move off it.
    let manager = cluster.managers[0].address().to_string();
    let plan = |extra: &[&str]| {
        let mut args = vec!["--output", "json", "cluster", "balance", "--dry-run"];
        args.extend_from_slice(&["--cluster-manager", &manager]);
        args.extend_from_slice(extra);
        let output = pubsub(&server, &args, b"");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let balanced = plan(&[]);
    assert!(
        balanced["moves"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["kind"] == "leader"),
        "{balanced}"
    );
    let drained = plan(&["--drain", "1"]);
    let stuck = drained["stuck"].as_array().unwrap();
    assert_eq!(stuck.len(), 6, "{drained}");
    assert!(
        stuck[0]["reason"]
            .as_str()
            .unwrap()
            .contains("add a broker"),
        "{drained}"
    );
    for m in drained["moves"].as_array().unwrap() {
        assert_eq!(m["kind"], "leader", "{drained}");
        assert_ne!(m["to"][0], 1, "{drained}");
    }
}

/// A group subscription made on 2 partitions reads the partitions added later: records
/// written to all 4 after `alter` are delivered, and the group's description lists 4.
#[test]
fn a_subscription_takes_partitions_added_to_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = pubsub_tests::Server::start(dir.path());
    let address = server.address();
    let run = |args: &[&str], input: &[u8]| {
        let output = pubsub(address, args, input);
        assert!(
            output.status.success(),
            "pubsub {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["create", "widen", "--partitions", "2"], b"");
    let subscribe = [
        "subscribe",
        "widen",
        "-s",
        "wide",
        "--group",
        "--from-beginning",
        "--count",
    ];
    run(&["write", "widen"], b"first\n");
    run(&[&subscribe[..], &["1"]].concat(), b"");
    run(&["alter", "widen", "--partitions", "4"], b"");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let described = run(&["--output", "json", "groups", "describe", "wide"], b"");
        let described: serde_json::Value = serde_json::from_str(&described).unwrap();
        if described["partitions"].as_array().unwrap().len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "still {described}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    run(
        &["write", "widen", "--key-separator", ":"],
        lines.as_bytes(),
    );
    let read = run(&[&subscribe[..], &["40", "--format", "json"]].concat(), b"");
    let partitions: HashSet<u64> = read
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["partition"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(read.lines().count(), 40, "{read}");
    assert!(
        partitions.iter().any(|p| *p >= 2),
        "records of the added partitions: {read}"
    );
}
