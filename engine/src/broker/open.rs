//! Opening a data directory: the metadata store, every partition's log
//! (crash recovery runs here), the shared fsync of the data directory's
//! file system, and what to do with topic directories the metadata does
//! not name. All of it is file and metadata I/O: `Broker::open` runs it on
//! the blocking pool as one task, and every file operation goes through the
//! configured `Storage`.
//!
//! Invariant: data is never deleted because metadata is missing. A topic
//! directory the metadata does not name is removed only if the metadata
//! durably recorded the topic's deletion (a deletion interrupted before its
//! files were gone); otherwise it is moved to `<data dir>/quarantine/` and
//! reported, for an operator to look at.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::acl::AclBinding;
use brook_storage::{Damage, LogConfig, LostData, PartitionLog, Storage, SyncGroup, TailDamage};

use super::{partition_dir, topic, topics_dir};
use crate::config::{BrokerConfig, MetaBackend};
use crate::error::{OpenError, PartitionError};
use crate::group::OffsetStore;
use crate::meta::{MemoryMetaStore, MetaStore, SledMetaStore, TopicRecord};
use crate::quota::{QuotaLimits, QuotaTarget};

/// Where topic directories without metadata are moved.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// A topic directory found without metadata, moved aside at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedTopic {
    /// The topic's name (its directory's name under `topics/`).
    pub topic: String,
    /// Where its files are now.
    pub path: std::path::PathBuf,
}

/// What a data directory holds, opened.
pub(super) struct Opened {
    pub(super) meta: Arc<dyn MetaStore>,
    /// Every stored topic with its partitions' logs, in partition order.
    pub(super) logs: Vec<(TopicRecord, Vec<PartitionLog>)>,
    pub(super) producer_epochs: Vec<(i64, i16)>,
    pub(super) producer_owners: Vec<(i64, String)>,
    pub(super) acls: Vec<AclBinding>,
    pub(super) offsets: OffsetStore,
    pub(super) sync_group: Arc<SyncGroup>,
    pub(super) quarantined: Vec<QuarantinedTopic>,
    pub(super) quotas: Vec<(QuotaTarget, QuotaLimits)>,
}

/// Opens everything under `config.data_dir`. Blocking.
pub(super) fn open_data_dir(config: &BrokerConfig) -> Result<Opened, OpenError> {
    let meta: Arc<dyn MetaStore> = match config.meta {
        MetaBackend::Memory => Arc::new(MemoryMetaStore::default()),
        MetaBackend::Disk => {
            config
                .storage
                .create_dir_all(&config.data_dir)
                .map_err(|source| OpenError::Io {
                    what: format!("create {}", config.data_dir.display()),
                    source,
                })?;
            Arc::new(SledMetaStore::open(&config.data_dir.join("meta"))?)
        }
    };
    let records = meta.topics()?;
    let producer_epochs = meta.producer_epochs()?;
    let producer_owners = meta.producer_owners()?;
    let acls = meta.acls()?;
    let offsets = OffsetStore::load(meta.clone())?;
    let quotas = meta.quotas()?;
    let logs = open_logs(config, &records)?;
    let quarantined = settle_orphans(config, meta.as_ref(), &records)?;
    let sync_group = Arc::new(config.storage.sync_group(&config.data_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no shared fsync for the data directory; each partition syncs its own files");
        SyncGroup::per_file()
    }));
    Ok(Opened {
        meta,
        logs,
        producer_epochs,
        producer_owners,
        acls,
        offsets,
        sync_group,
        quarantined,
        quotas,
    })
}

/// Opens the logs of every stored topic (recovery runs here).
fn open_logs(
    config: &BrokerConfig,
    records: &[TopicRecord],
) -> Result<Vec<(TopicRecord, Vec<PartitionLog>)>, OpenError> {
    let mut opened = Vec::with_capacity(records.len());
    for record in records {
        let settings =
            topic::resolve_settings(&config.topic_defaults, &record.overrides, &config.limits)?;
        let log_config = topic::log_config(&settings, config.index_interval_bytes);
        let present = dirs_in(
            config.storage.as_ref(),
            &topics_dir(&config.data_dir).join(&record.name),
        )?;
        let mut logs = Vec::with_capacity(record.partitions as usize);
        for p in 0..record.partitions {
            let log = if present.contains(&p.to_string()) {
                open_partition_log(config, &record.name, p, log_config)?
            } else {
                open_missing_partition(config, &record.name, p, log_config)?
            };
            logs.push(log);
        }
        opened.push((record.clone(), logs));
    }
    Ok(opened)
}

