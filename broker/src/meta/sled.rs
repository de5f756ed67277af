//! `MetaStore` on sled: one tree per kind of record, JSON values (readable
//! with any sled tool, and tolerant of added fields), flushed on every write.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{MetaError, MetaStore, TopicRecord};

const TOPICS_TREE: &str = "topics";
/// Producer id (8 bytes, big-endian) → current epoch (2 bytes, big-endian).
const PRODUCERS_TREE: &str = "producers";

#[derive(Debug)]
pub struct SledMetaStore {
    db: sled::Db,
    topics: sled::Tree,
    producers: sled::Tree,
}

impl SledMetaStore {
    /// Opens (or creates) the store. Blocks: call it off the async workers.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let db = open_when_unlocked(dir)?;
        let topics = db.open_tree(TOPICS_TREE).map_err(store)?;
        let producers = db.open_tree(PRODUCERS_TREE).map_err(store)?;
        Ok(Self {
            db,
            topics,
            producers,
        })
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

    fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        // generate_id is durable and never repeats (it skips ahead after a
        // crash); 0 is kept free so that ids start at 1.
        let id = i64::try_from(self.db.generate_id().map_err(store)? + 1)
            .map_err(|e| MetaError::Store(Box::new(e)))?;
        self.put_producer_epoch(id, 0)?;
        Ok(id)
    }

    fn put_producer_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), MetaError> {
        self.producers
            .insert(producer_id.to_be_bytes(), &epoch.to_be_bytes())
            .map_err(store)?;
        self.flush()
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
