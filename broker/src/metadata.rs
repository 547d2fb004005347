//! Where the broker learns which topics exist.
//!
//! [`Metadata`] is the interface the cluster manager will serve over gRPC (issue 4).
//! Until then [`LocalMetadata`] keeps the topic list in one JSON file in the data
//! directory, replaced atomically (write, fsync, rename, fsync the directory), so a
//! created topic survives a crash the moment CreateTopic answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topic::TopicRecord;

/// The topic catalogue a broker serves from.
pub trait Metadata: Send + Sync + 'static {
    /// Adds a topic; [`Error::TopicExists`] if the name is taken.
    fn create_topic(&self, topic: TopicRecord) -> BoxFuture<'_, Result<()>>;
    /// Removes a topic; [`Error::TopicNotFound`] if it does not exist.
    fn delete_topic(&self, name: &str) -> BoxFuture<'_, Result<()>>;
    /// Every topic, by name.
    fn topics(&self) -> BoxFuture<'_, Result<Vec<TopicRecord>>>;
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    version: u32,
    topics: BTreeMap<String, TopicRecord>,
}

const CATALOGUE_VERSION: u32 = 1;

/// Topics in a JSON file, for a single node without a cluster manager.
pub struct LocalMetadata {
    path: PathBuf,
    catalogue: Mutex<Catalogue>,
}

impl LocalMetadata {
    /// Loads (or starts) the catalogue at `<data_dir>/topics.json`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("topics.json");
        let fail = |reason: String| Error::Metadata {
            path: path.clone(),
            reason,
        };
        let catalogue = match std::fs::read(&path) {
            Ok(bytes) => {
                let catalogue: Catalogue = serde_json::from_slice(&bytes)
                    .map_err(|e| fail(format!("cannot parse: {e}")))?;
                if catalogue.version != CATALOGUE_VERSION {
                    return Err(fail(format!(
                        "version {} is not {CATALOGUE_VERSION}",
                        catalogue.version
                    )));
                }
                catalogue
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Catalogue {
                version: CATALOGUE_VERSION,
                topics: BTreeMap::new(),
            },
            Err(e) => return Err(fail(e.to_string())),
        };
        Ok(LocalMetadata {
            path,
            catalogue: Mutex::new(catalogue),
        })
    }

    fn update(&self, change: impl FnOnce(&mut Catalogue) -> Result<()>) -> Result<()> {
        let mut catalogue = self
            .catalogue
            .lock()
            .map_err(|_| self.error("lock poisoned".into()))?;
        let mut next = Catalogue {
            version: catalogue.version,
            topics: catalogue.topics.clone(),
        };
        change(&mut next)?;
        self.persist(&next)?;
        *catalogue = next;
        Ok(())
    }

    fn persist(&self, catalogue: &Catalogue) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(catalogue).map_err(|e| self.error(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            reason,
        }
    }
}

impl Metadata for LocalMetadata {
    fn create_topic(&self, topic: TopicRecord) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.update(|c| {
                if c.topics.contains_key(&topic.name) {
                    return Err(Error::TopicExists(topic.name.clone()));
                }
                c.topics.insert(topic.name.clone(), topic);
                Ok(())
            })
        })
    }

    fn delete_topic(&self, name: &str) -> BoxFuture<'_, Result<()>> {
        let name = name.to_string();
        Box::pin(async move {
            self.update(|c| match c.topics.remove(&name) {
                Some(_) => Ok(()),
                None => Err(Error::TopicNotFound(name.clone())),
            })
        })
    }

    fn topics(&self) -> BoxFuture<'_, Result<Vec<TopicRecord>>> {
        Box::pin(async move {
            let catalogue = self
                .catalogue
                .lock()
                .map_err(|_| self.error("lock poisoned".into()))?;
            Ok(catalogue.topics.values().cloned().collect())
        })
    }
}
