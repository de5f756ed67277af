//! The broker's metadata (topics and their configuration, producer epochs,
//! committed group offsets) behind a small trait, so that nothing else knows
//! which store holds it.
//!
//! Invariant: only `meta/sled.rs` knows sled. A write returns only once it
//! is durable.

mod memory;
mod sled;
mod sync_rounds;

pub(crate) use memory::MemoryMetaStore;
pub(crate) use sled::SledMetaStore;

use serde::{Deserialize, Serialize};

/// A topic as stored: its partition count and the settings it overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub partitions: u32,
    pub overrides: TopicOverrides,
    pub created_ms: i64,
}

/// Per-topic settings; `None` means the broker's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOverrides {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<i64>,
    pub max_message_bytes: Option<u32>,
}

impl TopicOverrides {
    /// `self` with every field `other` sets replaced.
    #[must_use]
    pub fn merged(self, other: TopicOverrides) -> Self {
        Self {
            retention_ms: other.retention_ms.or(self.retention_ms),
            retention_bytes: other.retention_bytes.or(self.retention_bytes),
            segment_bytes: other.segment_bytes.or(self.segment_bytes),
            segment_ms: other.segment_ms.or(self.segment_ms),
            max_message_bytes: other.max_message_bytes.or(self.max_message_bytes),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another process holds the store's lock: a broker (or a command)
    /// using the same data directory.
    #[error(
        "the metadata store {} is locked by another process (a broker running on this data directory?)",
        dir.display()
    )]
    Locked { dir: std::path::PathBuf },
    /// The volume of the store has less free space than the store keeps
    /// in reserve: the write was refused before anything was staged, and
    /// is taken again once space is freed.
    #[error(
        "no space left on the data volume for the metadata store: {available_bytes} bytes free, {reserve_bytes} needed"
    )]
    NoSpace {
        available_bytes: u64,
        reserve_bytes: u64,
    },
    #[error("metadata record {key} cannot be decoded: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl MetaError {
    /// Whether the store refused for want of disk space (and takes writes
    /// again once there is some).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Self::NoSpace { .. })
    }
}

pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces a topic, durably (a recorded deletion of its
    /// name is forgotten at once).
    fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaError>;
    /// Removes a topic and records that it was deleted, both at once and
    /// durably, before its files go: only a recorded deletion lets a
    /// restart remove files the metadata does not name. Removing a missing
    /// topic is not an error.
    fn delete_topic(&self, name: &str) -> Result<(), MetaError>;
    /// Topics deleted whose files may not all be gone yet.
    fn deleted_topics(&self) -> Result<Vec<String>, MetaError>;
    /// Forgets a deletion once the topic's files are gone.
    fn forget_deleted_topic(&self, name: &str) -> Result<(), MetaError>;
    /// Every stored topic.
    fn topics(&self) -> Result<Vec<TopicRecord>, MetaError>;
    /// A producer id never handed out before (ids start at 1), durably.
    fn allocate_producer_id(&self) -> Result<i64, MetaError>;
    /// Records a producer's current epoch, durably.
    fn put_producer_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), MetaError>;
    /// Every producer id handed out, with its current epoch.
    fn producer_epochs(&self) -> Result<Vec<(i64, i16)>, MetaError>;
    /// Stores a group's committed offsets `(topic, partition, offset)`,
    /// all or nothing (other partitions keep theirs), but not yet durably:
    /// they are once a later `sync` returns, which lets many commits share
    /// one sync.
    fn stage_offsets(&self, group: &str, offsets: &[(String, u32, i64)]) -> Result<(), MetaError>;
    /// Makes every write made so far durable.
    fn sync(&self) -> Result<(), MetaError>;
    /// A group's committed offsets, by topic and partition.
    fn offsets(&self, group: &str) -> Result<Vec<(String, u32, i64)>, MetaError>;
    /// Removes a group's committed offsets, durably; a missing group is not an error.
    fn delete_group(&self, group: &str) -> Result<(), MetaError>;
    /// Every group with committed offsets, sorted.
    fn groups(&self) -> Result<Vec<String>, MetaError>;
}
