//! Opening a data directory: the metadata store, every partition's log
//! (crash recovery runs here), the shared fsync of the data directory's
//! file system, and the removal of topic directories the metadata no
//! longer names. All of it is file and metadata I/O: `Broker::open` runs it
//! on the blocking pool as one task, and every file operation goes through
//! the configured `Storage`.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use brook_storage::{LogConfig, PartitionLog, SyncGroup, TailDamage};

use super::{partition_dir, topic, topics_dir};
use crate::config::{BrokerConfig, MetaBackend};
use crate::error::{OpenError, PartitionError};
use crate::group::OffsetStore;
use crate::meta::{MemoryMetaStore, MetaStore, SledMetaStore, TopicRecord};

/// What a data directory holds, opened.
pub(super) struct Opened {
    pub(super) meta: Arc<dyn MetaStore>,
    /// Every stored topic with its partitions' logs, in partition order.
    pub(super) logs: Vec<(TopicRecord, Vec<PartitionLog>)>,
    pub(super) producer_epochs: Vec<(i64, i16)>,
    pub(super) offsets: OffsetStore,
    pub(super) sync_group: Arc<SyncGroup>,
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
    let offsets = OffsetStore::load(meta.clone())?;
    let logs = open_logs(config, &records)?;
    remove_orphans(config, &records);
    let sync_group = Arc::new(config.storage.sync_group(&config.data_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no shared fsync for the data directory; each partition syncs its own files");
        SyncGroup::per_file()
    }));
    Ok(Opened {
        meta,
        logs,
        producer_epochs,
        offsets,
        sync_group,
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
        let mut logs = Vec::with_capacity(record.partitions as usize);
        for p in 0..record.partitions {
            logs.push(open_partition_log(config, &record.name, p, log_config)?);
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
    let (log, report) = PartitionLog::open(config.storage.clone(), &dir, log_config)
        .map_err(|e| PartitionError::from_log(topic, partition, e))?;
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

/// Removes topic directories the metadata no longer names (a deletion that
/// was interrupted before its files were gone).
fn remove_orphans(config: &BrokerConfig, records: &[TopicRecord]) {
    let dir = topics_dir(&config.data_dir);
    let names = match config.storage.list_dirs(&dir) {
        Ok(names) => names,
        // No topic was ever created here.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not list topic directories");
            return;
        }
    };
    let stored: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
    for name in names.iter().filter(|n| !stored.contains(n.as_str())) {
        tracing::warn!(topic = %name, "removing files of a deleted topic");
        if let Err(e) = config.storage.remove_dir_all(&dir.join(name)) {
            tracing::warn!(topic = %name, error = %e, "could not remove a deleted topic's files");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use brook_storage::Storage;
    use brook_storage::testing::MemStorage;

    use super::*;
    use crate::meta::TopicOverrides;

    #[test]
    fn directories_of_topics_the_metadata_does_not_name_are_removed_through_storage() {
        let storage = MemStorage::default();
        let config = BrokerConfig {
            data_dir: "/data".into(),
            storage: Arc::new(storage.clone()),
            meta: MetaBackend::Memory,
            ..BrokerConfig::default()
        };
        let kept = Path::new("/data/topics/kept/0/00000000000000000000.log");
        let orphan = Path::new("/data/topics/ghost/0/00000000000000000000.log");
        storage.set_contents(kept, Vec::new());
        storage.set_contents(orphan, Vec::new());
        let record = TopicRecord {
            name: "kept".to_owned(),
            partitions: 1,
            overrides: TopicOverrides::default(),
            created_ms: 0,
        };
        remove_orphans(&config, std::slice::from_ref(&record));
        assert!(storage.contents(kept).is_some());
        assert!(storage.contents(orphan).is_none());
        assert_eq!(
            storage.list_dirs(Path::new("/data/topics")).ok(),
            Some(vec!["kept".to_owned()])
        );
    }
}
