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
/// the loss of the broker. A broker keeps (serves, changes, expires) only
/// the groups it coordinates, each under a lease: the epoch of its
/// coordination, which every change carries, and which the replication
/// refuses once another broker coordinates the group. Each call resolves
/// once the change is durable (committed), or fails with why (the message
/// is the client's); nothing is done before the future is first polled.
pub trait OffsetReplication: Send + Sync + std::fmt::Debug {
    /// The epoch under which this broker coordinates `group` now; `None`
    /// when it does not.
    fn lease(&self, group: &str) -> Option<u64>;
    fn commit(
        &self,
        group: String,
        offsets: Vec<(String, u32, i64)>,
        at_ms: i64,
        lease: u64,
    ) -> BoxFuture<'static, Result<(), String>>;
    fn mark_active(
        &self,
        group: String,
        at_ms: i64,
        lease: u64,
    ) -> BoxFuture<'static, Result<(), String>>;
    fn delete(&self, group: String, lease: u64) -> BoxFuture<'static, Result<(), String>>;
}

/// A group's committed offsets and when it was last active, as
/// [`OffsetReplication`] holds them.
pub type ReplicatedGroup = (String, BTreeMap<TopicPartition, i64>, i64);

/// How long a change to a group's offsets may take to be committed by the
/// replication before the caller is told it failed (its outcome unknown:
/// the epoch it carries still fences it). Every write holds `writes`, so
/// a coordinator cut off from the cluster would otherwise hold all its
/// groups' commits, and giving up its slots, until the cut heals. Kafka's
/// `offsets.commit.timeout.ms` is the same 5 s.
const REPLICATED_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct OffsetStore {
    meta: Arc<dyn MetaStore>,
    /// In a cluster: where offsets are made durable instead of `meta`;
    /// the mirror then holds only the groups this broker coordinates.
    replication: parking_lot::RwLock<Option<Arc<dyn OffsetReplication>>>,
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
            let written = self.replicated(&*replication, group, |lease| {
                replication.commit(owned, rows, now, lease)
            });
            if !written.await? {
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
            let written = self.replicated(&*replication, group, |lease| {
                replication.delete(owned, lease)
            });
            if !written.await? {
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
        // In a cluster a group whose slot moved on is its new
        // coordinator's to mark.
        if !self.has_group(group) || !self.keeps(group) {
            return Ok(());
        }
        let now = brook_storage::now_ms();
        let meta = self.meta.clone();
        let owned = group.to_owned();
        if let Some(replication) = self.replication() {
            let written = self.replicated(&*replication, group, |lease| {
                replication.mark_active(owned, now, lease)
            });
            if !written.await? {
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

    /// Makes offsets durable through `replication` from now on. Offsets
    /// this broker kept on its own before are not the cluster's: nothing
    /// is served (or expired) from them.
    pub(crate) fn replicate_through(&self, replication: Arc<dyn OffsetReplication>) {
        *self.replication.write() = Some(replication);
        self.cache.lock().clear();
        self.active_ms.lock().clear();
    }

    /// Makes a write durable through `replication` under the lease this
    /// broker holds on `group` (refused without one); whether the mirror
    /// may then take it: not when the lease changed meanwhile, the mirror
    /// no longer being where the group's offsets live. (`write` does
    /// nothing until awaited here.)
    async fn replicated(
        &self,
        replication: &dyn OffsetReplication,
        group: &str,
        write: impl FnOnce(u64) -> BoxFuture<'static, Result<(), String>>,
    ) -> Result<bool, GroupError> {
        let Some(lease) = replication.lease(group) else {
            return Err(GroupError::NotCoordinator(format!(
                "this broker does not coordinate consumer groups of group `{group}`'s slot now"
            )));
        };
        match tokio::time::timeout(REPLICATED_WRITE_TIMEOUT, write(lease)).await {
            Ok(written) => written.map_err(GroupError::NotCoordinator)?,
            Err(_elapsed) => {
                return Err(GroupError::NotCoordinator(format!(
                    "the change to group `{group}`'s offsets was not committed by the cluster within {} s (this broker may be cut off from it); it may still be",
                    REPLICATED_WRITE_TIMEOUT.as_secs()
                )));
            }
        }
        Ok(replication.lease(group) == Some(lease))
    }

    /// Whether this broker keeps `group`'s offsets: always alone, in a
    /// cluster while it coordinates the group.
    pub(crate) fn keeps(&self, group: &str) -> bool {
        self.replication()
            .is_none_or(|replication| replication.lease(group).is_some())
    }

    /// In a cluster: this broker starts coordinating `groups` (those of
    /// the slots it was given): the mirror takes what the replication
    /// holds of them, each counted active now (its members have not had
    /// the time to join again).
    pub(crate) fn take_groups(&self, groups: Vec<ReplicatedGroup>) {
        let now = brook_storage::now_ms();
        let mut cache = self.cache.lock();
        let mut active_ms = self.active_ms.lock();
        for (group, offsets, at) in groups {
            if offsets.is_empty() {
                continue;
            }
            active_ms.insert(group.clone(), at.max(now));
            cache.insert(group, offsets);
        }
    }

    /// In a cluster: forgets the groups this broker no longer coordinates,
    /// after any write under way (which then leaves the mirror alone).
    pub(crate) async fn forget_unkept(&self) {
        let _writes = self.writes.lock().await;
        let mut cache = self.cache.lock();
        let mut active_ms = self.active_ms.lock();
        cache.retain(|group, _| self.keeps(group));
        active_ms.retain(|group, _| self.keeps(group));
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

    /// A replication that holds this broker's lease on every group but
    /// never commits anything: a coordinator cut off from the cluster.
    #[derive(Debug)]
    struct CutOff;

    impl OffsetReplication for CutOff {
        fn lease(&self, _group: &str) -> Option<u64> {
            Some(1)
        }
        fn commit(
            &self,
            _group: String,
            _offsets: Vec<(String, u32, i64)>,
            _at_ms: i64,
            _lease: u64,
        ) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(futures::future::pending())
        }
        fn mark_active(
            &self,
            _group: String,
            _at_ms: i64,
            _lease: u64,
        ) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(futures::future::pending())
        }
        fn delete(&self, _group: String, _lease: u64) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(futures::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_cluster_does_not_commit_fails_in_time_and_frees_the_writes() {
        let meta: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::default());
        let store = OffsetStore::load(meta).unwrap();
        store.replicate_through(Arc::new(CutOff));
        let started = tokio::time::Instant::now();
        let writes = store.writes.lock().await;
        let put = store.put("g", vec![(TopicPartition::new("t", 0), 3)]);
        let error = tokio::time::timeout(REPLICATED_WRITE_TIMEOUT * 2, put)
            .await
            .expect("the write gives up by itself")
            .unwrap_err();
        drop(writes);
        assert_eq!(started.elapsed(), REPLICATED_WRITE_TIMEOUT);
        assert!(error.to_string().contains("not committed"), "{error}");
        assert!(store.get("g").is_empty(), "the mirror is left alone");
        // Giving up groups waits for the writes, which are free again.
        store.forget_unkept().await;
    }
}
