//! The set of partitions this broker hosts, kept in step with the topic metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use pubsub_proto::ids::{PARTITIONS_MAX, TopicName};
use pubsub_proto::v1;
use pubsub_storage::Log;

use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::partition::{Partition, blocking};
use crate::topic::{TopicRecord, TopicSettings};

/// A topic and its hosted partitions.
pub struct HostedTopic {
    /// The topic's metadata.
    pub record: TopicRecord,
    /// Partitions in index order.
    pub partitions: Vec<Arc<Partition>>,
}

/// The broker's state: hosted topics and where their data lives.
pub struct Broker {
    config: BrokerConfig,
    metadata: Arc<dyn Metadata>,
    topics: RwLock<HashMap<String, Arc<HostedTopic>>>,
    /// Serializes topic creation and deletion so metadata and disk never disagree.
    admin: tokio::sync::Mutex<()>,
}

/// Directory of one partition: `<data>/<topic>-<partition>`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

impl Broker {
    /// Opens every partition of every topic in metadata and removes directories of
    /// topics that no longer exist (a deletion cut short by a crash).
    pub async fn open(config: BrokerConfig, metadata: Arc<dyn Metadata>) -> Result<Self> {
        let records = metadata.topics().await?;
        let mut topics = HashMap::new();
        for record in records {
            let hosted = open_topic(&config.data_dir, record).await?;
            topics.insert(hosted.record.name.clone(), Arc::new(hosted));
        }
        let names: Vec<String> = topics.keys().cloned().collect();
        let data_dir = config.data_dir.clone();
        blocking(move || remove_orphans(&data_dir, &names)).await?;
        Ok(Broker {
            config,
            metadata,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
        })
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A hosted topic by name.
    pub fn topic(&self, name: &str) -> Result<Arc<HostedTopic>> {
        self.topics
            .read()
            .map_err(|_| Error::Task("topic map lock poisoned".into()))?
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))
    }

    /// Every hosted topic.
    pub fn all_topics(&self) -> Vec<Arc<HostedTopic>> {
        self.topics
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A hosted partition.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let hosted = self.topic(topic)?;
        hosted
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or(Error::PartitionNotFound {
                topic: topic.to_string(),
                partition,
                partitions: hosted.record.partitions,
            })
    }

    /// Validates and creates a topic: metadata first (durably), then its logs.
    pub async fn create_topic(&self, request: v1::CreateTopicRequest) -> Result<Arc<HostedTopic>> {
        let name =
            TopicName::new(request.name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if request.partitions == 0 || request.partitions > PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                request.partitions
            )));
        }
        let replication_factor = request.replication_factor.max(1);
        let live_brokers = 1;
        if replication_factor > live_brokers {
            return Err(Error::InvalidArgument(format!(
                "replication factor {replication_factor} exceeds the {live_brokers} live broker(s)"
            )));
        }
        let settings =
            TopicSettings::resolve(request.config.as_ref(), &self.config.topic_defaults)?;
        let record = TopicRecord {
            name: name.as_str().to_string(),
            partitions: request.partitions,
            replication_factor,
            settings,
        };
        let _admin = self.admin.lock().await;
        if self.topic(name.as_str()).is_ok() {
            return Err(Error::TopicExists(name.to_string()));
        }
        self.metadata.create_topic(record.clone()).await?;
        let hosted = Arc::new(open_topic(&self.config.data_dir, record).await?);
        self.topics
            .write()
            .map_err(|_| Error::Task("topic map lock poisoned".into()))?
            .insert(name.to_string(), hosted.clone());
        tracing::info!(topic = %name, partitions = request.partitions, "created topic");
        Ok(hosted)
    }

    /// Deletes a topic: metadata first (durably), then its partitions' data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        self.topic(name)?;
        self.metadata.delete_topic(name).await?;
        let removed = self
            .topics
            .write()
            .map_err(|_| Error::Task("topic map lock poisoned".into()))?
            .remove(name);
        if let Some(hosted) = removed {
            let dirs: Vec<PathBuf> = (0..hosted.record.partitions)
                .map(|p| partition_dir(&self.config.data_dir, name, p))
                .collect();
            drop(hosted);
            blocking(move || {
                for dir in dirs {
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(pubsub_storage::Error::Io {
                                path: dir,
                                source: e,
                            }
                            .into());
                        }
                    }
                }
                Ok(())
            })
            .await?;
        }
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    /// Applies each topic's retention to its partitions; returns segments deleted.
    pub async fn apply_retention(&self) -> Result<usize> {
        let mut deleted = 0;
        for topic in self.all_topics() {
            let policy = topic.record.settings.retention();
            for partition in &topic.partitions {
                let log = partition.log().clone();
                deleted += blocking(move || Ok(log.apply_retention(policy)?)).await?;
            }
        }
        Ok(deleted)
    }

    /// Runs due interval fsyncs on every partition.
    pub async fn flush_due(&self) -> Result<()> {
        let logs: Vec<Arc<Log>> = self
            .all_topics()
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.log().clone()))
            .filter(|log| pubsub_storage::log::flush_interval(log.config()).is_some())
            .collect();
        if logs.is_empty() {
            return Ok(());
        }
        blocking(move || {
            for log in logs {
                log.flush_if_due()?;
            }
            Ok(())
        })
        .await
    }

    /// Flushes every partition (clean shutdown).
    pub async fn flush_all(&self) -> Result<()> {
        let logs: Vec<Arc<Log>> = self
            .all_topics()
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.log().clone()))
            .collect();
        blocking(move || {
            for log in logs {
                log.flush()?;
            }
            Ok(())
        })
        .await
    }
}

async fn open_topic(data_dir: &Path, record: TopicRecord) -> Result<HostedTopic> {
    let config = record.settings.log_config()?;
    let mut partitions = Vec::with_capacity(record.partitions as usize);
    for partition in 0..record.partitions {
        let dir = partition_dir(data_dir, &record.name, partition);
        let config = config.clone();
        let log = blocking(move || Ok(Log::open(&dir, config)?)).await?;
        partitions.push(Arc::new(Partition::new(log, 0)));
    }
    Ok(HostedTopic { record, partitions })
}

/// Removes partition directories whose topic is not in metadata.
fn remove_orphans(data_dir: &Path, topics: &[String]) -> Result<()> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(pubsub_storage::Error::Io {
                path: data_dir.to_path_buf(),
                source: e,
            }
            .into());
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        if !path.is_dir() || partition.parse::<u32>().is_err() || topics.iter().any(|t| t == topic)
        {
            continue;
        }
        tracing::warn!(path = %path.display(), "removing data of a deleted topic");
        std::fs::remove_dir_all(&path).map_err(|e| pubsub_storage::Error::Io {
            path: path.clone(),
            source: e,
        })?;
    }
    Ok(())
}
