//! Small promises of the `pubsub` CLI (issue 12): `subscribe --format json` prints
//! the delivery attempt its help promises, `presence` of an unknown topic fails, and
//! `completion bash | head` ends cleanly on the closed pipe.

use std::io::Read;
use std::process::{Command, Stdio};

use pubsub_tests::{Server, binary, pubsub};

#[test]
fn subscribe_json_carries_the_delivery_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let created = pubsub(server.address(), &["create", "t"], b"");
    assert!(created.status.success(), "{created:?}");
    let written = pubsub(server.address(), &["write", "t"], b"one\n");
    assert!(written.status.success(), "{written:?}");
    let args = [
        "subscribe",
        "t",
        "-s",
        "s",
        "--from-beginning",
        "--count",
        "1",
        "--format",
        "json",
    ];
    let out = pubsub(server.address(), &args, b"");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(record["delivery_attempt"], 1, "{line}");
    assert_eq!(record["value"], "one", "{line}");
}

#[test]
fn presence_of_an_unknown_topic_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let out = pubsub(server.address(), &["presence", "nope"], b"");
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("does not exist"), "{said}");
}

#[test]
fn completion_into_a_closed_pipe_ends_cleanly() {
    let mut child = Command::new(binary("pubsub"))
        .args(["completion", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let status = child.wait().unwrap();
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(status.success(), "{status:?}: {said}");
}
