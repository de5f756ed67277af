//! Topic administration: create, delete, describe, add partitions, alter
//! settings. Each change is written to the metadata store and the data
//! directory under the admin lock.

use std::sync::Arc;

use super::topic::{self, Topic, validate_topic_name};
use super::{Broker, open_partition_log, partition_dir};
use crate::config::TopicSettings;
use crate::error::{AdminError, Invalid, NotFound, PartitionError, blocking};
use crate::meta::{TopicOverrides, TopicRecord};
use crate::partition::Partition;

/// A topic as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub settings: TopicSettings,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub size_bytes: u64,
    pub segments: u32,
}

pub(super) fn partition_info(partition: &Partition) -> PartitionInfo {
    let log = partition.log();
    PartitionInfo {
        partition: partition.index(),
        start_offset: log.start_offset(),
        end_offset: log.high_watermark(),
        size_bytes: log.size_bytes(),
        segments: log.segment_count() as u32,
    }
}

impl Broker {
    /// Checks what `create_topic` checks of its arguments, without
    /// creating anything: in a cluster, before the topic is proposed.
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: &TopicOverrides,
    ) -> Result<(), Invalid> {
        validate_topic_name(name)?;
        self.check_partition_count(partitions)?;
        topic::resolve_settings(&self.config.topic_defaults, overrides, &self.config.limits)?;
        Ok(())
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: TopicOverrides,
    ) -> Result<TopicInfo, AdminError> {
        validate_topic_name(name)?;
        self.check_partition_count(partitions)?;
        let settings =
            topic::resolve_settings(&self.config.topic_defaults, &overrides, &self.config.limits)?;
        let _admin = self.admin.lock().await;
        if self.topics.read().contains_key(name) {
            return Err(AdminError::TopicExists(name.to_owned()));
        }
        let record = TopicRecord {
            name: name.to_owned(),
            partitions,
            overrides,
            created_ms: brook_storage::now_ms(),
        };
        let logs = self
            .open_new_partitions(&record, &settings, 0..partitions)
            .await?;
        let meta = self.meta.clone();
        let stored = record.clone();
        blocking(move || meta.put_topic(&stored)).await??;
        let topic = Arc::new(Topic::new(record, logs));
        self.topics.write().insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(self.describe(name, &topic))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let meta = self.meta.clone();
        let owned = name.to_owned();
        // The store first, with a durable record of the deletion: if the
        // process dies before the files are gone, the next start removes
        // them (files without metadata and without that record are kept).
        blocking(move || meta.delete_topic(&owned)).await??;
        self.topics.write().remove(name);
        let partitions = topic.partitions();
        let dir = super::topics_dir(&self.config.data_dir).join(name);
        let storage = self.config.storage.clone();
        blocking(move || {
            for partition in &partitions {
                partition.log().delete().map_err(|e| {
                    PartitionError::from_log(partition.topic(), partition.index(), e)
                })?;
            }
            storage
                .remove_dir_all(&dir)
                .map_err(|source| AdminError::Io {
                    what: format!("remove {}", dir.display()),
                    source,
                })
        })
        .await??;
        let meta = self.meta.clone();
        let owned = name.to_owned();
        blocking(move || meta.forget_deleted_topic(&owned)).await??;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub fn list_topics(&self) -> Vec<(String, u32)> {
        let mut topics: Vec<(String, u32)> = self
            .topics
            .read()
            .iter()
            .map(|(name, t)| (name.clone(), t.partition_count()))
            .collect();
        topics.sort();
        topics
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo, NotFound> {
        let topic = self.topic(name)?;
        Ok(self.describe(name, &topic))
    }

    fn describe(&self, name: &str, topic: &Topic) -> TopicInfo {
        let record = topic.record();
        let settings = topic::resolve_settings(
            &self.config.topic_defaults,
            &record.overrides,
            &self.config.limits,
        )
        .unwrap_or(self.config.topic_defaults);
        let partitions = topic
            .partitions()
            .iter()
            .map(|p| partition_info(p))
            .collect();
        TopicInfo {
            name: name.to_owned(),
            settings,
            partitions,
        }
    }

    /// Grows a topic to `total` partitions.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<TopicInfo, AdminError> {
        let _admin = self.admin.lock().await;
        let current = self.check_added_partitions(name, total)?;
        let topic = self.topic(name)?;
        let mut record = topic.record();
        let settings = topic::resolve_settings(
            &self.config.topic_defaults,
            &record.overrides,
            &self.config.limits,
        )?;
        let added = self
            .open_new_partitions(&record, &settings, current..total)
            .await?;
        record.partitions = total;
        let meta = self.meta.clone();
        let stored = record.clone();
        blocking(move || meta.put_topic(&stored)).await??;
        topic.add_partitions(added);
        topic.set_record(record);
        tracing::info!(topic = name, partitions = total, "partitions added");
        Ok(self.describe(name, &topic))
    }

    /// Changes the settings `overrides` sets; the others keep their values.
    /// A topic's overrides of the broker's topic defaults.
    pub fn topic_overrides(&self, name: &str) -> Result<TopicOverrides, NotFound> {
        Ok(self.topic(name)?.record().overrides)
    }

    /// The overrides `alter_topic_config` would give the topic, checked by
    /// its rules (a cluster checks before it commits the change).
    pub fn check_altered_config(
        &self,
        name: &str,
        overrides: TopicOverrides,
    ) -> Result<TopicOverrides, AdminError> {
        let merged = self.topic(name)?.record().overrides.merged(overrides);
        topic::resolve_settings(&self.config.topic_defaults, &merged, &self.config.limits)?;
        Ok(merged)
    }

    pub async fn alter_topic_config(
        &self,
        name: &str,
        overrides: TopicOverrides,
    ) -> Result<TopicInfo, AdminError> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let mut record = topic.record();
        record.overrides = record.overrides.merged(overrides);
        let settings = topic::resolve_settings(
            &self.config.topic_defaults,
            &record.overrides,
            &self.config.limits,
        )?;
        let meta = self.meta.clone();
        let stored = record.clone();
        blocking(move || meta.put_topic(&stored)).await??;
        let log_config = topic::log_config(&settings, self.config.index_interval_bytes);
        for partition in topic.partitions() {
            partition.log().set_config(log_config);
        }
        topic.set_record(record);
        tracing::info!(topic = name, "topic config altered");
        Ok(self.describe(name, &topic))
    }

    /// Whether `add_partitions` may grow the topic to `total` partitions;
    /// how many it has (a cluster checks before it commits the change).
    pub fn check_added_partitions(&self, name: &str, total: u32) -> Result<u32, AdminError> {
        self.check_partition_count(total)?;
        let current = self.topic(name)?.partition_count();
        if total <= current {
            return Err(Invalid::new(
                "partitions",
                format!(
                    "topic `{name}` has {current} partitions; the new count must be larger, got {total}"
                ),
            )
            .into());
        }
        Ok(current)
    }

    /// Whether a topic may have `partitions` partitions.
    fn check_partition_count(&self, partitions: u32) -> Result<(), Invalid> {
        let max = self.config.limits.partitions_per_topic_max;
        if partitions == 0 || partitions > max {
            return Err(Invalid::new(
                "partitions",
                format!("must be between 1 and {max}, got {partitions}"),
            ));
        }
        Ok(())
    }

    async fn open_new_partitions(
        &self,
        record: &TopicRecord,
        settings: &TopicSettings,
        range: std::ops::Range<u32>,
    ) -> Result<Vec<Arc<Partition>>, AdminError> {
        let config = self.config.clone();
        let name = record.name.clone();
        let log_config = topic::log_config(settings, config.index_interval_bytes);
        let opening = range.clone();
        let logs = blocking(move || {
            opening
                .map(|p| {
                    // A leftover directory of an earlier topic of this name must not leak in.
                    let dir = partition_dir(&config.data_dir, &name, p);
                    config
                        .storage
                        .remove_dir_all(&dir)
                        .map_err(|source| AdminError::Io {
                            what: format!("remove {}", dir.display()),
                            source,
                        })?;
                    open_partition_log(&config, &name, p, log_config).map_err(AdminError::from)
                })
                .collect::<Result<Vec<_>, _>>()
                .and_then(|logs| {
                    // The new directories' entries must be durable before
                    // anything in them is acknowledged.
                    let topics = super::topics_dir(&config.data_dir);
                    for dir in [topics.join(&name), topics, config.data_dir.clone()] {
                        config
                            .storage
                            .sync_dir(&dir)
                            .map_err(|source| AdminError::Io {
                                what: format!("fsync {}", dir.display()),
                                source,
                            })?;
                    }
                    Ok(logs)
                })
        })
        .await??;
        Ok(logs
            .into_iter()
            .zip(range)
            .map(|(log, p)| {
                Partition::start(
                    &record.name,
                    p,
                    log,
                    self.config.fsync,
                    super::sync_group_for(&self.sync_group, &self.config.data_dir, &record.name, p),
                    &self.open_segments,
                    self.metrics.clone(),
                    self.config.cluster.is_some(),
                )
            })
            .collect())
    }
}
