//! Committed offsets: durable in the `MetaStore`, mirrored in memory so that
//! `FetchOffsets`, `DescribeGroup` and the lag metrics never touch the store.
//!
//! Writes are serialized (`writes`): a commit checks its fencing and writes
//! while holding it, so no other write to the offsets overtakes it. The
//! mirror changes only after the store's write returned.
//!
//! Each group also has a time it was last active (its last commit, or its
//! last member leaving), kept beside its offsets: a group without members
//! whose activity is older than the offsets' retention is expired with its
//! offsets, as Kafka's `offsets.retention.minutes` does. A group stored
//! without an activity time counts as active when the broker starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::TopicPartition;
use crate::error::{GroupError, blocking};
use crate::meta::{MetaError, MetaStore};

/// Where committed offsets are made durable instead of the broker's own
/// metadata store: in a cluster, the metadata group, so that they survive
/// the loss of the broker. Each call resolves once the change is durable
/// (committed), or fails with why (the message is the client's); nothing
/// is done before the future is first polled.
pub trait OffsetReplication: Send + Sync + std::fmt::Debug {
    fn commit(
        &self,
        group: String,
        offsets: Vec<(String, u32, i64)>,
        at_ms: i64,
    ) -> BoxFuture<'static, Result<(), String>>;
    fn mark_active(&self, group: String, at_ms: i64) -> BoxFuture<'static, Result<(), String>>;
    fn delete(&self, group: String) -> BoxFuture<'static, Result<(), String>>;
}

/// A group's committed offsets and when it was last active, as
/// [`OffsetReplication`] holds them.
pub type ReplicatedGroup = (String, BTreeMap<TopicPartition, i64>, i64);

#[derive(Debug)]
pub(crate) struct OffsetStore {
    meta: Arc<dyn MetaStore>,
    /// In a cluster: where offsets are made durable instead of `meta`.
    replication: parking_lot::RwLock<Option<Arc<dyn OffsetReplication>>>,
    /// In a cluster: bumped whenever this broker starts or stops keeping
    /// the offsets (see `replace`), so that a write that began before
    /// does not touch the mirror after.
    epoch: std::sync::atomic::AtomicU64,
    /// In a cluster: whether this broker keeps the offsets now (it
    /// coordinates the groups); only then does it expire groups.
    keeping: std::sync::atomic::AtomicBool,
    /// Committed offsets by group, as in the store. Held briefly, never
    /// across an await.
    cache: Mutex<BTreeMap<String, BTreeMap<TopicPartition, i64>>>,
    /// When each group in `cache` was last active (ms since the epoch).
    active_ms: Mutex<HashMap<String, i64>>,
    /// Serializes writes to the store (each write is durable before it
    /// returns, so they wait on the disk anyway) and makes check-then-write
    /// atomic.
    pub(crate) writes: tokio::sync::Mutex<()>,
}

