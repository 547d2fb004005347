//! TLS end to end on `pubsubd standalone`: a client trusting the CA works, one that
//! does not is refused, plaintext to a TLS port fails clearly, mutual TLS refuses a
//! peer without a certificate, and certificates reload on SIGHUP without a restart.

use std::path::{Path, PathBuf};

use pubsub_proto::net::{ChannelPool, Link};
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use pubsub_tests::{Server, pubsub};
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
/// `name`.key; returns their paths.
fn leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
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
            credentials: Default::default(),
            tls: Some(tls),
        });
        let channel = pool.channel(server.address()).unwrap();
        async move {
            ClusterManagerClient::new(channel)
                .cluster_status(v1::ClusterStatusRequest {})
                .await
        }
    };
    let refused = status(None).await.unwrap_err();
    assert!(
        format!("{refused:?}").contains("CertificateRequired"),
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
