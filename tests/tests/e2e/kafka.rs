//! The Kafka listener against real Kafka clients: kcat (librdkafka), kafka-python and
//! confluent-kafka (librdkafka again, through Python), driven by
//! `tests/kafka/clients.py`. Records cross between the Kafka protocol and gRPC both
//! ways, through the CLI and a subscription too.
//!
//! Without kcat or the Python packages the tests say NOT RUN, or fail if
//! `PUBSUB_TESTS_REQUIRE_KAFKA_CLIENTS` is set (CI installs the clients and sets it).

use std::collections::{HashMap, HashSet};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pubsub_tests::{Server, free_port, pubsub};
use serde_json::Value;

/// Longest a client command may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether kcat and both Python clients are installed; says NOT RUN if not.
pub(crate) fn clients_present(test: &str) -> bool {
    let kcat = Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let python = Command::new("python3")
        .args(["-c", "import kafka, confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if kcat && python {
        return true;
    }
    assert!(
        std::env::var_os("PUBSUB_TESTS_REQUIRE_KAFKA_CLIENTS").is_none(),
        "{test}: kcat ({kcat}) or the Python clients kafka-python and confluent-kafka ({python}) are missing"
    );
    eprintln!("NOT RUN: {test}: needs kcat, kafka-python and confluent-kafka");
    false
}

/// A standalone server with a Kafka listener; returns it and the Kafka address.
pub(crate) fn start(dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let kafka = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--kafka-listen", kafka.as_str()];
    args.extend_from_slice(extra);
    (Server::start_with(dir, "127.0.0.1:0", &args), kafka)
}

/// Runs `command`, killing it after [`CLIENT_TIMEOUT`]; stdin gets `input`.
fn run(mut command: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a Kafka client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(CLIENT_TIMEOUT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().expect("wait for a Kafka client");
    let _ = done.send(());
    output
}

pub(crate) fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `clients.py COMMAND KAFKA TOPIC ARG` and parses its JSON summary.
pub(crate) fn python(command: &str, kafka: &str, topic: &str, arg: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/clients.py");
    let mut python = Command::new("python3");
    python.args([script, command, kafka, topic, arg]);
    let out = ok(run(python, b""), &format!("clients.py {command}"));
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("clients.py {command} printed {out:?}: {e}"))
}

pub(crate) fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn kcat(kafka: &str, args: &[&str], input: &[u8]) -> String {
    let mut command = Command::new("kcat");
    command.args(["-b", kafka]).args(args);
    ok(run(command, input), &format!("kcat {args:?}"))
}

#[test]
fn kcat_records_read_back_through_grpc_a_subscription_and_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    if !clients_present("kcat_records_read_back") {
        return;
    }
    let (server, kafka) = start(dir.path(), &[]);
    let grpc = server.address();
    ok(
        pubsub(grpc, &["create", "orders", "--partitions", "3"], b""),
        "create",
    );

    // Kafka -> gRPC: keyed records with a header.
    kcat(
        &kafka,
        &["-P", "-t", "orders", "-K", ":", "-H", "origin=kcat"],
        b"alice:one\nbob:two\ncarol:three\n",
    );
    let read = json_lines(&ok(
        pubsub(grpc, &["read", "orders", "--format", "json"], b""),
        "read",
    ));
    let got: HashSet<(String, String)> = read
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: HashSet<(String, String)> = [("alice", "one"), ("bob", "two"), ("carol", "three")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(
        read.iter()
            .all(|r| r["headers"][0]["key"] == "origin" && r["headers"][0]["value"] == "kcat"),
        "{read:?}"
    );
    let subscribed = ok(
        pubsub(
            grpc,
            &[
                "subscribe",
                "orders",
                "--subscription",
                "audit",
                "--from-beginning",
                "--count",
                "3",
                "--format",
                "json",
            ],
            b"",
        ),
        "subscribe",
    );
    assert_eq!(json_lines(&subscribed).len(), 3, "{subscribed}");

    // gRPC -> Kafka.
    ok(
        pubsub(
            grpc,
            &["write", "orders", "--key-separator", ":"],
            b"dave:four\n",
        ),
        "write",
    );
    let consumed = kcat(&kafka, &["-C", "-t", "orders", "-e", "-f", "%k=%s\\n"], b"");
    let lines: HashSet<&str> = consumed.lines().collect();
    for want in ["alice=one", "bob=two", "carol=three", "dave=four"] {
        assert!(lines.contains(want), "kcat read {consumed:?}");
    }
    // Metadata names this broker at its Kafka address.
    let listed = kcat(&kafka, &["-L", "-t", "orders"], b"");
    assert!(
        listed.contains(&format!("at {kafka}")) && listed.contains("3 partitions"),
        "{listed}"
    );
}

#[test]
fn records_produced_with_acks_0_become_readable() {
    let dir = tempfile::tempdir().unwrap();
    if !clients_present("acks_0") {
        return;
    }
    let (server, kafka) = start(dir.path(), &[]);
    ok(
        pubsub(
            server.address(),
            &["create", "fire", "--partitions", "1"],
            b"",
        ),
        "create",
    );
    // Nothing answers an acks=0 produce, but the records it carried are stored and
    // must become visible like any others (not only once a later produce moves the
    // log end past them).
    kcat(
        &kafka,
        &["-P", "-t", "fire", "-X", "acks=0"],
        b"one\ntwo\nthree\n",
    );
    let consumed = kcat(
        &kafka,
        &[
            "-C",
            "-t",
            "fire",
            "-o",
            "beginning",
            "-c",
            "3",
            "-f",
            "%s\\n",
        ],
        b"",
    );
    assert_eq!(
        consumed.lines().collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
}

#[test]
fn kafka_python_creates_produces_with_kafka_partitioning_and_consumes() {
    let dir = tempfile::tempdir().unwrap();
    if !clients_present("kafka_python") {
        return;
    }
    let (server, kafka) = start(dir.path(), &[]);
    let summary = python("kafka-python", &kafka, "kp", "200");
    assert_eq!(summary["acked"], 200);
    assert!(
        summary["retention_ms"]
            .as_str()
            .unwrap()
            .contains("3600000"),
        "{summary}"
    );
    assert_eq!(
        summary["partitions_after"], 5,
        "CreatePartitions raised the count"
    );
    let read = summary["read"].as_array().unwrap();
    assert_eq!(read.len(), 200, "consumed back through the Kafka listener");
    assert!(
        read.iter()
            .all(|r| r["headers"]["origin"] == "kafka-python")
    );
    // kafka-python partitions keys with murmur2, as the SDK does: `pubsub write` puts
    // the same keys on the same partitions.
    let placed: HashMap<String, u64> = summary["placed"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let lines: String = (0..200).map(|i| format!("key-{i}:sdk-{i}\n")).collect();
    ok(
        pubsub(
            server.address(),
            &["write", "kp", "--key-separator", ":"],
            lines.as_bytes(),
        ),
        "write",
    );
    let read = json_lines(&ok(
        pubsub(server.address(), &["read", "kp", "--format", "json"], b""),
        "read",
    ));
    let sdk: Vec<&Value> = read
        .iter()
        .filter(|r| r["value"].as_str().unwrap().starts_with("sdk-"))
        .collect();
    assert_eq!(sdk.len(), 200);
    for record in sdk {
        let key = record["key"].as_str().unwrap();
        assert_eq!(
            record["partition"].as_u64().unwrap(),
            placed[key],
            "key {key}"
        );
    }
}

#[test]
fn confluent_idempotent_producer_and_consumer() {
    let dir = tempfile::tempdir().unwrap();
    if !clients_present("confluent") {
        return;
    }
    let (server, kafka) = start(dir.path(), &[]);
    let summary = python("confluent", &kafka, "ck", "5000");
    assert_eq!(summary["acked"], 5000, "{summary}");
    assert_eq!(summary["unflushed"], 0);
    let values: HashSet<&str> = summary["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(values.len(), 5000, "consumed each record once");
    let read = json_lines(&ok(
        pubsub(server.address(), &["read", "ck", "--format", "json"], b""),
        "read",
    ));
    assert_eq!(read.len(), 5000, "and gRPC reads the same records");
}

#[test]
fn sasl_plain_takes_a_token_as_the_password() {
    let dir = tempfile::tempdir().unwrap();
    if !clients_present("sasl") {
        return;
    }
    let (server, kafka) = start(dir.path(), &["--auth"]);
    let token = pubsub_tests::admin_token(
        dir.path(),
        pubsub_tests::lists_tokens(server.address(), &[]),
    );
    let created = Command::new(pubsub_tests::binary("pubsub"))
        .args([
            "--server",
            server.address(),
            "--token",
            &token,
            "create",
            "secure",
        ])
        .output()
        .unwrap();
    ok(created, "create");
    let summary = python("sasl", &kafka, "secure", &token);
    assert_eq!(summary["with_token"], "ok", "{summary}");
    assert_ne!(summary["with_wrong_token"], "ok", "{summary}");
    // Group calls reach the consumer manager with the client's token.
    assert_eq!(summary["group_read"], "secret", "{summary}");
}

/// Spawns `clients.py COMMAND ...` in the background; [`finish`] collects its summary.
fn python_background(command: &str, kafka: &str, topic: &str, arg: &str) -> std::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/clients.py");
    Command::new("python3")
        .args([script, command, kafka, topic, arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn clients.py")
}

fn finish(child: std::process::Child) -> Value {
    let out = ok(
        child.wait_with_output().unwrap(),
        "clients.py in the background",
    );
    serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap()
}

#[test]
fn idempotent_confluent_producer_across_a_leader_kill_loses_and_duplicates_nothing() {
    if !clients_present("idempotent_across_leader_kill") {
        return;
    }
    let mut cluster = pubsub_tests::Cluster::start("2s");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(crate::cluster::wait_for_brokers(&cluster));
    let grpc = cluster.brokers[1].address().to_string();
    let bootstrap = cluster.kafka.join(",");
    ok(
        pubsub(
            &grpc,
            &[
                "create",
                "ledger",
                "--partitions",
                "3",
                "--replication-factor",
                "3",
            ],
            b"",
        ),
        "create",
    );
    // About 4 s of records at 10,000/s; the kill comes 1.5 s in.
    const RECORDS: u64 = 40_000;
    let producer = python_background(
        "idempotent-stream",
        &bootstrap,
        "ledger",
        &RECORDS.to_string(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Broker 1 leads one of the three partitions (leaders are balanced at create).
    cluster.brokers[0].kill9();
    let summary = finish(producer);
    let acked: HashSet<u64> = summary["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let read = json_lines(&ok(
        pubsub(&grpc, &["read", "ledger", "--format", "json"], b""),
        "read",
    ));
    let mut seen = HashSet::new();
    let mut duplicated = 0;
    for record in &read {
        let value: u64 = record["value"].as_str().unwrap().parse().unwrap();
        if !seen.insert(value) {
            duplicated += 1;
        }
    }
    let lost = acked.difference(&seen).count();
    println!(
        "idempotent Kafka producer across a leader kill: sent {RECORDS}, acked {}, failed {}, lost 0 of acked: {}, duplicated {duplicated}",
        acked.len(),
        summary["failures"],
        lost == 0
    );
    assert_eq!(lost, 0, "acknowledged records missing: {summary}");
    assert_eq!(duplicated, 0, "records stored twice");
    assert_eq!(
        acked.len() as u64,
        RECORDS,
        "every record acknowledged in the end: {}",
        summary["failed"]
    );
}
