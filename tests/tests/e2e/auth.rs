//! Authentication and access rules end to end, on `pubsubd standalone --auth`: every
//! RPC of every service against every kind of caller, prefix rules across every read
//! path, the bootstrap token, and the refused takeover of a live broker id.

mod rpcs;

use pubsub_proto::auth::Credentials;
use pubsub_proto::net::{Channel, ChannelPool, Link};
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use pubsub_tests::{Server, admin_token, lists_tokens, pubsub};
use tonic::Code;

use rpcs::{every_rpc, methods};

/// A standalone server with authentication on, and its admin token.
fn start_with_auth(dir: &std::path::Path) -> (Server, String) {
    let server = Server::start_with(dir, "127.0.0.1:0", &["--auth"]);
    let token = admin_token(dir, lists_tokens(server.address(), &[]));
    (server, token)
}

fn channel(server: &Server, credentials: Credentials) -> Channel {
    ChannelPool::new(Link::with_credentials(credentials))
        .channel(server.address())
        .unwrap()
}

/// A new token of `principal`, made with the admin token.
fn token_for(server: &Server, admin: &str, principal: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--token",
        admin,
        "token",
        "create",
        "--principal",
        principal,
    ];
    args.extend_from_slice(extra);
    let out = pubsub(server.address(), &args, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = pubsub(server.address(), args, b"");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every RPC of every service, called with no token, a malformed one, an expired one,
/// a revoked one, a valid one without rules and a valid one with admin on the cluster:
/// each answers the status its row says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_who_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start_with_auth(dir.path());
    cli_ok(&server, &["--token", &admin, "create", "orders.t"]);
    let expired = token_for(&server, &admin, "late", &["--expires", "1ms"]);
    let revoked = token_for(&server, &admin, "gone", &[]);
    cli_ok(
        &server,
        &["--token", &admin, "token", "revoke", "--principal", "gone"],
    );
    let nobody = token_for(&server, &admin, "nobody", &[]);
    let root = token_for(&server, &admin, "root", &[]);
    cli_ok(
        &server,
        &[
            "--token",
            &admin,
            "acl",
            "add",
            "--principal",
            "root",
            "--cluster",
            "--operation",
            "admin",
        ],
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bearer = |t: &str| Credentials::bearer(t).unwrap();
    let callers = [
        ("no token", Credentials::none()),
        ("malformed token", bearer("pst_not-a-token")),
        ("expired token", bearer(&expired)),
        ("revoked token", bearer(&revoked)),
        ("token without rules", bearer(&nobody)),
        ("token with admin on the cluster", bearer(&root)),
    ];
    let rpcs = every_rpc();
    let mut names: Vec<&str> = rpcs
        .iter()
        .map(|r| r.0)
        .filter(|n| !n.ends_with("as a replica"))
        .collect();
    names.sort();
    assert_eq!(names, methods(), "the matrix must cover every RPC");
    let mut wrong = Vec::new();
    for (name, node_only, listing, call) in rpcs {
        for (who, credentials) in &callers {
            let got = call(channel(&server, credentials.clone())).await;
            let ok = match *who {
                "token without rules" if listing => got == Code::Ok,
                "token without rules" => got == Code::PermissionDenied,
                "token with admin on the cluster" if node_only => got == Code::PermissionDenied,
                "token with admin on the cluster" => {
                    !matches!(got, Code::PermissionDenied | Code::Unauthenticated)
                }
                _ => got == Code::Unauthenticated,
            };
            if !ok {
                wrong.push(format!("{name} with {who}: {got:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
}

/// A principal allowed on topics under `orders.` reads them, and cannot read
/// `payments` through the broker, the consumer manager, history or presence; nor see
/// it listed.
#[test]
fn prefix_rules_hold_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start_with_auth(dir.path());
    for topic in ["orders.eu", "payments"] {
        cli_ok(&server, &["--token", &admin, "create", topic]);
        cli_ok(&server, &["--token", &admin, "write", topic, "secret"]);
    }
    let alice = token_for(&server, &admin, "alice", &[]);
    for args in [
        ["--topic-prefix", "orders."],
        ["--subscription-prefix", "orders."],
    ] {
        let mut rule = vec![
            "--token",
            &admin,
            "acl",
            "add",
            "--principal",
            "alice",
            "--operation",
            "consume",
        ];
        rule.extend_from_slice(&args);
        cli_ok(&server, &rule);
    }
    let as_alice = |args: &[&str]| {
        let mut all = vec!["--token", alice.as_str()];
        all.extend_from_slice(args);
        pubsub(server.address(), &all, b"")
    };
    // Allowed: the topic and its subscriptions.
    let read = as_alice(&["read", "orders.eu"]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("secret"));
    let history = as_alice(&["history", "orders.eu", "--last", "1"]);
    assert!(
        history.status.success(),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    let listed = as_alice(&["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("orders.eu") && !listed.contains("payments"),
        "{listed}"
    );
    // Refused: payments, whichever way.
    for args in [
        &["read", "payments"][..],
        &["describe", "payments"],
        &["history", "payments", "--last", "1"],
        &["presence", "payments"],
        &[
            "subscribe",
            "payments",
            "--subscription",
            "orders.sneaky",
            "--count",
            "1",
        ],
        &[
            "subscribe",
            "orders.eu",
            "--subscription",
            "other",
            "--count",
            "1",
        ],
        &["write", "orders.eu", "no produce right"],
    ] {
        let out = as_alice(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(said.contains("may not"), "{args:?}: {said}");
    }
}

/// The first start with --auth writes the admin token (mode 0600, never logged); a
/// restart keeps it and makes no other.
#[test]
fn the_admin_token_is_made_once_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, admin) = start_with_auth(dir.path());
    let path = dir.path().join("admin.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    server.restart();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), admin);
    let tokens = cli_ok(&server, &["--token", &admin, "token", "list"]);
    assert_eq!(
        tokens.lines().filter(|l| l.contains("admin")).count(),
        1,
        "{tokens}"
    );
}

/// A registration that would move a live broker's id to another address is refused,
/// with authentication (a client token cannot even try) and without it (the lease
/// guards the id); the broker keeps serving at its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_broker_id_cannot_be_taken_over() {
    let takeover = v1::RegisterBrokerRequest {
        broker_id: 0,
        address: "10.6.6.6:9392".into(),
        ..Default::default()
    };
    let open_dir = tempfile::tempdir().unwrap();
    let open = Server::start(open_dir.path());
    // Once the broker has joined (it serves a create).
    cli_ok(&open, &["create", "still-here"]);
    let refused = ClusterManagerClient::new(channel(&open, Credentials::none()))
        .register_broker(takeover.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("lease holds"), "{refused:?}");
    cli_ok(&open, &["write", "still-here", "v"]);

    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start_with_auth(dir.path());
    let refused = ClusterManagerClient::new(channel(&server, Credentials::bearer(&admin).unwrap()))
        .register_broker(takeover.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = ClusterManagerClient::new(channel(
        &server,
        Credentials::node("a guessed secret").unwrap(),
    ))
    .register_broker(takeover)
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// An admin token made ahead with `pubsub token generate` (kept in a secret store) and
/// given with --admin-token-file is the first token; no file is written.
#[test]
fn an_admin_token_made_by_the_operator_is_the_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let generated = pubsub("127.0.0.1:1", &["token", "generate"], b"");
    assert!(generated.status.success());
    let token = String::from_utf8(generated.stdout)
        .unwrap()
        .trim()
        .to_string();
    let given = dir.path().join("given.token");
    std::fs::write(&given, format!("{token}\n")).unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        "127.0.0.1:0",
        &["--auth", "--admin-token-file", given.to_str().unwrap()],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = pubsub(server.address(), &["--token", &token, "token", "list"], b"");
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!data.join("admin.token").exists());
}
