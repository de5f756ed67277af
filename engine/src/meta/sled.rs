//! `MetaStore` on sled: one tree per kind of record, JSON values (readable
//! with any sled tool, and tolerant of added fields), durable before every
//! write returns.
//!
//! sled 0.34's `flush` does not make a write durable: it writes with
//! `pwrite` and `sync_file_range`, which persists neither the file's new
//! size nor the disk's cache, and leaves `fsync` to a background thread
//! every 500 ms. So every write here is followed by `flush` and then an
//! `fdatasync` of sled's log file (`db`), shared by concurrent writers
//! (`SyncRounds`: many offset commits at once pay for a few syncs). The
//! `conf` file and the directory are synced once, at open. sled writes its
//! snapshots with an fsync of their own.
//!
//! sled 0.34 does not survive a full disk: a flush whose write meets ENOSPC
//! blocks for good (in `iobuf::make_stable`), and an I/O error it does
//! report is sticky until the store is reopened. So every write first
//! checks that the volume keeps `RESERVE_BYTES` free and is refused
//! (`MetaError::NoSpace`, nothing staged) otherwise. A file system that
//! does not report its space (FUSE ones without `statfs`, some network
//! file systems) is not checked. The partitions' logs on the same volume
//! do not keep this reserve, so an append can still take the last of it
//! between the check and sled's write.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sled::Transactional;

use super::sync_rounds::SyncRounds;
use super::{MetaError, MetaStore, TopicRecord};
use crate::acl::AclBinding;
use crate::quota::{QuotaLimits, QuotaTarget};

/// Free space a metadata write needs on the store's volume: a few of sled's
/// 512 KiB log segments, which a write may have to start.
pub const RESERVE_BYTES: u64 = 2 * 1024 * 1024;

const TOPICS_TREE: &str = "topics";
/// Producer id (8 bytes, big-endian) → current epoch (2 bytes, big-endian).
const PRODUCERS_TREE: &str = "producers";
/// `group \0 topic \0 partition (4 bytes, big-endian)` → committed offset
/// (8 bytes, big-endian). Neither names contain NUL, so a group's keys are
/// contiguous and sorted by topic and partition.
const OFFSETS_TREE: &str = "offsets";
/// Topic name → deletion time (ms, 8 bytes, big-endian): deleted topics
/// whose files may remain.
const DELETED_TOPICS_TREE: &str = "deleted_topics";
/// Group name → when it was last active (ms, 8 bytes, big-endian): a
/// commit, or its last member leaving. Groups expire from it.
const GROUP_ACTIVITY_TREE: &str = "group_activity";
/// Producer id (8 bytes, big-endian) → the principal it was handed out to
/// (UTF-8).
const PRODUCER_OWNERS_TREE: &str = "producer_owners";
/// An ACL's JSON → the same JSON: the key makes adding one twice a no-op.
const ACLS_TREE: &str = "acls";
/// Principal name → its quota (`QuotaLimits` as JSON); the default quota's
/// key is a single NUL byte, which no principal name holds.
const QUOTAS_TREE: &str = "quotas";
/// The key of the default quota in `QUOTAS_TREE`.
const DEFAULT_QUOTA_KEY: &[u8] = &[0];

#[derive(Debug)]
pub struct SledMetaStore {
    db: sled::Db,
    topics: sled::Tree,
    producers: sled::Tree,
    offsets: sled::Tree,
    deleted_topics: sled::Tree,
    group_activity: sled::Tree,
    producer_owners: sled::Tree,
    acls: sled::Tree,
    /// sled's log file, opened once to fsync it (an fsync covers the file,
    /// whichever descriptor wrote it).
    log_file: File,
    /// The store's directory, whose volume's free space is checked before
    /// every write.
    dir: PathBuf,
    /// Shares fsyncs between concurrent writers.
    syncs: SyncRounds,
}

