//! `pubsubd`'s access-control flags, shared by every role: `--auth`, the cluster
//! secret nodes prove themselves with, and the explicit opt-out needed to serve a
//! network without authentication.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use pubsub_proto::auth::{NewToken, NodeSecurity};
use pubsub_proto::tls::{self, ServerTls, ServerTlsFiles};

/// Shortest cluster secret taken: shorter ones are guessable.
const SECRET_BYTES_MIN: usize = 16;

/// Access-control flags of a role.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    /// Require a bearer token (and an access rule) on every call, and the cluster secret
    /// on calls between nodes.
    #[arg(long, env = "PUBSUB_AUTH")]
    pub auth: bool,
    /// File holding the cluster secret every node of the cluster shares (at least 16
    /// bytes; make one with `openssl rand -hex 32`). Needed with --auth, except by
    /// standalone.
    #[arg(long, env = "PUBSUB_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve an address other hosts can reach without --auth (anyone who reaches the
    /// port can then do anything).
    #[arg(long, env = "PUBSUB_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Serve TLS with this PEM certificate chain (with --tls-key); reloaded on SIGHUP
    /// or when the file changes.
    #[arg(long, env = "PUBSUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PUBSUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS); nodes then
    /// present --tls-cert to each other.
    #[arg(long, env = "PUBSUB_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The PEM CA this node trusts on its links to other nodes (and, in standalone,
    /// to itself). Needed with --tls-cert.
    #[arg(long, env = "PUBSUB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The first admin token, made with `pubsub token generate` (a Kubernetes Secret,
    /// say), instead of one written to the data directory; read by cluster managers
    /// and standalone when authentication is first turned on.
    #[arg(long, env = "PUBSUB_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Most connections the listener holds at once (0: no cap); one more is answered
    /// RESOURCE_EXHAUSTED. Each may hold about 1 MiB of requests in memory; count the
    /// clients and, in a cluster, a few per other node.
    #[arg(long, env = "PUBSUB_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

impl SecurityArgs {
    /// The node's security for a role listening on `listen`. Standalone (`alone`)
    /// makes up its own secret: its parts only talk to each other.
    pub fn resolve(&self, listen: SocketAddr, alone: bool) -> anyhow::Result<NodeSecurity> {
        let mut security = self.access(listen, alone)?;
        security.max_connections = self.max_connections;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let files = ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            };
            security.server_tls = Some(ServerTls::load(files)?);
            let ca = self.tls_ca.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--tls-cert needs --tls-ca: the CA this node trusts on its links to other nodes"
                )
            })?;
            let identity = self
                .tls_client_ca
                .as_ref()
                .map(|_| (cert.as_path(), key.as_path()));
            security.link.tls = Some(tls::client_config(ca, identity)?);
        } else if let Some(ca) = &self.tls_ca {
            security.link.tls = Some(tls::client_config(ca, None)?);
        }
        Ok(security)
    }

    /// The operator's first admin token, if --admin-token-file names one.
    pub fn admin_token(&self) -> anyhow::Result<Option<NewToken>> {
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
        let token = pubsub_proto::auth::adopt_token(&text).with_context(|| {
            format!(
                "{} does not hold a token made by `pubsub token generate`",
                path.display()
            )
        })?;
        Ok(Some(token))
    }

    fn access(&self, listen: SocketAddr, alone: bool) -> anyhow::Result<NodeSecurity> {
        if !self.auth {
            anyhow::ensure!(
                listen.ip().is_loopback() || self.allow_unauthenticated,
                "refusing to serve {listen} without authentication: anyone who reaches it could read, write and delete everything. \
                 Turn authentication on with --auth (see the README's Security section), listen on a loopback address, \
                 or pass --allow-unauthenticated if the network itself is trusted"
            );
            return Ok(NodeSecurity::default());
        }
        let secret = match (&self.cluster_secret_file, alone) {
            (Some(path), _) => read_secret(path)?,
            (None, true) => random_secret(),
            (None, false) => anyhow::bail!(
                "--auth needs --cluster-secret-file (PUBSUB_CLUSTER_SECRET_FILE): the secret every node of the cluster shares"
            ),
        };
        NodeSecurity::with_cluster_secret(&secret)
            .context("the cluster secret cannot be sent in a header")
    }
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the cluster secret file {}", path.display()))?;
    let secret = text.trim().to_string();
    anyhow::ensure!(
        secret.len() >= SECRET_BYTES_MIN && secret.bytes().all(|b| b.is_ascii_graphic()),
        "the cluster secret in {} must be at least {SECRET_BYTES_MIN} printable characters without spaces",
        path.display()
    );
    Ok(secret)
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(auth: bool, allow: bool, file: Option<PathBuf>) -> SecurityArgs {
        SecurityArgs {
            auth,
            cluster_secret_file: file,
            allow_unauthenticated: allow,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_ca: None,
            admin_token_file: None,
            max_connections: 0,
        }
    }

    #[test]
    fn a_network_address_needs_auth_or_the_explicit_opt_out() {
        let public: SocketAddr = "0.0.0.0:9392".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:9392".parse().expect("addr");
        let refused = args(false, false, None).resolve(public, true).unwrap_err();
        assert!(
            refused.to_string().contains("--allow-unauthenticated"),
            "{refused}"
        );
        assert!(
            !args(false, false, None)
                .resolve(local, true)
                .expect("ok")
                .is_on()
        );
        assert!(
            !args(false, true, None)
                .resolve(public, false)
                .expect("ok")
                .is_on()
        );
        assert!(
            args(true, false, None)
                .resolve(public, true)
                .expect("ok")
                .is_on()
        );
        assert!(args(true, false, None).resolve(public, false).is_err());
    }

    #[test]
    fn the_secret_file_must_hold_a_long_enough_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let public: SocketAddr = "0.0.0.0:9392".parse().expect("addr");
        std::fs::write(&path, "short\n").expect("write");
        assert!(
            args(true, false, Some(path.clone()))
                .resolve(public, false)
                .is_err()
        );
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        assert!(
            args(true, false, Some(path))
                .resolve(public, false)
                .expect("ok")
                .is_on()
        );
    }
}