/// Opens (or creates) one partition's log, saying what recovery cut.
pub(crate) fn open_partition_log(
    config: &BrokerConfig,
    topic: &str,
    partition: u32,
    log_config: LogConfig,
) -> Result<PartitionLog, PartitionError> {
    let dir = partition_dir(&config.data_dir, topic, partition);
    let lost_data = config.lost_data(topic, partition);
    open_log_at(
        config.storage.clone(),
        &dir,
        topic,
        partition,
        log_config,
        lost_data,
    )
}

/// A partition the metadata names whose directory is missing: its
/// records are gone, so it is damaged (refusing reads and writes, and
/// nothing is created) unless an operator accepted the loss; then it
/// starts empty.
fn open_missing_partition(
    config: &BrokerConfig,
    topic: &str,
    partition: u32,
    log_config: LogConfig,
) -> Result<PartitionLog, PartitionError> {
    let dir = partition_dir(&config.data_dir, topic, partition);
    let damage = Damage::MissingDirectory;
    if config.lost_data(topic, partition) == LostData::Accept {
        tracing::warn!(topic, partition, dir = %dir.display(), %damage, "data loss accepted by the operator: the partition starts empty");
        return open_partition_log(config, topic, partition, log_config);
    }
    report_damaged(topic, partition, &damage);
    PartitionLog::missing(&dir, log_config)
        .map_err(|e| PartitionError::from_log(topic, partition, e))
}

/// The one report of a partition found damaged at open.
fn report_damaged(topic: &str, partition: u32, damage: &Damage) {
    let lost = damage.lost_offsets();
    tracing::error!(
        topic,
        partition,
        lost_from = lost.as_ref().map(|r| r.start),
        lost_to = lost.as_ref().map(|r| r.end - 1),
        lost_records = damage.lost_records(),
        %damage,
        "acknowledged records are missing: the partition refuses reads and writes, and its files are kept as they are, until an operator accepts the loss (`brook serve --accept-data-loss {topic}/{partition}`)"
    );
}

/// Opens (or creates) a partition's log in `dir`, wherever that is,
/// logging what recovery cut and what acknowledged data it found missing.
pub(super) fn open_log_at(
    storage: Arc<dyn Storage>,
    dir: &Path,
    topic: &str,
    partition: u32,
    log_config: LogConfig,
    lost_data: LostData,
) -> Result<PartitionLog, PartitionError> {
    let (log, report) = PartitionLog::open_with(storage, dir, log_config, lost_data)
        .map_err(|e| PartitionError::from_log(topic, partition, e))?;
    if let Some(damage) = &report.shortfall {
        if log.damage().is_some() {
            report_damaged(topic, partition, damage);
        } else {
            tracing::warn!(
                topic,
                partition,
                lost_records = damage.lost_records(),
                truncated_bytes = report.truncated_bytes,
                %damage,
                "data loss accepted by the operator: the partition serves from its shortened end"
            );
        }
        return Ok(log);
    }
    match &report.damage {
        // An unfinished write: expected after a crash, nothing acknowledged is lost.
        Some(damage @ TailDamage::Torn { .. }) => tracing::warn!(
            topic,
            partition,
            %damage,
            truncated_bytes = report.truncated_bytes,
            "cut a torn tail during recovery"
        ),
        // A complete batch that fails its checks: the disk changed data, and
        // everything from there on (possibly acknowledged records) is cut.
        Some(damage @ TailDamage::Corrupt { .. }) => tracing::error!(
            topic,
            partition,
            %damage,
            truncated_bytes = report.truncated_bytes,
            "cut a corrupt batch and everything after it during recovery"
        ),
        None => {}
    }
    Ok(log)
}

/// Deals with the topic directories the metadata does not name: those of
/// recorded deletions are removed (the deletion was interrupted), the rest
/// are quarantined. Recorded deletions whose files are gone are forgotten.
fn settle_orphans(
    config: &BrokerConfig,
    meta: &dyn MetaStore,
    records: &[TopicRecord],
) -> Result<Vec<QuarantinedTopic>, OpenError> {
    let dir = topics_dir(&config.data_dir);
    let names = dirs_in(config.storage.as_ref(), &dir)?;
    let stored: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
    let deleted: HashSet<String> = meta.deleted_topics()?.into_iter().collect();
    let mut quarantined = Vec::new();
    for name in names.iter().filter(|n| !stored.contains(n.as_str())) {
        let path = dir.join(name);
        if deleted.contains(name) {
            tracing::info!(topic = %name, "removing the files of a deleted topic");
            config
                .storage
                .remove_dir_all(&path)
                .map_err(|source| OpenError::Io {
                    what: format!("remove {}", path.display()),
                    source,
                })?;
            meta.forget_deleted_topic(name)?;
        } else {
            quarantined.push(quarantine(config, name, &path)?);
        }
    }
    for name in &deleted {
        if !names.contains(name) {
            meta.forget_deleted_topic(name)?;
        }
    }
    Ok(quarantined)
}