impl SledMetaStore {
    /// Opens (or creates) the store. Blocks: call it off the async workers.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let db = open_when_unlocked(dir)?;
        let topics = db.open_tree(TOPICS_TREE).map_err(store)?;
        let producers = db.open_tree(PRODUCERS_TREE).map_err(store)?;
        let offsets = db.open_tree(OFFSETS_TREE).map_err(store)?;
        let deleted_topics = db.open_tree(DELETED_TOPICS_TREE).map_err(store)?;
        let group_activity = db.open_tree(GROUP_ACTIVITY_TREE).map_err(store)?;
        let producer_owners = db.open_tree(PRODUCER_OWNERS_TREE).map_err(store)?;
        let acls = db.open_tree(ACLS_TREE).map_err(store)?;
        db.flush().map_err(store)?;
        // What sled created at its first open must survive a power loss:
        // its files' contents and their names in the directories.
        File::open(dir.join("conf"))
            .and_then(|conf| conf.sync_all())
            .map_err(|e| io(&e, "fsync", &dir.join("conf")))?;
        let log_file = File::open(dir.join("db")).map_err(|e| io(&e, "open", &dir.join("db")))?;
        log_file
            .sync_all()
            .map_err(|e| io(&e, "fsync", &dir.join("db")))?;
        for synced in [Some(dir), dir.parent()].into_iter().flatten() {
            File::open(synced)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&e, "fsync", synced))?;
        }
        Ok(Self {
            db,
            topics,
            producers,
            offsets,
            deleted_topics,
            group_activity,
            producer_owners,
            acls,
            log_file,
            dir: dir.to_owned(),
            syncs: SyncRounds::default(),
        })
    }

    /// Makes every write made so far durable: sled's flush, then an fsync
    /// of its log, in rounds shared with concurrent writers. A failure is
    /// final (see `SyncRounds`).
    fn durable(&self) -> Result<(), MetaError> {
        self.syncs
            .sync(|| {
                self.db.flush().map_err(|e| format!("flush: {e}"))?;
                self.log_file
                    .sync_data()
                    .map_err(|e| format!("fsync of the metadata log: {e}"))
            })
            .map_err(|reason| MetaError::Store(reason.into()))
    }
}

impl SledMetaStore {
    /// The quotas' tree, opened (or created: its creation is durable with
    /// the write that follows) when used: quotas are read once at open and
    /// written by rare admin calls, so they need no handle of their own.
    fn quotas_tree(&self) -> Result<sled::Tree, MetaError> {
        self.db.open_tree(QUOTAS_TREE).map_err(store)
    }

    /// Refuses a write while the volume has less than `RESERVE_BYTES` free,
    /// before sled stages anything (see the module header).
    fn check_room(&self) -> Result<(), MetaError> {
        let available =
            brook_storage::available_bytes(&self.dir).map_err(|e| io(&e, "statvfs", &self.dir))?;
        // A file system that does not report its space is not checked.
        let Some(available_bytes) = available else {
            return Ok(());
        };
        if available_bytes < RESERVE_BYTES {
            return Err(MetaError::NoSpace {
                available_bytes,
                reserve_bytes: RESERVE_BYTES,
            });
        }
        Ok(())
    }
}

fn io(error: &std::io::Error, op: &str, path: &Path) -> MetaError {
    MetaError::Store(format!("{op} {}: {error}", path.display()).into())
}

/// How long to wait for a previous instance in this process to release the
/// store's file lock (sled's flusher thread lets go shortly after a drop).
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn open_when_unlocked(dir: &Path) -> Result<sled::Db, MetaError> {
    let started = Instant::now();
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e)) if is_locked(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(sled::Error::Io(e)) if is_locked(&e) => {
                return Err(MetaError::Locked {
                    dir: dir.to_owned(),
                });
            }
            other => return other.map_err(store),
        }
    }
}

/// Whether sled could not open the store because another instance holds
/// its lock: sled 0.34 reports that as an `Other` error whose message says
/// so (the `WouldBlock` of the lock call is only in the text).
fn is_locked(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || error.to_string().starts_with("could not acquire lock")
}

fn store(e: sled::Error) -> MetaError {
    MetaError::Store(Box::new(e))
}

fn transaction(e: &sled::transaction::TransactionError) -> MetaError {
    MetaError::Store(e.to_string().into())
}

fn quota_key(target: &QuotaTarget) -> &[u8] {
    match target {
        QuotaTarget::Default => DEFAULT_QUOTA_KEY,
        QuotaTarget::Principal(name) => name.as_bytes(),
    }
}

fn decode_quota(key: &[u8], value: &[u8]) -> Result<(QuotaTarget, QuotaLimits), MetaError> {
    let target = if key == DEFAULT_QUOTA_KEY {
        QuotaTarget::Default
    } else {
        let name = std::str::from_utf8(key).map_err(|e| MetaError::Store(Box::new(e)))?;
        QuotaTarget::Principal(name.to_owned())
    };
    let limits = serde_json::from_slice(value).map_err(|source| MetaError::Decode {
        key: format!("quota {target}"),
        source,
    })?;
    Ok((target, limits))
}

