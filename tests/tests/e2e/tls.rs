//! TLS end to end on `pubsubd standalone`: a client trusting the CA works, one that
//! does not is refused, plaintext to a TLS port fails clearly, mutual TLS refuses a
//! peer without a certificate, and certificates reload on SIGHUP without a restart.

use std::path::{Path, PathBuf};

use pubsub_proto::net::{ChannelPool, Link};
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use pubsub_tests::{Server, admin_token, lists_tokens, pubsub};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA: its certificate and key, and the PEM file of the certificate.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("pubsub test CA {name}"));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca { cert, key, pem }
}

/// A certificate for 127.0.0.1 and localhost signed by `ca`, written as `name`.pem and
/// `name`.key, with `name` as its common name; returns their paths.
fn leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn start_tls(data: &Path, cert: &Path, key: &Path, ca: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-ca",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start_with(data, "127.0.0.1:0", &args)
}

fn run(server: &Server, ca: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut all: Vec<&str> = Vec::new();
    if let Some(ca) = ca {
        all.extend(["--tls-ca", ca.to_str().unwrap()]);
    }
    all.extend_from_slice(args);
    let out = pubsub(server.address(), &all, b"");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn clients_that_trust_the_ca_connect_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca(dir.path(), "one");
    let stranger = ca(dir.path(), "stranger");
    let (cert, key) = leaf(dir.path(), &ca1, "server");
    let data = dir.path().join("data");
    let server = start_tls(&data, &cert, &key, &ca1.pem, &[]);

    let (ok, said) = run(&server, Some(&ca1.pem), &["create", "secure"]);
    assert!(ok, "{said}");
    let (ok, said) = run(&server, Some(&ca1.pem), &["write", "secure", "over tls"]);
    assert!(ok, "{said}");
    let (ok, said) = run(&server, Some(&ca1.pem), &["read", "secure"]);
    assert!(ok && said.contains("over tls"), "{said}");

    let (ok, said) = run(&server, Some(&stranger.pem), &["list"]);
    assert!(!ok, "{said}");
    assert!(said.to_lowercase().contains("certificate"), "{said}");

    let (ok, said) = run(&server, None, &["list"]);
    assert!(!ok, "{said}");
    assert!(said.contains("TLS") && said.contains("--tls-ca"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_peer_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca(dir.path(), "one");
    let (cert, key) = leaf(dir.path(), &ca1, "server");
    let data = dir.path().join("data");
    let server = start_tls(
        &data,
        &cert,
        &key,
        &ca1.pem,
        &["--tls-client-ca", ca1.pem.to_str().unwrap()],
    );

    let status = |identity: Option<(&Path, &Path)>| {
        let tls = pubsub_proto::tls::client_config(&ca1.pem, identity).unwrap();
        let pool = ChannelPool::new(Link {
            tls: Some(tls),
            ..Link::default()
        });
        let channel = pool.channel(server.address()).unwrap();
        async move {
            ClusterManagerClient::new(channel)
                .cluster_status(v1::ClusterStatusRequest {})
                .await
        }
    };
    // The handshake fails: the client sees the server's alert, or only the closed
    // connection, depending on which it reads first.
    let refused = status(None).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{refused:?}"
    );
    let (node_cert, node_key) = leaf(dir.path(), &ca1, "node");
    let answered = status(Some((&node_cert, &node_key))).await;
    assert!(answered.is_ok(), "{answered:?}");
}

#[test]
fn certificates_reload_on_sighup_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca(dir.path(), "one");
    let ca2 = ca(dir.path(), "two");
    let (cert, key) = leaf(dir.path(), &ca1, "server");
    // The node trusts both CAs on its own links, so it keeps reaching itself.
    let both = dir.path().join("both.pem");
    let pems = format!(
        "{}{}",
        std::fs::read_to_string(&ca1.pem).unwrap(),
        std::fs::read_to_string(&ca2.pem).unwrap()
    );
    std::fs::write(&both, pems).unwrap();
    let data = dir.path().join("data");
    let server = start_tls(&data, &cert, &key, &both, &[]);
    assert!(run(&server, Some(&ca1.pem), &["list"]).0);
    assert!(!run(&server, Some(&ca2.pem), &["list"]).0);

    let (new_cert, new_key) = leaf(dir.path(), &ca2, "renewed");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let pid = server.pid().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !run(&server, Some(&ca2.pem), &["list"]).0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!run(&server, Some(&ca1.pem), &["list"]).0);
}

/// Under mutual TLS a broker id is bound to the certificate that names it: another
/// broker's certificate may not register it at all, the broker's own may move it to a
/// new address at once, and any other node waits for the id's lease as without TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_id_moves_only_with_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca(dir.path(), "one");
    let (cert, key) = leaf(dir.path(), &ca1, "server");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let data = dir.path().join("data");
    let client_ca = ca1.pem.to_str().unwrap().to_string();
    let server = start_tls(
        &data,
        &cert,
        &key,
        &ca1.pem,
        &[
            "--tls-client-ca",
            &client_ca,
            "--auth",
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let (admin_cert, admin_key) = leaf(dir.path(), &ca1, "operator");
    let identity = [
        "--tls-client-cert",
        admin_cert.to_str().unwrap(),
        "--tls-client-key",
        admin_key.to_str().unwrap(),
    ];
    // The broker (id 0) has joined once the token works and a create works.
    let ca = ca1.pem.to_str().unwrap();
    let mut extra = vec!["--tls-ca", ca];
    extra.extend(identity);
    let token = admin_token(&data, lists_tokens(server.address(), &extra));
    let mut create = identity.to_vec();
    create.extend(["--token", &token, "create", "t"]);
    let (ok, said) = run(&server, Some(&ca1.pem), &create);
    assert!(ok, "{said}");
    // Without a client certificate the CLI is refused, and told why.
    let (ok, said) = run(&server, Some(&ca1.pem), &["--token", &token, "list"]);
    assert!(!ok, "{said}");

    let register = |name: &str| {
        let (node_cert, node_key) = leaf(dir.path(), &ca1, name);
        let tls =
            pubsub_proto::tls::client_config(&ca1.pem, Some((&node_cert, &node_key))).unwrap();
        let credentials =
            pubsub_proto::auth::Credentials::node("0123456789abcdef0123456789abcdef").unwrap();
        let pool = ChannelPool::new(Link {
            credentials,
            tls: Some(tls),
            dialer: None,
        });
        let channel = pool.channel(server.address()).unwrap();
        async move {
            ClusterManagerClient::new(channel)
                .register_broker(v1::RegisterBrokerRequest {
                    broker_id: 0,
                    address: "127.0.0.1:1".into(),
                    ..Default::default()
                })
                .await
        }
    };
    let refused = register("broker-1").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let refused = register("some-node").await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let moved = register("broker-0").await;
    assert!(moved.is_ok(), "{moved:?}");
}
