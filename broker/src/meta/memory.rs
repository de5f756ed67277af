//! `MetaStore` in memory, for tests and embedders that need no persistence.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{MetaError, MetaStore, TopicRecord};

#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    /// Topics by name.
    topics: Mutex<BTreeMap<String, TopicRecord>>,
    /// Producer ids handed out, with their epochs.
    producers: Mutex<BTreeMap<i64, i16>>,
}

impl MetaStore for MemoryMetaStore {
    fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaError> {
        self.topics.lock().insert(topic.name.clone(), topic.clone());
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<(), MetaError> {
        self.topics.lock().remove(name);
        Ok(())
    }

    fn topics(&self) -> Result<Vec<TopicRecord>, MetaError> {
        Ok(self.topics.lock().values().cloned().collect())
    }

    fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        let mut producers = self.producers.lock();
        let id = producers.keys().next_back().map_or(1, |last| last + 1);
        producers.insert(id, 0);
        Ok(id)
    }

    fn put_producer_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), MetaError> {
        self.producers.lock().insert(producer_id, epoch);
        Ok(())
    }

    fn producer_epochs(&self) -> Result<Vec<(i64, i16)>, MetaError> {
        Ok(self
            .producers
            .lock()
            .iter()
            .map(|(id, e)| (*id, *e))
            .collect())
    }
}