/// The key prefix of a group's offsets: `group \0`.
fn group_prefix(group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + 1);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key
}

fn offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn malformed(key: &[u8], value: &[u8]) -> MetaError {
    MetaError::Store(format!("malformed offset record {key:?} = {value:?}").into())
}

/// `(topic, partition, offset)` of a key and value of the offsets tree.
fn decode_offset(
    prefix_len: usize,
    key: &[u8],
    value: &[u8],
) -> Result<(String, u32, i64), MetaError> {
    let rest = key.get(prefix_len..).ok_or_else(|| malformed(key, value))?;
    let split = rest
        .len()
        .checked_sub(5)
        .ok_or_else(|| malformed(key, value))?;
    let (topic, tail) = rest.split_at(split);
    let partition = tail
        .get(1..)
        .and_then(|p| <[u8; 4]>::try_from(p).ok())
        .map(u32::from_be_bytes);
    let offset = <[u8; 8]>::try_from(value).ok().map(i64::from_be_bytes);
    match (std::str::from_utf8(topic), tail.first(), partition, offset) {
        (Ok(topic), Some(0), Some(partition), Some(offset)) => {
            Ok((topic.to_owned(), partition, offset))
        }
        _ => Err(malformed(key, value)),
    }
}

impl MetaStore for SledMetaStore {
    fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaError> {
        self.check_room()?;
        let value = serde_json::to_vec(topic).map_err(|source| MetaError::Decode {
            key: topic.name.clone(),
            source,
        })?;
        (&self.topics, &self.deleted_topics)
            .transaction(|(topics, deleted)| {
                topics.insert(topic.name.as_bytes(), value.as_slice())?;
                deleted.remove(topic.name.as_bytes())?;
                Ok(())
            })
            .map_err(|e| transaction(&e))?;
        self.durable()
    }

    fn delete_topic(&self, name: &str) -> Result<(), MetaError> {
        self.check_room()?;
        let at = brook_storage::now_ms().to_be_bytes();
        (&self.topics, &self.deleted_topics)
            .transaction(|(topics, deleted)| {
                topics.remove(name.as_bytes())?;
                deleted.insert(name.as_bytes(), &at)?;
                Ok(())
            })
            .map_err(|e| transaction(&e))?;
        self.durable()
    }

    fn deleted_topics(&self) -> Result<Vec<String>, MetaError> {
        self.deleted_topics
            .iter()
            .keys()
            .map(|key| {
                let key = key.map_err(store)?;
                String::from_utf8(key.to_vec()).map_err(|e| MetaError::Store(Box::new(e)))
            })
            .collect()
    }

    fn forget_deleted_topic(&self, name: &str) -> Result<(), MetaError> {
        self.check_room()?;
        self.deleted_topics.remove(name.as_bytes()).map_err(store)?;
        self.durable()
    }

    fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        self.check_room()?;
        // generate_id is durable and never repeats (it skips ahead after a
        // crash); 0 is kept free so that ids start at 1.
        let id = i64::try_from(self.db.generate_id().map_err(store)? + 1)
            .map_err(|e| MetaError::Store(Box::new(e)))?;
        self.put_producer_epoch(id, 0)?;
        Ok(id)
    }

    fn put_producer_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), MetaError> {
        self.check_room()?;
        self.producers
            .insert(producer_id.to_be_bytes(), &epoch.to_be_bytes())
            .map_err(store)?;
        self.durable()
    }

    fn producer_epochs(&self) -> Result<Vec<(i64, i16)>, MetaError> {
        self.producers
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                let id = <[u8; 8]>::try_from(key.as_ref()).map(i64::from_be_bytes);
                let epoch = <[u8; 2]>::try_from(value.as_ref()).map(i16::from_be_bytes);
                match (id, epoch) {
                    (Ok(id), Ok(epoch)) => Ok((id, epoch)),
                    _ => Err(MetaError::Store(
                        format!("malformed producer record {key:?} = {value:?}").into(),
                    )),
                }
            })
            .collect()
    }

    fn forget_producer(&self, producer_id: i64) -> Result<(), MetaError> {
        self.check_room()?;
        self.producers
            .remove(producer_id.to_be_bytes())
            .map_err(store)?;
        // A crash between the two leaves an owner of an id that is never
        // handed out again: harmless.
        self.producer_owners
            .remove(producer_id.to_be_bytes())
            .map_err(store)?;
        self.durable()
    }

    fn stage_offsets(&self, group: &str, offsets: &[(String, u32, i64)]) -> Result<(), MetaError> {
        self.check_room()?;
        let mut batch = sled::Batch::default();
        for (topic, partition, offset) in offsets {
            batch.insert(offset_key(group, topic, *partition), &offset.to_be_bytes());
        }
        self.offsets.apply_batch(batch).map_err(store)
    }

    fn sync(&self) -> Result<(), MetaError> {
        self.durable()
    }

    fn offsets(&self, group: &str) -> Result<Vec<(String, u32, i64)>, MetaError> {
        let prefix = group_prefix(group);
        self.offsets
            .scan_prefix(&prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                decode_offset(prefix.len(), &key, &value)
            })
            .collect()
    }

    fn delete_group(&self, group: &str) -> Result<(), MetaError> {
        self.check_room()?;
        let mut batch = sled::Batch::default();
        for entry in self.offsets.scan_prefix(group_prefix(group)).keys() {
            batch.remove(entry.map_err(store)?);
        }
        self.offsets.apply_batch(batch).map_err(store)?;
        self.group_activity
            .remove(group.as_bytes())
            .map_err(store)?;
        self.durable()
    }

    fn stage_group_activity(&self, group: &str, at_ms: i64) -> Result<(), MetaError> {
        self.check_room()?;
        self.group_activity
            .insert(group.as_bytes(), &at_ms.to_be_bytes())
            .map_err(store)?;
        Ok(())
    }

    fn group_activity(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.group_activity
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                let group = std::str::from_utf8(&key).map_err(|_| malformed(&key, &value))?;
                let at = <[u8; 8]>::try_from(value.as_ref())
                    .map(i64::from_be_bytes)
                    .map_err(|_| malformed(&key, &value))?;
                Ok((group.to_owned(), at))
            })
            .collect()
    }

    fn groups(&self) -> Result<Vec<String>, MetaError> {
        let mut groups = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        // One seek per group: after a group's first key, jump past `group \x01`.
        while let Some(entry) = self.offsets.range(from.clone()..).next() {
            let (key, _) = entry.map_err(store)?;
            let end = key
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| malformed(&key, &[]))?;
            let group = std::str::from_utf8(&key[..end]).map_err(|_| malformed(&key, &[]))?;
            groups.push(group.to_owned());
            from = key[..end].to_vec();
            from.push(1);
        }
        Ok(groups)
    }

    fn topics(&self) -> Result<Vec<TopicRecord>, MetaError> {
        self.topics
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                serde_json::from_slice(&value).map_err(|source| MetaError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })
            })
            .collect()
    }

    fn put_producer_owner(&self, producer_id: i64, owner: &str) -> Result<(), MetaError> {
        self.check_room()?;
        self.producer_owners
            .insert(producer_id.to_be_bytes(), owner.as_bytes())
            .map_err(store)?;
        self.durable()
    }

    fn producer_owners(&self) -> Result<Vec<(i64, String)>, MetaError> {
        self.producer_owners
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                let id = <[u8; 8]>::try_from(key.as_ref()).map(i64::from_be_bytes);
                match (id, std::str::from_utf8(&value)) {
                    (Ok(id), Ok(owner)) => Ok((id, owner.to_owned())),
                    _ => Err(malformed(&key, &value)),
                }
            })
            .collect()
    }

    fn put_acl(&self, acl: &AclBinding) -> Result<(), MetaError> {
        self.check_room()?;
        let json = acl_json(acl)?;
        self.acls
            .insert(json.as_slice(), json.as_slice())
            .map_err(store)?;
        self.durable()
    }

    fn delete_acl(&self, acl: &AclBinding) -> Result<bool, MetaError> {
        self.check_room()?;
        let removed = self.acls.remove(acl_json(acl)?).map_err(store)?.is_some();
        self.durable()?;
        Ok(removed)
    }

    fn acls(&self) -> Result<Vec<AclBinding>, MetaError> {
        self.acls
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                serde_json::from_slice(&value).map_err(|source| MetaError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })
            })
            .collect()
    }

    fn put_quota(&self, target: &QuotaTarget, limits: &QuotaLimits) -> Result<(), MetaError> {
        self.check_room()?;
        let value = serde_json::to_vec(limits).map_err(|source| MetaError::Decode {
            key: format!("quota {target}"),
            source,
        })?;
        self.quotas_tree()?
            .insert(quota_key(target), value)
            .map_err(store)?;
        self.durable()
    }

    fn delete_quota(&self, target: &QuotaTarget) -> Result<(), MetaError> {
        self.check_room()?;
        self.quotas_tree()?
            .remove(quota_key(target))
            .map_err(store)?;
        self.durable()
    }

    fn quotas(&self) -> Result<Vec<(QuotaTarget, QuotaLimits)>, MetaError> {
        self.quotas_tree()?
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(store)?;
                decode_quota(&key, &value)
            })
            .collect()
    }
}