impl OffsetStore {
    /// Loads every group's offsets. Blocks on the store.
    pub(crate) fn load(meta: Arc<dyn MetaStore>) -> Result<Self, MetaError> {
        let mut cache = BTreeMap::new();
        let stored_activity: HashMap<String, i64> = meta.group_activity()?.into_iter().collect();
        let now = brook_storage::now_ms();
        let mut active_ms = HashMap::new();
        for group in meta.groups()? {
            let offsets: BTreeMap<TopicPartition, i64> = meta
                .offsets(&group)?
                .into_iter()
                .map(|(topic, partition, offset)| (TopicPartition::new(topic, partition), offset))
                .collect();
            if !offsets.is_empty() {
                let at = stored_activity.get(&group).copied().unwrap_or(now);
                active_ms.insert(group.clone(), at);
                cache.insert(group, offsets);
            }
        }
        Ok(Self {
            meta,
            replication: parking_lot::RwLock::new(None),
            epoch: std::sync::atomic::AtomicU64::new(0),
            keeping: std::sync::atomic::AtomicBool::new(true),
            cache: Mutex::new(cache),
            active_ms: Mutex::new(active_ms),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes offsets durably, then mirrors them. Call with `writes` held.
    pub(crate) async fn put(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<(), GroupError> {
        self.stage(group, offsets).await?;
        self.sync().await
    }

    /// Writes offsets and mirrors them, not yet durably: they are once a
    /// later `sync` returns. Call with `writes` held, and `sync` after
    /// releasing it, so that commits of many members share syncs. Until
    /// then `FetchOffsets` may show them; a power loss before the sync can
    /// take them back, and then their committers were not answered.
    pub(crate) async fn stage(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<(), GroupError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let meta = self.meta.clone();
        let owned = group.to_owned();
        let rows: Vec<(String, u32, i64)> = offsets
            .iter()
            .map(|(tp, offset)| (tp.topic.clone(), tp.partition, *offset))
            .collect();
        let now = brook_storage::now_ms();
        if let Some(replication) = self.replication() {
            if !self
                .replicated(replication.commit(owned, rows, now))
                .await?
            {
                return Ok(());
            }
        } else {
            blocking(move || {
                meta.stage_offsets(&owned, &rows)?;
                meta.stage_group_activity(&owned, now)
            })
            .await??;
        }
        self.active_ms.lock().insert(group.to_owned(), now);
        self.cache
            .lock()
            .entry(group.to_owned())
            .or_default()
            .extend(offsets);
        Ok(())
    }

    /// Makes every staged write durable (in rounds shared with other
    /// callers).
    pub(crate) async fn sync(&self) -> Result<(), GroupError> {
        if self.replication().is_some() {
            // Each commit was durable when staged.
            return Ok(());
        }
        let meta = self.meta.clone();
        blocking(move || meta.sync()).await??;
        Ok(())
    }

    /// Removes a group's offsets durably, then from the mirror. Call with
    /// `writes` held.
    pub(crate) async fn delete(&self, group: &str) -> Result<(), GroupError> {
        let meta = self.meta.clone();
        let owned = group.to_owned();
        if let Some(replication) = self.replication() {
            if !self.replicated(replication.delete(owned)).await? {
                return Ok(());
            }
        } else {
            blocking(move || meta.delete_group(&owned)).await??;
        }
        self.cache.lock().remove(group);
        self.active_ms.lock().remove(group);
        Ok(())
    }

    /// Records that `group` was active now (its last member left), durably.
    /// Only groups with committed offsets are kept, and only they expire.
    pub(crate) async fn mark_active(&self, group: &str) -> Result<(), GroupError> {
        if !self.has_group(group) {
            return Ok(());
        }
        let now = brook_storage::now_ms();
        let meta = self.meta.clone();
        let owned = group.to_owned();
        if let Some(replication) = self.replication() {
            if !self.replicated(replication.mark_active(owned, now)).await? {
                return Ok(());
            }
        } else {
            blocking(move || {
                meta.stage_group_activity(&owned, now)?;
                meta.sync()
            })
            .await??;
        }
        self.active_ms.lock().insert(group.to_owned(), now);
        Ok(())
    }

    fn replication(&self) -> Option<Arc<dyn OffsetReplication>> {
        self.replication.read().clone()
    }

    /// Makes offsets durable through `replication` from now on.
    pub(crate) fn replicate_through(&self, replication: Arc<dyn OffsetReplication>) {
        *self.replication.write() = Some(replication);
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Makes `write` durable through the replication; whether the mirror
    /// may then take it: not when this broker stopped (or started again)
    /// keeping the offsets meanwhile, the mirror no longer being where
    /// they live. (`write` does nothing until awaited here.)
    async fn replicated(
        &self,
        write: BoxFuture<'static, Result<(), String>>,
    ) -> Result<bool, GroupError> {
        let epoch = self.epoch();
        write.await.map_err(GroupError::NotCoordinator)?;
        Ok(self.epoch() == epoch)
    }

    /// Whether this broker keeps the offsets now, and may expire groups.
    pub(crate) fn keeping(&self) -> bool {
        self.keeping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// In a cluster: `Some(groups)` when this broker starts keeping the
    /// offsets (it coordinates the groups): the mirror becomes what the
    /// replication holds, every group counted active now (its members have
    /// not had the time to join again). `None` when it stops: the mirror
    /// is emptied. Writes begun before either touch the mirror no more.
    pub(crate) fn replace(&self, groups: Option<Vec<ReplicatedGroup>>) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let keeping = groups.is_some();
        let now = brook_storage::now_ms();
        let mut cache = BTreeMap::new();
        let mut active_ms = HashMap::new();
        for (group, offsets, at) in groups.into_iter().flatten() {
            if offsets.is_empty() {
                continue;
            }
            active_ms.insert(group.clone(), at.max(now));
            cache.insert(group, offsets);
        }
        *self.cache.lock() = cache;
        *self.active_ms.lock() = active_ms;
        self.keeping
            .store(keeping, std::sync::atomic::Ordering::Release);
    }

    /// Whether offsets go through a replication (a cluster).
    pub(crate) fn is_replicated(&self) -> bool {
        self.replication().is_some()
    }

    /// Records, in memory only, that `group` is active now (a member joins,
    /// or its last one left), if it has committed offsets.
    pub(crate) fn note_active(&self, group: &str) {
        if let Some(at) = self.active_ms.lock().get_mut(group) {
            *at = (*at).max(brook_storage::now_ms());
        }
    }

    /// Groups last active at or before `before_ms`.
    pub(crate) fn inactive_since(&self, before_ms: i64) -> Vec<String> {
        let mut groups: Vec<String> = self
            .active_ms
            .lock()
            .iter()
            .filter(|(_, at)| **at <= before_ms)
            .map(|(group, _)| group.clone())
            .collect();
        groups.sort_unstable();
        groups
    }

    /// When `group` was last active, if it has committed offsets.
    pub(crate) fn last_active_ms(&self, group: &str) -> Option<i64> {
        self.active_ms.lock().get(group).copied()
    }

    pub(crate) fn get(&self, group: &str) -> BTreeMap<TopicPartition, i64> {
        self.cache.lock().get(group).cloned().unwrap_or_default()
    }

    pub(crate) fn has_group(&self, group: &str) -> bool {
        self.cache.lock().contains_key(group)
    }

    /// Groups with committed offsets.
    pub(crate) fn groups(&self) -> Vec<String> {
        self.cache.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MemoryMetaStore;

    #[tokio::test]
    async fn offsets_are_stored_mirrored_and_deleted() {
        let meta: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::default());
        let store = OffsetStore::load(meta.clone()).unwrap();
        store
            .put(
                "g",
                vec![
                    (TopicPartition::new("t", 1), 5),
                    (TopicPartition::new("t", 0), 3),
                ],
            )
            .await
            .unwrap();
        store
            .put("g", vec![(TopicPartition::new("t", 1), 7)])
            .await
            .unwrap();
        assert_eq!(store.get("g")[&TopicPartition::new("t", 1)], 7);
        let reloaded = OffsetStore::load(meta.clone()).unwrap();
        assert_eq!(reloaded.get("g"), store.get("g"));
        assert_eq!(reloaded.groups(), vec!["g".to_owned()]);
        store.delete("g").await.unwrap();
        assert!(!store.has_group("g"));
        assert!(meta.groups().unwrap().is_empty());
    }
}