/// Moves a topic directory without metadata to the quarantine directory,
/// durably, under a name that says when.
fn quarantine(
    config: &BrokerConfig,
    name: &str,
    path: &Path,
) -> Result<QuarantinedTopic, OpenError> {
    let moved = config
        .data_dir
        .join(QUARANTINE_DIR)
        .join(format!("{name}.{}", brook_storage::now_ms()));
    move_dir_durably(config, path, &moved)?;
    tracing::error!(
        topic = name,
        path = %moved.display(),
        "a topic directory has no metadata: its files were moved aside, not deleted; with the broker stopped, `brook topic recover <path>` brings the topic back; or remove them"
    );
    Ok(QuarantinedTopic {
        topic: name.to_owned(),
        path: moved,
    })
}

/// A file operation on the data directory that failed, named.
#[derive(Debug)]
pub(super) struct FailedFileOp {
    pub(super) what: String,
    pub(super) source: io::Error,
}

impl From<FailedFileOp> for OpenError {
    fn from(FailedFileOp { what, source }: FailedFileOp) -> Self {
        Self::Io { what, source }
    }
}

/// The directories in `dir`; none when it does not exist (no topic was
/// ever created there).
pub(super) fn dirs_in(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>, FailedFileOp> {
    match storage.list_dirs(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        listed => listed.map_err(|source| FailedFileOp {
            what: format!("list {}", dir.display()),
            source,
        }),
    }
}

/// Moves a directory of the data directory to `to` (creating its parent),
/// durably: the entries of both parents and of the data directory (which
/// may have gained that parent) are synced.
pub(super) fn move_dir_durably(
    config: &BrokerConfig,
    from: &Path,
    to: &Path,
) -> Result<(), FailedFileOp> {
    let failed = |what: String| move |source| FailedFileOp { what, source };
    let storage = config.storage.as_ref();
    let parent = |path: &'_ Path| match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let (from_parent, to_parent) = (parent(from), parent(to));
    storage
        .create_dir_all(&to_parent)
        .map_err(failed(format!("create {}", to_parent.display())))?;
    storage.rename(from, to).map_err(failed(format!(
        "move {} to {}",
        from.display(),
        to.display()
    )))?;
    for synced in [&from_parent, &to_parent, &config.data_dir] {
        storage
            .sync_dir(synced)
            .map_err(failed(format!("fsync {}", synced.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use brook_storage::testing::MemStorage;

    use super::*;
    use crate::meta::TopicOverrides;

    const SEGMENT: &str = "0/00000000000000000000.log";

    fn record(name: &str) -> TopicRecord {
        TopicRecord {
            name: name.to_owned(),
            partitions: 1,
            overrides: TopicOverrides::default(),
            created_ms: 0,
        }
    }

    fn topic_file(topic: &str) -> std::path::PathBuf {
        Path::new("/data/topics").join(topic).join(SEGMENT)
    }

    #[test]
    fn a_directory_without_metadata_is_quarantined_and_a_deleted_topics_is_removed() {
        let storage = MemStorage::default();
        let config = BrokerConfig {
            data_dir: "/data".into(),
            storage: Arc::new(storage.clone()),
            meta: MetaBackend::Memory,
            ..BrokerConfig::default()
        };
        let meta = MemoryMetaStore::default();
        meta.put_topic(&record("kept")).unwrap();
        meta.put_topic(&record("deleted")).unwrap();
        meta.delete_topic("deleted").unwrap();
        meta.put_topic(&record("gone")).unwrap();
        meta.delete_topic("gone").unwrap();
        for topic in ["kept", "deleted", "lost"] {
            storage.set_contents(&topic_file(topic), b"data".to_vec());
        }

        let quarantined = settle_orphans(&config, &meta, &meta.topics().unwrap()).unwrap();

        // The deletion that was interrupted is finished.
        assert!(storage.contents(&topic_file("deleted")).is_none());
        // The directory whose metadata is missing is moved, with its data.
        assert_eq!(quarantined.len(), 1, "{quarantined:?}");
        assert_eq!(quarantined[0].topic, "lost");
        assert!(quarantined[0].path.starts_with("/data/quarantine"));
        assert_eq!(
            storage.contents(&quarantined[0].path.join(SEGMENT)),
            Some(b"data".to_vec())
        );
        assert!(storage.contents(&topic_file("lost")).is_none());
        assert_eq!(
            storage.contents(&topic_file("kept")),
            Some(b"data".to_vec())
        );
        assert_eq!(
            storage.list_dirs(Path::new("/data/topics")).ok(),
            Some(vec!["kept".to_owned()])
        );
        // Both recorded deletions are done with.
        assert!(meta.deleted_topics().unwrap().is_empty());
    }
}
