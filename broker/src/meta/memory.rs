//! `MetaStore` in memory, for tests and embedders that need no persistence.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{MetaError, MetaStore, TopicRecord};

#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    /// Topics by name.
    topics: Mutex<BTreeMap<String, TopicRecord>>,
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
}
