//! Small promises of the `pubsub` CLI (issue 12): `subscribe --format json` prints
//! the delivery attempt its help promises, `presence` of an unknown topic fails, and
//! `completion bash | head` ends cleanly on the closed pipe; and of `pubsubd`: a
//! listener on every interface needs an advertised address.

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
    let said = stderr_of(&mut child);
    assert!(status.success(), "{status:?}: {said}");
}

/// A broker on every interface without `--advertised-address` would register 0.0.0.0
/// as the address clients follow leader hints to (issue 21): it refuses to start and
/// says what to give instead.
#[test]
fn a_listener_on_every_interface_needs_an_advertised_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let port = pubsub_tests::free_port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let roles: [&[&str]; 2] = [
        &["broker", "--id", "1", "--cluster-managers", "127.0.0.1:9"],
        &["standalone"],
    ];
    for role in roles {
        let mut child = Command::new(binary("pubsubd"))
            .args(role)
            .args(["--listen", &listen, "--data-dir", &data])
            .arg("--allow-unauthenticated")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("pubsubd {role:?} on {listen} kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let said = stderr_of(&mut child);
        assert!(!status.success(), "{role:?}: {said}");
        assert!(
            said.contains("--advertised-address HOST:"),
            "{role:?}: {said}"
        );
    }
}

/// Every role refuses to serve an address other hosts can reach without
/// authentication, unless told the network is trusted, and says how to proceed.
#[test]
fn a_network_listener_needs_auth_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let listen = format!("0.0.0.0:{}", pubsub_tests::free_port());
    let roles: [&[&str]; 4] = [
        &["standalone", "--advertised-address", "127.0.0.1:1"],
        &["broker", "--id", "1", "--cluster-managers", "127.0.0.1:9"],
        &["cluster-manager", "--id", "1"],
        &["consumer-manager", "--brokers", "127.0.0.1:9"],
    ];
    for role in roles {
        let output = Command::new(binary("pubsubd"))
            .args(role)
            .args(["--listen", &listen, "--data-dir", &data])
            .env_remove("PUBSUB_ALLOW_UNAUTHENTICATED")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{role:?}: {said}");
        assert!(
            said.contains("without authentication") && said.contains("--auth"),
            "{role:?}: {said}"
        );
    }
}

/// Everything a finished child wrote to its piped stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    said
}

/// `pubsubd standalone` serves everything on its one listen address, and `pubsub
/// cluster status` asks `--server` (issue 12): no second port the user never chose.
#[test]
fn standalone_serves_its_cluster_manager_on_its_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let status = pubsub(server.address(), &["cluster", "status"], b"");
    assert!(status.status.success(), "{status:?}");
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains(server.address()), "{said}");
    let port: u16 = server
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let next = format!("127.0.0.1:{}", port + 1);
    assert!(
        std::net::TcpStream::connect(&next).is_err(),
        "something listens on {next}, the port after the one given"
    );
}

/// At info the log is one line per meaningful event: openraft's internals (its state
/// at start, each election step) stay out, there are no colour codes when stderr is
/// not a terminal, and `--log-format json` writes one JSON object per line.
#[test]
fn the_log_is_quiet_plain_and_optionally_json() {
    use std::io::BufRead;
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let mut child = Command::new(binary("pubsubd"))
            .args(["standalone", "--listen", "127.0.0.1:0", "--data-dir", &data])
            .args(["--metrics-listen", "off", "--log-format", format])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.starts_with("listening on"), "{first}");
        std::thread::sleep(std::time::Duration::from_secs(2));
        let _ = child.kill();
        let _ = child.wait();
        let said = stderr_of(&mut child);
        let lines: Vec<&str> = said.lines().collect();
        assert!(!said.contains('\u{1b}'), "colour codes: {said}");
        assert!(
            !said.contains("openraft"),
            "openraft internals at info: {said}"
        );
        assert!(lines.len() <= 12, "{} lines at start: {said}", lines.len());
        if format == "json" {
            for line in &lines {
                let object: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(
                    object["level"].is_string() && object["fields"].is_object(),
                    "{line}"
                );
            }
        }
    }
}
