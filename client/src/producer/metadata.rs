//! What the producer knows of each topic it sends to: the partition count
//! and the largest batch the topic accepts, learned from the broker.
//!
//! Invariant: at most `TOPICS_MAX` topics are cached; a new one takes the
//! place of the one cached longest ago (it is described again if needed).

use std::collections::HashMap;

use foldhash::fast::RandomState;

/// Topics whose metadata the producer keeps.
pub(crate) const TOPICS_MAX: usize = 1024;

/// What the producer needs to know about a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicMetadata {
    pub(crate) partition_count: u32,
    pub(crate) max_message_bytes: u32,
}

/// Topic metadata by topic name, bounded.
#[derive(Debug)]
pub(crate) struct MetadataCache {
    /// Each topic's metadata and the order it was cached in.
    /// Looked up per record: a fast hasher (the keys are the
    /// application's, not a peer's).
    topics: HashMap<String, (TopicMetadata, u64), RandomState>,
    next_order: u64,
    capacity: usize,
}

impl MetadataCache {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "the cache holds at least one topic");
        Self {
            topics: HashMap::default(),
            next_order: 0,
            capacity,
        }
    }

    pub(crate) fn get(&self, topic: &str) -> Option<TopicMetadata> {
        self.topics.get(topic).map(|(metadata, _)| *metadata)
    }

    pub(crate) fn insert(&mut self, topic: &str, metadata: TopicMetadata) {
        if !self.topics.contains_key(topic) && self.topics.len() >= self.capacity {
            // Linear, but only on a miss with a full cache.
            let oldest = self
                .topics
                .iter()
                .min_by_key(|(_, (_, order))| *order)
                .map(|(topic, _)| topic.clone());
            if let Some(oldest) = oldest {
                self.topics.remove(&oldest);
            }
        }
        self.topics
            .insert(topic.to_owned(), (metadata, self.next_order));
        self.next_order += 1;
        assert!(self.topics.len() <= self.capacity);
    }

    /// Forgets `topic` (the broker says it or a partition does not exist).
    pub(crate) fn remove(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.topics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: TopicMetadata = TopicMetadata {
        partition_count: 3,
        max_message_bytes: 1024,
    };

    #[test]
    fn the_topic_cached_longest_ago_makes_room() {
        let mut cache = MetadataCache::new(2);
        cache.insert("a", METADATA);
        cache.insert("b", METADATA);
        cache.insert("a", METADATA);
        cache.insert("c", METADATA);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("c"), Some(METADATA));
        for i in 0..1000 {
            cache.insert(&format!("t{i}"), METADATA);
        }
        assert_eq!(cache.len(), 2, "bounded however many topics");
        cache.remove("t999");
        assert_eq!(cache.get("t999"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_default_bound_is_set() {
        assert!(MetadataCache::new(TOPICS_MAX).capacity >= 1);
    }
}
