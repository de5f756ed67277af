//! Producer ids and epochs for idempotent produce: handed out by
//! `init_producer_id`, kept in the metadata store, and checked on every
//! idempotent batch before it is queued. Sequence numbers per partition are
//! the log's business (`storage::producers`).
//!
//! Invariant: a batch whose epoch is older than its producer's current one
//! is refused (the older instance is fenced).

use std::collections::HashMap;
use std::sync::Arc;

use brook_record::BatchHeader;
use parking_lot::Mutex;

use super::Broker;
use crate::error::{Invalid, ProduceError, blocking};

/// Current epoch per producer id; mirrors the metadata store.
///
/// Bounded: once `max` ids are remembered, handing out another forgets the
/// one whose last batch (or hand-out) is oldest, so a client calling
/// `InitProducerId` in a loop cannot grow the broker's memory or store.
#[derive(Debug)]
pub struct ProducerEpochs {
    /// Written by `init_producer_id` (under the admin lock), read per batch.
    state: Mutex<EpochTable>,
    max: usize,
    /// In a cluster the partitions' replicated logs fence stale epochs
    /// (their producer state moves with the log), and another broker may
    /// have handed out the id or bumped its epoch: only an epoch older
    /// than one this broker handed out is refused here.
    clustered: bool,
}

#[derive(Debug, Default)]
struct EpochTable {
    producers: HashMap<i64, ProducerEpoch>,
    /// A logical clock: each use of an id takes the next tick, so the
    /// smallest `last_used` is the least recently used id.
    tick: u64,
}

#[derive(Debug, Clone)]
struct ProducerEpoch {
    epoch: i16,
    last_used: u64,
    /// The principal the id was handed out to, when one was recorded
    /// (ids handed out before owners were kept have none).
    owner: Option<Arc<str>>,
}

impl EpochTable {
    fn touch(&mut self, producer_id: i64, epoch: i16) {
        self.tick += 1;
        let last_used = self.tick;
        self.producers
            .entry(producer_id)
            .and_modify(|p| {
                p.epoch = epoch;
                p.last_used = last_used;
            })
            .or_insert(ProducerEpoch {
                epoch,
                last_used,
                owner: None,
            });
    }
}

impl ProducerEpochs {
    /// `epochs` in the order they were handed out (oldest first), which
    /// becomes their order of use until batches say otherwise.
    pub fn new(epochs: impl IntoIterator<Item = (i64, i16)>, max: usize, clustered: bool) -> Self {
        let mut table = EpochTable::default();
        for (id, epoch) in epochs {
            table.touch(id, epoch);
        }
        Self {
            state: Mutex::new(table),
            max: max.max(1),
            clustered,
        }
    }