fn acl_json(acl: &AclBinding) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(acl).map_err(|source| MetaError::Decode {
        key: acl.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TopicOverrides;

    #[test]
    fn topics_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let topic = TopicRecord {
            name: "orders".into(),
            partitions: 3,
            overrides: TopicOverrides {
                retention_bytes: Some(1024),
                ..TopicOverrides::default()
            },
            created_ms: 1,
        };
        {
            let store = SledMetaStore::open(dir.path()).unwrap();
            store.put_topic(&topic).unwrap();
        }
        let store = SledMetaStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().unwrap(), vec![topic]);
        store.delete_topic("orders").unwrap();
        assert!(store.topics().unwrap().is_empty());
    }

    #[test]
    fn offsets_survive_reopen_and_groups_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledMetaStore::open(dir.path()).unwrap();
            store
                .stage_offsets("g", &[("a".into(), 1, 10), ("a".into(), 0, 5)])
                .unwrap();
            store.stage_offsets("g2", &[("a".into(), 0, 7)]).unwrap();
            store.stage_offsets("g", &[("a".into(), 1, 11)]).unwrap();
            store.stage_group_activity("g", 100).unwrap();
            store.stage_group_activity("g2", 200).unwrap();
            store.sync().unwrap();
        }
        let store = SledMetaStore::open(dir.path()).unwrap();
        assert_eq!(
            store.groups().unwrap(),
            vec!["g".to_owned(), "g2".to_owned()]
        );
        assert_eq!(
            store.offsets("g").unwrap(),
            vec![("a".to_owned(), 0, 5), ("a".to_owned(), 1, 11)]
        );
        assert_eq!(
            store.group_activity().unwrap(),
            vec![("g".to_owned(), 100), ("g2".to_owned(), 200)]
        );
        store.delete_group("g").unwrap();
        assert!(store.offsets("g").unwrap().is_empty());
        assert_eq!(
            store.group_activity().unwrap(),
            vec![("g2".to_owned(), 200)]
        );
        assert_eq!(store.offsets("g2").unwrap(), vec![("a".to_owned(), 0, 7)]);
        assert_eq!(store.groups().unwrap(), vec!["g2".to_owned()]);
    }

    #[test]
    fn quotas_survive_reopen_and_the_default_stays_apart_from_principals() {
        let dir = tempfile::tempdir().unwrap();
        let alice = QuotaTarget::Principal("alice".into());
        let bob = QuotaTarget::Principal("bob".into());
        let limits = |produce, fetch| QuotaLimits {
            produce_bytes_per_second: produce,
            fetch_bytes_per_second: fetch,
        };
        {
            let store = SledMetaStore::open(dir.path()).unwrap();
            store.put_quota(&alice, &limits(Some(10), None)).unwrap();
            store
                .put_quota(&QuotaTarget::Default, &limits(None, Some(20)))
                .unwrap();
            store.put_quota(&bob, &limits(Some(1), Some(2))).unwrap();
            store
                .put_quota(&alice, &limits(Some(30), Some(40)))
                .unwrap();
        }
        let store = SledMetaStore::open(dir.path()).unwrap();
        let mut quotas = store.quotas().unwrap();
        quotas.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            quotas,
            vec![
                (QuotaTarget::Default, limits(None, Some(20))),
                (alice.clone(), limits(Some(30), Some(40))),
                (bob.clone(), limits(Some(1), Some(2))),
            ]
        );
        store.delete_quota(&QuotaTarget::Default).unwrap();
        store.delete_quota(&bob).unwrap();
        store.delete_quota(&bob).unwrap();
        drop(store);
        let store = SledMetaStore::open(dir.path()).unwrap();
        assert_eq!(
            store.quotas().unwrap(),
            vec![(alice, limits(Some(30), Some(40)))]
        );
    }

    #[test]
    fn open_waits_for_an_instance_that_is_letting_go_of_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledMetaStore::open(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let reopened = SledMetaStore::open(dir.path());
        release.join().unwrap();
        assert!(reopened.is_ok(), "{reopened:?}");
    }
}
