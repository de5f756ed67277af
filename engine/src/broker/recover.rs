//! Bringing a quarantined topic back (`brook topic recover`): a topic
//! directory the broker moved to `<data dir>/quarantine/` because its
//! metadata was missing gets a new metadata record (its partitions counted
//! from its directories, the broker's default settings) and is moved back
//! to `topics/<name>/`. Offline: the caller holds the metadata store, so no
//! broker runs on the data directory meanwhile.
//!
//! Invariant: data is never lost on the way, whatever step a crash
//! interrupts. The directory is moved back before the record is written
//! (see `recover_with`), and nothing here deletes a file.

use std::path::{Path, PathBuf};

use brook_storage::Storage;

use super::open::{FailedFileOp, dirs_in, move_dir_durably, open_log_at};
use super::topic::{self, validate_topic_name};
use super::topics_dir;
use crate::config::BrokerConfig;
use crate::error::{PartitionError, RecoverError};
use crate::meta::{MetaStore, SledMetaStore, TopicOverrides, TopicRecord};

/// A topic brought back from quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveredTopic {
    pub name: String,
    /// Where its files are now: `<data dir>/topics/<name>`.
    pub path: PathBuf,
    /// Each partition's offsets, in partition order.
    pub partitions: Vec<RecoveredPartition>,
}

/// A recovered partition's offsets, as its log holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveredPartition {
    pub partition: u32,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// The topic name a quarantined directory was made from: its name without
/// the `.<unix ms>` the broker appended. `None` without such a suffix.
pub fn quarantined_topic_name(path: &Path) -> Option<&str> {
    let file_name = path.file_name()?.to_str()?;
    let (name, ms) = file_name.rsplit_once('.')?;
    let is_ms = !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit());
    (is_ms && !name.is_empty()).then_some(name)
}

/// Recovers the quarantined topic directory `quarantined` as topic `name`,
/// in the data directory `config.data_dir`, through its metadata store
/// (`<data dir>/meta`). Blocking. Fails if a broker holds the store.
pub fn recover_quarantined_topic(
    config: &BrokerConfig,
    quarantined: &Path,
    name: &str,
) -> Result<RecoveredTopic, RecoverError> {
    let meta_dir = config.data_dir.join("meta");
    // Checked before sled opens the store, which would create one in a
    // directory given by mistake.
    let is_data_dir = config
        .storage
        .list_dirs(&config.data_dir)
        .is_ok_and(|dirs| dirs.iter().any(|d| d == "meta"));
    if !is_data_dir {
        return Err(RecoverError::NotADataDir(config.data_dir.clone()));
    }
    // Held until the end: sled's lock keeps a broker from starting on the
    // data directory halfway through.
    let meta = SledMetaStore::open(&meta_dir)?;
    recover_with(config, &meta, quarantined, name)
}

/// [`recover_quarantined_topic`] on a store the caller opened.
///
/// Order, for crash safety: the directory is moved back first and the
/// record written second. Crashing in between leaves a directory under
/// `topics/` that the metadata does not name, and the next start
/// quarantines it again, whole. The other order would be unsafe: a
/// start that finds the record but no directory creates empty
/// partitions there, which take new records and stand in the way of
/// the move back.
pub(crate) fn recover_with(
    config: &BrokerConfig,
    meta: &dyn MetaStore,
    quarantined: &Path,
    name: &str,
) -> Result<RecoveredTopic, RecoverError> {
    validate_topic_name(name)?;
    if meta.topics()?.iter().any(|t| t.name == name) {
        return Err(RecoverError::TopicExists(name.to_owned()));
    }
    let topics = topics_dir(&config.data_dir);
    let target = topics.join(name);
    if dirs_in(config.storage.as_ref(), &topics)?.contains(&name.to_owned()) {
        return Err(RecoverError::DirectoryExists(target));
    }
    let count = count_partitions(config.storage.as_ref(), quarantined)?;
    let partitions = open_and_close(config, quarantined, name, count)?;
    // A recorded deletion of the name would make the next start delete
    // the moved directory if the record below never gets written; the
    // files it was about are gone (`topics/<name>` does not exist).
    if meta.deleted_topics()?.iter().any(|d| d == name) {
        meta.forget_deleted_topic(name)?;
    }
    move_dir_durably(config, quarantined, &target)?;
    meta.put_topic(&TopicRecord {
        name: name.to_owned(),
        partitions: count,
        overrides: TopicOverrides::default(),
        created_ms: brook_storage::now_ms(),
    })?;
    tracing::info!(
        topic = name,
        partitions = count,
        from = %quarantined.display(),
        "topic recovered from quarantine"
    );
    Ok(RecoveredTopic {
        name: name.to_owned(),
        path: target,
        partitions,
    })
}