    /// Ids beyond the bound, least recently used first: what the store
    /// should forget (after a restart with a lower bound, say).
    fn surplus(&self, keep: i64) -> Vec<i64> {
        let state = self.state.lock();
        let excess = state.producers.len().saturating_sub(self.max);
        if excess == 0 {
            return Vec::new();
        }
        let mut ids: Vec<(u64, i64)> = state
            .producers
            .iter()
            .filter(|(id, _)| **id != keep)
            .map(|(id, p)| (p.last_used, *id))
            .collect();
        let excess = excess.min(ids.len());
        if excess < ids.len() {
            // Linear: the common case forgets one id out of many.
            ids.select_nth_unstable(excess);
        }
        ids.truncate(excess);
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Refuses an idempotent batch whose producer or epoch is not current.
    pub fn check(
        &self,
        header: &BatchHeader,
        topic: &str,
        partition: u32,
    ) -> Result<(), ProduceError> {
        if header.producer_id < 0 {
            return Ok(());
        }
        let current = {
            let mut state = self.state.lock();
            state.tick += 1;
            let tick = state.tick;
            state.producers.get_mut(&header.producer_id).map(|p| {
                p.last_used = tick;
                p.epoch
            })
        };
        let refused = |reason: String| ProduceError::ProducerFenced {
            topic: topic.to_owned(),
            partition,
            reason,
        };
        match current {
            None if self.clustered => Ok(()),
            Some(epoch) if self.clustered && header.producer_epoch >= epoch => Ok(()),
            None => Err(refused(format!(
                "producer_id {} is not known to this broker: it was never handed out, or it was forgotten as the least recently used of more than the broker keeps (call InitProducerId)",
                header.producer_id
            ))),
            Some(epoch) if header.producer_epoch < epoch => Err(refused(format!(
                "producer_id {} epoch {} is fenced: a newer instance holds epoch {epoch}",
                header.producer_id, header.producer_epoch
            ))),
            Some(epoch) if header.producer_epoch > epoch => Err(refused(format!(
                "producer_id {} epoch {} was never handed out (current epoch {epoch})",
                header.producer_id, header.producer_epoch
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Records who holds each id, as loaded from the store.
    pub fn set_owners(&self, owners: impl IntoIterator<Item = (i64, String)>) {
        let mut state = self.state.lock();
        for (id, owner) in owners {
            if let Some(producer) = state.producers.get_mut(&id) {
                producer.owner = Some(owner.into());
            }
        }
    }

    /// The current epoch of an id, and who holds it.
    fn current(&self, producer_id: i64) -> Option<(i16, Option<Arc<str>>)> {
        self.state
            .lock()
            .producers
            .get(&producer_id)
            .map(|p| (p.epoch, p.owner.clone()))
    }

    fn remember(&self, producer_id: i64, epoch: i16) {
        self.state.lock().touch(producer_id, epoch);
    }

    fn remember_new(&self, producer_id: i64, owner: &str) {
        let mut state = self.state.lock();
        state.touch(producer_id, 0);
        if let Some(producer) = state.producers.get_mut(&producer_id) {
            producer.owner = Some(owner.into());
        }
    }

    fn forget(&self, producer_id: i64) {
        self.state.lock().producers.remove(&producer_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().producers.len()
    }
}

/// A producer id no other broker of the cluster hands out: the broker's id
/// in the high bits (`PRODUCER_ID_NODE_SHIFT`; node ids are at most
/// `NODE_ID_MAX`, so it stays positive), the broker's own counter below.
fn cluster_wide(local: i64, node: Option<u64>) -> i64 {
    match node {
        Some(node) => (node as i64) << crate::config::PRODUCER_ID_NODE_SHIFT | local,
        None => local,
    }
}

impl Broker {
    /// A new producer id for `principal` (when `producer_id` is not
    /// positive) or the next epoch of an existing one, durably recorded
    /// before it is returned.
    ///
    /// Only the principal an id was handed out to (or a superuser) may
    /// take it over: bumping its epoch fences the instance holding it.
    pub async fn init_producer_id(
        &self,
        producer_id: i64,
        principal: &str,
    ) -> Result<(i64, i16), ProduceError> {
        let _admin = self.admin.lock().await;
        let meta = self.meta.clone();
        if producer_id <= 0 {
            let owner = principal.to_owned();
            let node = self.config.cluster.as_ref().map(|cluster| cluster.node_id);
            let id = blocking(move || {
                let id = cluster_wide(meta.allocate_producer_id()?, node);
                meta.put_producer_owner(id, &owner)?;
                Ok::<_, crate::meta::MetaError>(id)
            })
            .await??;
            self.producer_epochs.remember_new(id, principal);
            tracing::debug!(producer_id = id, "producer id handed out");
            self.forget_surplus_producers(id).await?;
            return Ok((id, 0));
        }
        let Some((epoch, owner)) = self.producer_epochs.current(producer_id) else {
            return Err(Invalid::new(
                "producer_id",
                format!(
                    "{producer_id} is not known to this broker: it was never handed out, or it was forgotten as the least recently used (ask for a new id)"
                ),
            )
            .into());
        };
        if let Some(owner) = owner
            && *owner != *principal
            && !self.authorizer.is_super_user(principal)
        {
            return Err(ProduceError::ProducerIdHeld {
                producer_id,
                principal: principal.to_owned(),
            });
        }
        let Some(next) = epoch.checked_add(1) else {
            return Err(Invalid::new(
                "producer_id",
                format!("{producer_id} has used every epoch; ask for a new id"),
            )
            .into());
        };
        blocking(move || meta.put_producer_epoch(producer_id, next)).await??;
        self.producer_epochs.remember(producer_id, next);
        tracing::debug!(producer_id, epoch = next, "producer epoch bumped");
        Ok((producer_id, next))
    }

    /// Forgets, in the store and then in memory, the least recently used
    /// ids beyond `producer_ids_max`. Call under the admin lock.
    async fn forget_surplus_producers(&self, keep: i64) -> Result<(), ProduceError> {
        for producer_id in self.producer_epochs.surplus(keep) {
            let meta = self.meta.clone();
            blocking(move || meta.forget_producer(producer_id)).await??;
            self.producer_epochs.forget(producer_id);
            tracing::debug!(producer_id, "least recently used producer id forgotten");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(producer_id: i64, producer_epoch: i16) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            crc: 0,
            magic: brook_record::MAGIC,
            attributes: 0,
            last_offset_delta: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch,
            base_sequence: 0,
            record_count: 1,
        }
    }

    #[test]
    fn the_table_forgets_the_least_recently_used_ids_beyond_its_bound() {
        let epochs = ProducerEpochs::new([(1, 0), (2, 0), (3, 0)], 3, false);
        // Id 1 produces, so 2 is now the least recently used.
        assert!(epochs.check(&batch_of(1, 0), "t", 0).is_ok());
        epochs.remember(4, 0);
        assert_eq!(epochs.surplus(4), vec![2]);
        epochs.forget(2);
        assert_eq!(epochs.len(), 3);
        assert!(epochs.check(&batch_of(2, 0), "t", 0).is_err());
        for id in [1, 3, 4] {
            assert!(epochs.check(&batch_of(id, 0), "t", 0).is_ok(), "id {id}");
        }
    }

    #[test]
    fn in_a_cluster_only_an_epoch_older_than_one_handed_out_here_is_refused() {
        let epochs = ProducerEpochs::new([(1, 2)], 10, true);
        assert!(epochs.check(&batch_of(1, 1), "t", 0).is_err());
        assert!(epochs.check(&batch_of(1, 2), "t", 0).is_ok());
        // Bumped on another broker.
        assert!(epochs.check(&batch_of(1, 3), "t", 0).is_ok());
        // Handed out by another broker.
        assert!(epochs.check(&batch_of(7 << 40 | 1, 0), "t", 0).is_ok());
        let alone = ProducerEpochs::new([(1, 2)], 10, false);
        assert!(alone.check(&batch_of(1, 3), "t", 0).is_err());
        assert!(alone.check(&batch_of(2, 0), "t", 0).is_err());
    }

    #[test]
    fn cluster_ids_carry_the_broker_and_never_collide() {
        assert_eq!(cluster_wide(5, None), 5);
        assert_ne!(cluster_wide(5, Some(1)), cluster_wide(5, Some(2)));
        let highest = cluster_wide(i64::from(u32::MAX), Some(crate::config::NODE_ID_MAX));
        assert!(highest > 0);
    }

    #[test]
    fn the_newest_id_is_never_its_own_surplus() {
        let epochs = ProducerEpochs::new([(1, 0)], 1, false);
        epochs.remember(2, 0);
        assert_eq!(epochs.surplus(2), vec![1]);
        assert_eq!(epochs.surplus(1), vec![2]);
    }

    #[test]
    fn a_table_loaded_over_its_bound_gives_up_its_oldest_ids() {
        let epochs = ProducerEpochs::new((1..=10).map(|id| (id, 0)), 4, false);
        let mut surplus = epochs.surplus(10);
        surplus.sort_unstable();
        assert_eq!(surplus, vec![1, 2, 3, 4, 5, 6]);
    }
}
