//! A metadata store that comes back empty (damaged, or its files replaced) is refused
//! with a message that says what happened, and nothing is deleted because of it: a
//! cluster manager that silently started empty would have its broker delete every
//! partition as no longer assigned.

use std::path::Path;
use std::time::{Duration, Instant};

use pubsub_tests::{Server, pubsub};

/// Removes a sled store's files, keeping the directory and its `STORE_ID`.
fn wipe_store(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "STORE_ID") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Starts a standalone server on `data`, writes a record to topic `kept`, stops it.
fn server_with_a_topic(data: &Path) {
    let mut server = Server::start(data);
    assert!(
        pubsub(server.address(), &["create", "kept"], b"")
            .status
            .success()
    );
    let written = pubsub(server.address(), &["write", "kept"], b"one\n");
    assert!(written.status.success());
    server.terminate();
}

/// `pubsubd standalone` on `data` at `listen`, without metrics or Kafka listeners,
/// run by the caller (these servers never become ready).
fn standalone(data: &Path, listen: &str) -> std::process::Command {
    let mut command = std::process::Command::new(pubsub_tests::binary("pubsubd"));
    command
        .args(["standalone", "--data-dir", &data.display().to_string()])
        .args(["--listen", listen])
        .env("PUBSUB_METRICS_LISTEN", "off")
        .env("PUBSUB_KAFKA_LISTEN", "off");
    command
}

#[test]
fn a_cluster_manager_store_that_lost_its_records_is_refused_and_no_data_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    server_with_a_topic(&data);
    let store = data.join("cluster-manager").join("raft");
    assert!(store.join("STORE_ID").exists());
    wipe_store(&store);

    // The server never becomes ready (its consumer manager waits for metadata the
    // refused store cannot give), so it is watched without waiting for readiness.
    let address = format!("127.0.0.1:{}", pubsub_tests::free_port());
    let mut server = standalone(&data, &address)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partition = data.join("broker").join("kept-0");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        assert!(partition.exists(), "the partition's data was deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = pubsub(&address, &["list"], b"");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        !listed.status.success(),
        "served metadata from an empty store"
    );
}

#[test]
fn a_consumer_manager_store_that_lost_its_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    server_with_a_topic(&data);
    let store = data.join("consumer-manager").join("sled");
    assert!(store.join("STORE_ID").exists());
    wipe_store(&store);

    let output = standalone(&data, "127.0.0.1:0").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("lost its records"), "{stderr}");
}
