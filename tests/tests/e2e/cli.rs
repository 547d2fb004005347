//! The `pubsub` binary against a real server: the quick start, kill -9, and every
//! error case checked by exit code and message.

use std::collections::HashMap;

use pubsub_tests::{Server, pubsub};

fn ok(server: &Server, args: &[&str], stdin: &[u8]) -> String {
    let output = pubsub(server.address(), args, stdin);
    assert!(
        output.status.success(),
        "pubsub {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail; returns its one-line error.
fn fails(server: &Server, args: &[&str], needle: &str) -> String {
    fails_with_input(server, args, b"", needle)
}

fn fails_with_input(server: &Server, args: &[&str], stdin: &[u8], needle: &str) -> String {
    let output = pubsub(server.address(), args, stdin);
    assert!(!output.status.success(), "pubsub {args:?} succeeded");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line of error, got {stderr:?}"
    );
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    stderr
}

/// Reads every record as JSON lines and checks per-key order; returns them by key.
fn read_json(server: &Server, topic: &str) -> HashMap<String, Vec<u64>> {
    let out = ok(
        server,
        &["read", topic, "--from-beginning", "--format", "json"],
        b"",
    );
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    for line in out.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = record["key"].as_str().unwrap().to_string();
        let value = record["value"].as_str().unwrap();
        let n: u64 = value.strip_prefix("value-").unwrap().parse().unwrap();
        by_key.entry(key).or_default().push(n);
    }
    by_key
}

#[test]
fn quick_start_with_kill_9_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    ok(&server, &["create", "orders", "--partitions", "3"], b"");
    let lines: String = (0..10_000)
        .map(|i| format!("key-{}:value-{i}\n", i % 37))
        .collect();
    ok(
        &server,
        &["write", "orders", "--key-separator", ":"],
        lines.as_bytes(),
    );

    let check = |by_key: &HashMap<String, Vec<u64>>| {
        assert_eq!(by_key.values().map(Vec::len).sum::<usize>(), 10_000);
        assert_eq!(by_key.len(), 37);
        for (key, values) in by_key {
            assert!(
                values.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of order"
            );
        }
    };
    check(&read_json(&server, "orders"));

    server.restart_after_kill9();
    check(&read_json(&server, "orders"));

    let text = ok(
        &server,
        &[
            "read",
            "orders",
            "--partition",
            "0",
            "--offset",
            "0",
            "--count",
            "3",
        ],
        b"",
    );
    assert_eq!(text.lines().count(), 3);
    let described = ok(&server, &["describe", "orders", "--output", "json"], b"");
    assert!(described.contains("orders"));
    let listed = ok(&server, &["list"], b"");
    assert!(listed.contains("orders"));
    ok(&server, &["write", "orders", "one", "two"], b"");
    ok(&server, &["delete", "orders"], b"");
    fails(&server, &["describe", "orders"], "does not exist");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    ok(&server, &["create", "t", "--partitions", "2"], b"");
    fails(&server, &["create", "t"], "already exists");
    fails(&server, &["describe", "missing"], "does not exist");
    fails(&server, &["delete", "missing"], "does not exist");
    fails(&server, &["write", "missing", "x"], "does not exist");
    fails(&server, &["create", "bad/name"], "'/'");
    fails(
        &server,
        &["create", "z", "--partitions", "0"],
        "between 1 and 10000",
    );
    fails(
        &server,
        &["read", "t", "--partition", "0", "--offset", "99"],
        "out of range",
    );
    fails(&server, &["read", "t", "--partition", "7"], "partition");
    fails(
        &server,
        &["create", "r", "--replication-factor", "3"],
        "replication factor 3",
    );
    fails_with_input(
        &server,
        &["write", "t", "--key-separator", ":"],
        b"a:b\nno separator here\n",
        "line 2",
    );
    let unreachable = pubsub("127.0.0.1:1", &["list"], b"");
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8(unreachable.stderr).unwrap();
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
