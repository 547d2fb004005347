//! Record-level gRPC (Publish, ReadRecords) for clients without a RecordBatch codec:
//! any broker answers (forwarding to leaders), keys land where the SDK and Kafka
//! clients put them, and the Python example runs against a real server.

use std::collections::HashMap;
use std::process::Command;

use bytes::Bytes;
use pubsub_proto::partitioner::partition_for_key;
use pubsub_proto::v1::{self, broker_client::BrokerClient};
use pubsub_tests::{Cluster, Server, pubsub};

async fn broker(address: &str) -> BrokerClient<tonic::transport::Channel> {
    BrokerClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn keyed(i: usize) -> v1::PublishRecord {
    v1::PublishRecord {
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(format!("value-{i}"))),
        headers: vec![v1::RecordHeader {
            key: "n".into(),
            value: Some(Bytes::from(i.to_string())),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_broker_publishes_and_reads_records_led_elsewhere() {
    let cluster = Cluster::start("6s");
    crate::cluster::wait_for_brokers(&cluster).await;
    let first = cluster.brokers[0].address().to_string();
    // One replica per partition: two of the three partitions live on other brokers.
    let created = pubsub(
        &first,
        &[
            "create",
            "spread",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let records: Vec<_> = (0..300).map(keyed).collect();
    let request = v1::PublishRequest {
        topic: "spread".into(),
        records,
        acks: v1::Acks::All as i32,
    };
    let published = broker(&first)
        .await
        .publish(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.positions.len(), 300);
    let mut by_partition: HashMap<u32, Vec<(u64, usize)>> = HashMap::new();
    for (i, position) in published.positions.iter().enumerate() {
        assert_eq!(
            position.partition,
            partition_for_key(format!("key-{i}").as_bytes(), 3),
            "murmur2 placement"
        );
        by_partition
            .entry(position.partition)
            .or_default()
            .push((position.offset, i));
    }
    assert_eq!(by_partition.len(), 3);
    // Read every partition back through another broker.
    let mut reader = broker(cluster.brokers[1].address()).await;
    for (partition, mut expected) in by_partition {
        expected.sort();
        let request = v1::ReadRecordsRequest {
            topic: "spread".into(),
            partition,
            offset: 0,
            max_records: 1000,
            max_wait_ms: 0,
        };
        let read = reader.read_records(request).await.unwrap().into_inner();
        let got: Vec<(u64, String)> = read
            .records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = expected
            .iter()
            .map(|(o, i)| (*o, format!("value-{i}")))
            .collect();
        assert_eq!(got, want, "partition {partition}");
        assert_eq!(read.next_offset, want.len() as u64);
        assert_eq!(read.high_watermark, want.len() as u64);
        assert!(
            read.records
                .iter()
                .all(|r| r.headers.len() == 1 && r.delivery_attempt == 0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_are_refused_with_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert!(
        pubsub(server.address(), &["create", "t", "--partitions", "2"], b"")
            .status
            .success()
    );
    let mut client = broker(server.address()).await;
    let empty = v1::PublishRequest {
        topic: "t".into(),
        ..Default::default()
    };
    assert_eq!(
        client.publish(empty).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let past = v1::PublishRequest {
        topic: "t".into(),
        records: vec![v1::PublishRecord {
            partition: Some(2),
            ..Default::default()
        }],
        acks: 0,
    };
    assert_eq!(
        client.publish(past).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let unknown = v1::PublishRequest {
        topic: "nope".into(),
        records: vec![keyed(1)],
        acks: 0,
    };
    assert_eq!(
        client.publish(unknown).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    // A record larger than the topic's batch limit is refused, not split or stored.
    let large = v1::PublishRequest {
        topic: "t".into(),
        records: vec![v1::PublishRecord {
            value: Some(Bytes::from(vec![0u8; 2 << 20])),
            ..Default::default()
        }],
        acks: 0,
    };
    assert_eq!(
        client.publish(large).await.unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
}

#[test]
fn the_python_example_publishes_and_reads() {
    let has_grpc = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_grpc {
        assert!(
            std::env::var_os("PUBSUB_TESTS_REQUIRE_KAFKA_CLIENTS").is_none(),
            "grpcio and grpcio-tools are missing"
        );
        eprintln!("NOT RUN: the_python_example_publishes_and_reads: needs grpcio and grpcio-tools");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python");
    let generated = Command::new(format!("{example}/generate.sh"))
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let run = Command::new("python3")
        .arg(format!("{example}/quickstart.py"))
        .env("PUBSUB_SERVER", server.address())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = String::from_utf8(run.stdout).unwrap();
    assert_eq!(printed, "0 0 py hello 0\n0 1 py hello 1\n0 2 py hello 2\n");
    let read = pubsub(server.address(), &["read", "greetings"], b"");
    assert_eq!(String::from_utf8_lossy(&read.stdout).lines().count(), 3);
}
