//! `MetaStore` on sled: one tree per kind of record, JSON values (readable
//! with any sled tool, and tolerant of added fields), flushed on every write.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{MetaError, MetaStore, TopicRecord};

const TOPICS_TREE: &str = "topics";

#[derive(Debug)]
pub struct SledMetaStore {
    db: sled::Db,
    topics: sled::Tree,
}

impl SledMetaStore {
    /// Opens (or creates) the store. Blocks: call it off the async workers.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let db = open_when_unlocked(dir)?;
        let topics = db.open_tree(TOPICS_TREE).map_err(store)?;
        Ok(Self { db, topics })
    }

    fn flush(&self) -> Result<(), MetaError> {
        self.db.flush().map(drop).map_err(store)
    }
}

/// How long to wait for a previous instance in this process to release the
/// store's file lock (sled's flusher thread lets go shortly after a drop).
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn open_when_unlocked(dir: &Path) -> Result<sled::Db, MetaError> {
    let started = Instant::now();
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.map_err(store),
        }
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