/// The partition count of a topic directory: its subdirectories must be
/// exactly `0` to `n - 1`, with `n >= 1`.
fn count_partitions(storage: &dyn Storage, dir: &Path) -> Result<u32, RecoverError> {
    let layout = |reason: String| RecoverError::Layout {
        path: dir.to_owned(),
        reason,
    };
    let names = storage.list_dirs(dir).map_err(|source| RecoverError::Io {
        what: format!("list {}", dir.display()),
        source,
    })?;
    let mut partitions = Vec::with_capacity(names.len());
    for name in &names {
        // The canonical spelling only: `01` is not partition 1 to the broker.
        match name.parse::<u32>() {
            Ok(p) if p.to_string() == *name => partitions.push(p),
            _ => {
                return Err(layout(format!(
                    "`{name}` is not a partition directory (those are named 0, 1, 2, ...)"
                )));
            }
        }
    }
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(layout("it holds no partition directories".to_owned()));
    }
    for (expected, &found) in (0_u32..).zip(&partitions) {
        if found != expected {
            return Err(layout(format!(
                "partition {expected} is missing (found {})",
                join(&partitions)
            )));
        }
    }
    Ok(partitions.len() as u32)
}

fn join(partitions: &[u32]) -> String {
    partitions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens each partition's log where it is (recovery runs, as at a broker
/// start, so a log the broker would refuse is refused here, before
/// anything moved), takes its offsets and closes it cleanly so that the
/// next start need not recover it again.
fn open_and_close(
    config: &BrokerConfig,
    dir: &Path,
    name: &str,
    count: u32,
) -> Result<Vec<RecoveredPartition>, RecoverError> {
    let settings = topic::resolve_settings(
        &config.topic_defaults,
        &TopicOverrides::default(),
        &config.limits,
    )?;
    let log_config = topic::log_config(&settings, config.index_interval_bytes);
    let mut partitions = Vec::with_capacity(count as usize);
    for partition in 0..count {
        let log = open_log_at(
            config.storage.clone(),
            &dir.join(partition.to_string()),
            name,
            partition,
            log_config,
            config.lost_data(name, partition),
        )?;
        log.close_clean()
            .map_err(|e| PartitionError::from_log(name, partition, e))?;
        partitions.push(RecoveredPartition {
            partition,
            start_offset: log.start_offset(),
            end_offset: log.high_watermark(),
        });
    }
    Ok(partitions)
}

impl From<FailedFileOp> for RecoverError {
    fn from(FailedFileOp { what, source }: FailedFileOp) -> Self {
        Self::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brook_record::{BatchHeader, BatchOptions, NewRecord};
    use brook_storage::testing::MemStorage;
    use brook_storage::{LogConfig, PartitionLog};
    use bytes::Bytes;

    use super::*;
    use crate::config::MetaBackend;
    use crate::meta::MemoryMetaStore;

    const QUARANTINED: &str = "/data/quarantine/orders.1700000000000";

    fn config(storage: &MemStorage) -> BrokerConfig {
        BrokerConfig {
            data_dir: "/data".into(),
            storage: Arc::new(storage.clone()),
            meta: MetaBackend::Memory,
            ..BrokerConfig::default()
        }
    }

    /// Writes `records` single-record batches into partition `p` of the
    /// topic directory `dir`, and leaves the log without a clean mark, as a
    /// crash would.
    fn write_partition(storage: &MemStorage, dir: &Path, p: u32, records: i64) {
        let (log, _) = PartitionLog::open(
            Arc::new(storage.clone()),
            &dir.join(p.to_string()),
            LogConfig::default(),
        )
        .unwrap();
        for i in 0..records {
            let record = NewRecord {
                timestamp: 1_000,
                value: Some(Bytes::from(i.to_string())),
                ..NewRecord::default()
            };
            let bytes = brook_record::encode_batch(&[record], BatchOptions::default()).unwrap();
            let header = BatchHeader::parse(&bytes).unwrap();
            let (_, mark) = log.append(&[(bytes, header)], 1_000).unwrap();
            log.sync().unwrap();
            log.publish(&mark);
        }
    }

    #[test]
    fn names_come_from_quarantined_directories() {
        fn name(p: &str) -> Option<&str> {
            quarantined_topic_name(Path::new(p))
        }
        assert_eq!(name(QUARANTINED), Some("orders"));
        assert_eq!(name("q/a.b.123"), Some("a.b"));
        assert_eq!(name("q/orders"), None);
        assert_eq!(name("q/orders.12x"), None);
        assert_eq!(name("q/.123"), None);
    }

    #[test]
    fn a_quarantined_topic_comes_back_with_its_records() {
        let storage = MemStorage::default();
        let config = config(&storage);
        let meta = MemoryMetaStore::default();
        // A deletion recorded under the same name long ago must not let a
        // later start delete the recovered files.
        meta.put_topic(&TopicRecord {
            name: "orders".to_owned(),
            partitions: 1,
            overrides: TopicOverrides::default(),
            created_ms: 0,
        })
        .unwrap();
        meta.delete_topic("orders").unwrap();
        let dir = Path::new(QUARANTINED);
        write_partition(&storage, dir, 0, 3);
        write_partition(&storage, dir, 1, 0);

        let recovered = recover_with(&config, &meta, dir, "orders").unwrap();

        assert_eq!(recovered.name, "orders");
        assert_eq!(recovered.path, Path::new("/data/topics/orders"));
        let ends: Vec<(u32, i64, i64)> = recovered
            .partitions
            .iter()
            .map(|p| (p.partition, p.start_offset, p.end_offset))
            .collect();
        assert_eq!(ends, vec![(0, 0, 3), (1, 0, 0)]);
        let stored = meta.topics().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].name, "orders");
        assert_eq!(stored[0].partitions, 2);
        assert_eq!(stored[0].overrides, TopicOverrides::default());
        assert!(meta.deleted_topics().unwrap().is_empty());
        assert!(storage.paths().iter().all(|p| !p.starts_with(dir)));
        // The broker opens it as it would any topic, records included.
        let (log, report) = PartitionLog::open(
            Arc::new(storage.clone()),
            &recovered.path.join("0"),
            LogConfig::default(),
        )
        .unwrap();
        assert!(report.clean_shutdown, "{report:?}");
        assert_eq!(log.high_watermark(), 3);
    }

    #[test]
    fn recovery_refuses_a_taken_name_or_a_malformed_directory() {
        let storage = MemStorage::default();
        let config = config(&storage);
        let meta = MemoryMetaStore::default();
        let dir = Path::new(QUARANTINED);
        write_partition(&storage, dir, 0, 1);
        write_partition(&storage, dir, 2, 1);

        let gap = recover_with(&config, &meta, dir, "orders").unwrap_err();
        assert!(
            matches!(&gap, RecoverError::Layout { reason, .. } if reason.contains("partition 1 is missing")),
            "{gap}"
        );
        write_partition(&storage, dir, 1, 1);
        storage.set_contents(&dir.join("stray/file"), Vec::new());
        let stray = recover_with(&config, &meta, dir, "orders").unwrap_err();
        assert!(
            matches!(&stray, RecoverError::Layout { reason, .. } if reason.contains("`stray`")),
            "{stray}"
        );
        storage.remove_dir_all(&dir.join("stray")).unwrap();

        meta.put_topic(&TopicRecord {
            name: "orders".to_owned(),
            partitions: 1,
            overrides: TopicOverrides::default(),
            created_ms: 0,
        })
        .unwrap();
        let named = recover_with(&config, &meta, dir, "orders").unwrap_err();
        assert!(matches!(named, RecoverError::TopicExists(_)), "{named}");
        write_partition(&storage, Path::new("/data/topics/other"), 0, 0);
        let taken = recover_with(&config, &meta, dir, "other").unwrap_err();
        assert!(matches!(taken, RecoverError::DirectoryExists(_)), "{taken}");
        let bad = recover_with(&config, &meta, dir, "a/b").unwrap_err();
        assert!(matches!(bad, RecoverError::Invalid(_)), "{bad}");

        // Every refusal left the directory whole and the metadata alone.
        assert_eq!(meta.topics().unwrap().len(), 1);
        let recovered = recover_with(&config, &meta, dir, "orders2").unwrap();
        assert_eq!(recovered.partitions.len(), 3);
    }
}
