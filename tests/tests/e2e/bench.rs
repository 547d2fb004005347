//! A smoke run of each `pubsub bench` command with small counts: they work end to end
//! and report what they did. Figures are printed, never asserted.

use pubsub_tests::{Server, pubsub};

fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--output", "json", "bench"];
    full.extend_from_slice(args);
    let output = pubsub(server.address(), &full, b"");
    assert!(
        output.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn produce_consume_and_e2e_benchmarks_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let produced = bench(
        &server,
        &[
            "produce",
            "--topic",
            "b",
            "--create",
            "--partitions",
            "2",
            "--records",
            "5000",
            "--record-size",
            "200",
        ],
    );
    assert_eq!(produced["records"], 5000);
    assert_eq!(produced["bytes"], 5000 * 200);
    assert!(produced["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let consumed = bench(&server, &["consume", "--topic", "b", "--records", "5000"]);
    assert_eq!(consumed["records"], 5000);
    let subscribed = bench(&server, &["subscribe", "--topic", "b", "--records", "5000"]);
    assert_eq!(subscribed["records"], 5000);
    assert_eq!(subscribed["bytes"], 5000 * 200);
    assert!(subscribed.get("vs_consume").is_none());
    let against = bench(
        &server,
        &[
            "subscribe",
            "--topic",
            "b",
            "--records",
            "5000",
            "--vs-consume",
        ],
    );
    assert_eq!(against["records"], 5000);
    assert!(
        against["vs_consume"]["consume_records_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(against["vs_consume"]["ratio"].as_f64().unwrap() > 0.0);
    let e2e = bench(
        &server,
        &[
            "e2e",
            "--topic",
            "e",
            "--create",
            "--records",
            "500",
            "--rate",
            "5000",
        ],
    );
    assert_eq!(e2e["records"], 500);
    assert!(e2e["latency"]["max_ms"].as_f64().unwrap() > 0.0);
}

/// `bench produce --kafka` and `bench consume --kafka` go through the Kafka listener:
/// what one produces, the other reads, and gRPC reads the same count.
#[test]
fn kafka_mode_benchmarks_run() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!("127.0.0.1:{}", pubsub_tests::free_port());
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--kafka-listen", &kafka]);
    let produced = bench(
        &server,
        &[
            "produce",
            "--topic",
            "k",
            "--create",
            "--partitions",
            "3",
            "--records",
            "6000",
            "--kafka",
            &kafka,
        ],
    );
    assert_eq!(produced["records"], 6000);
    assert!(produced["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let consumed = bench(
        &server,
        &[
            "consume",
            "--topic",
            "k",
            "--records",
            "6000",
            "--kafka",
            &kafka,
        ],
    );
    assert_eq!(consumed["records"], 6000);
    assert_eq!(consumed["bytes"], 6000 * 100);
    let through_grpc = bench(&server, &["consume", "--topic", "k", "--records", "6000"]);
    assert_eq!(through_grpc["records"], 6000);
}
