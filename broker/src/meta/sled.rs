//! `MetaStore` on sled: one tree per kind of record, JSON values (readable
//! with any sled tool, and tolerant of added fields), flushed on every write.

use std::path::Path;

use super::{MetaError, MetaStore, TopicRecord};

const TOPICS_TREE: &str = "topics";

#[derive(Debug)]
pub struct SledMetaStore {
    db: sled::Db,
    topics: sled::Tree,
}

impl SledMetaStore {
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let db = sled::open(dir).map_err(store)?;
        let topics = db.open_tree(TOPICS_TREE).map_err(store)?;
        Ok(Self { db, topics })
    }

    fn flush(&self) -> Result<(), MetaError> {
        self.db.flush().map(drop).map_err(store)
    }
}

fn store(e: sled::Error) -> MetaError {
    MetaError::Store(Box::new(e))
}

impl MetaStore for SledMetaStore {
    fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaError> {
        let value = serde_json::to_vec(topic).map_err(|source| MetaError::Decode {
            key: topic.name.clone(),
            source,
        })?;
        self.topics
            .insert(topic.name.as_bytes(), value)
            .map_err(store)?;
        self.flush()
    }

    fn delete_topic(&self, name: &str) -> Result<(), MetaError> {
        self.topics.remove(name.as_bytes()).map_err(store)?;
        self.flush()
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
}
