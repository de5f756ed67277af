//! Producer ids and epochs for idempotent produce: handed out by
//! `init_producer_id`, kept in the metadata store, and checked on every
//! idempotent batch before it is queued. Sequence numbers per partition are
//! the log's business (`storage::producers`).
//!
//! Invariant: a batch whose epoch is older than its producer's current one
//! is refused (the older instance is fenced).

use std::collections::HashMap;

use brook_record::BatchHeader;
use parking_lot::Mutex;

use super::Broker;
use crate::error::{Invalid, ProduceError, blocking};

/// Current epoch per producer id; mirrors the metadata store.
#[derive(Debug, Default)]
pub struct ProducerEpochs {
    /// Written by `init_producer_id` (under the admin lock), read per batch.
    epochs: Mutex<HashMap<i64, i16>>,
}

impl ProducerEpochs {
    pub fn new(epochs: impl IntoIterator<Item = (i64, i16)>) -> Self {
        Self {
            epochs: Mutex::new(epochs.into_iter().collect()),
        }
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
        let current = self.epochs.lock().get(&header.producer_id).copied();
        let refused = |reason: String| ProduceError::ProducerFenced {
            topic: topic.to_owned(),
            partition,
            reason,
        };
        match current {
            None => Err(refused(format!(
                "producer_id {} was not handed out by this broker (call InitProducerId)",
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
}

impl Broker {
    /// A new producer id (when `producer_id` is not positive) or the next
    /// epoch of an existing one, durably recorded before it is returned.
    pub async fn init_producer_id(&self, producer_id: i64) -> Result<(i64, i16), ProduceError> {
        let _admin = self.admin.lock().await;
        let meta = self.meta.clone();
        if producer_id <= 0 {
            let id = blocking(move || meta.allocate_producer_id()).await??;
            self.producer_epochs.epochs.lock().insert(id, 0);
            tracing::debug!(producer_id = id, "producer id handed out");
            return Ok((id, 0));
        }
        let current = self
            .producer_epochs
            .epochs
            .lock()
            .get(&producer_id)
            .copied();
        let Some(epoch) = current else {
            return Err(Invalid::new(
                "producer_id",
                format!("{producer_id} was not handed out by this broker"),
            )
            .into());
        };
        let Some(next) = epoch.checked_add(1) else {
            return Err(Invalid::new(
                "producer_id",
                format!("{producer_id} has used every epoch; ask for a new id"),
            )
            .into());
        };
        blocking(move || meta.put_producer_epoch(producer_id, next)).await??;
        self.producer_epochs.epochs.lock().insert(producer_id, next);
        tracing::debug!(producer_id, epoch = next, "producer epoch bumped");
        Ok((producer_id, next))
    }
}
