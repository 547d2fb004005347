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
    /// Address clients are told to use.
    pub advertised_address: String,
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
        let advertised_address = advertised
            .or(from_file.advertised_address)
            .unwrap_or_else(|| listen_text.clone());
        Ok(StandaloneConfig {
            data_dir,
            listen,
            advertised_address,
        })
    }
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
