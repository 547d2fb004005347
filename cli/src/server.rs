//! `pubsubd`: configuration of the server roles and their startup.
//!
//! Precedence, lowest first: defaults, the TOML file (`--config`), `PUBSUB_*`
//! environment variables, flags. Unknown file keys are an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Settings of `pubsubd standalone`, as the TOML file spells them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandaloneFile {
    /// Directory for all data.
    pub data_dir: Option<PathBuf>,
    /// host:port to listen on.
    pub listen: Option<String>,
    /// host:port advertised to clients (defaults to the listen address).
    pub advertised_address: Option<String>,
}

/// Validated settings of a standalone server.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// Directory for all data.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address clients are told to use, if set (else the bound listener's, see
    /// [`advertised_address`]).
    pub advertised_address: Option<String>,
}

impl StandaloneConfig {
    /// Merges file values under flag/env values, then validates.
    pub fn resolve(
        file: Option<&Path>,
        data_dir: Option<PathBuf>,
        listen: Option<String>,
        advertised: Option<String>,
    ) -> anyhow::Result<Self> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<StandaloneFile>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => StandaloneFile::default(),
        };
        let data_dir = data_dir
            .or(from_file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let listen_text = listen
            .or(from_file.listen)
            .unwrap_or_else(|| pubsub_client::DEFAULT_ADDRESS.to_string());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("--listen {listen_text:?} is not a socket address like 127.0.0.1:9392")
        })?;
        let advertised_address = advertised.or(from_file.advertised_address);
        Ok(StandaloneConfig {
            data_dir,
            listen,
            advertised_address,
        })
    }
}

/// The address clients and other nodes are told to reach a node at: `advertised` if
/// given, else the bound listener's address. A listener on every interface (0.0.0.0
/// or ::) has no such address, and one registered that way sends every client that
/// follows a leader hint to itself; it is refused with what to do instead.
pub fn advertised_address(
    advertised: Option<String>,
    bound: SocketAddr,
    role: &str,
) -> anyhow::Result<String> {
    advertised_address_of("--advertised-address", advertised, bound, role)
}

/// [`advertised_address`] for a listener whose advertised address is given by `flag`.
pub fn advertised_address_of(
    flag: &str,
    advertised: Option<String>,
    bound: SocketAddr,
    role: &str,
) -> anyhow::Result<String> {
    let Some(address) = advertised else {
        if bound.ip().is_unspecified() {
            anyhow::bail!(
                "the {role} listens on {bound}, every interface, which is no address to reach it at; give {flag} HOST:{} (a name or IP that clients and the other nodes can reach)",
                bound.port()
            );
        }
        return Ok(bound.to_string());
    };
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{flag} {address:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .with_context(|| format!("{flag} {address:?} has no valid port"))?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
    {
        anyhow::bail!(
            "{flag} {address:?} is no address to connect to; give a name or IP that clients and the other nodes can reach, with port {port}"
        );
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../config.example.toml");
        let parsed: StandaloneFile = toml::from_str(text).unwrap();
        assert!(parsed.data_dir.is_some());
    }

    #[test]
    fn a_listener_on_every_interface_needs_an_advertised_address() {
        let any: SocketAddr = "0.0.0.0:9392".parse().unwrap();
        let error = advertised_address(None, any, "broker")
            .unwrap_err()
            .to_string();
        assert!(error.contains("--advertised-address HOST:9392"), "{error}");
        let any6: SocketAddr = "[::]:9392".parse().unwrap();
        assert!(advertised_address(None, any6, "broker").is_err());
        assert_eq!(
            advertised_address(Some("b1.example:9392".into()), any, "broker").unwrap(),
            "b1.example:9392"
        );
        let local: SocketAddr = "10.0.0.5:9392".parse().unwrap();
        assert_eq!(
            advertised_address(None, local, "broker").unwrap(),
            "10.0.0.5:9392"
        );
        for bad in ["0.0.0.0:9392", "[::]:9392", "b1:0", "b1", ":9392"] {
            assert!(
                advertised_address(Some(bad.into()), local, "broker").is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<StandaloneFile>("data_dri = \"x\"").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("pubsubd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let config =
            StandaloneConfig::resolve(Some(&file), None, Some("127.0.0.1:2".into()), None).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.listen.port(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The standalone broker's log as its consumer manager reads it: without gRPC, where
/// the broker leads the partition (in standalone, every partition).
#[derive(Debug)]
pub struct StandaloneLog(pub pubsub_broker::LocalReads);

impl pubsub_consumer_manager::LocalLog for StandaloneLog {
    fn fetch<'a>(
        &'a self,
        request: &'a pubsub_proto::v1::FetchRequest,
    ) -> futures::future::BoxFuture<
        'a,
        Option<Result<pubsub_proto::v1::FetchResponse, tonic::Status>>,
    > {
        Box::pin(self.0.fetch(request))
    }
}
