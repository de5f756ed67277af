//! The broker's metadata (topics and their configuration, producer epochs,
//! committed group offsets, client quotas) behind a small trait, so that nothing else knows
//! which store holds it.
//!
//! Invariant: only `meta/sled.rs` knows sled. A write returns only once it
//! is durable.

mod memory;
mod sled;
mod sync_rounds;

pub(crate) use memory::MemoryMetaStore;
pub(crate) use sled::SledMetaStore;

use brook_record::RecordValidation;

use crate::acl::AclBinding;
use serde::{Deserialize, Serialize};

use crate::quota::{QuotaLimits, QuotaTarget};

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
    /// Stored by name (`full`, `framing`); absent in records written before
    /// the setting existed, which then take the default.
    #[serde(default, with = "validation_name")]
    pub validate_records: Option<RecordValidation>,
}

/// A topic's record validation as its name in the stored JSON, so the
/// record format's types need no serde.
mod validation_name {
    use brook_record::RecordValidation;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[allow(clippy::ref_option, clippy::trivially_copy_pass_by_ref)] // the signature serde's `with` requires
    pub fn serialize<S: Serializer>(
        value: &Option<RecordValidation>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(validation) => serializer.serialize_some(validation.name()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<RecordValidation>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|name| name.parse().map_err(D::Error::custom))
            .transpose()
    }
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
            validate_records: other.validate_records.or(self.validate_records),
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
    /// Every producer id handed out and not forgotten, with its current
    /// epoch, by id.
    fn producer_epochs(&self) -> Result<Vec<(i64, i16)>, MetaError>;
    /// Forgets a producer id, durably; it is never handed out again.
    fn forget_producer(&self, producer_id: i64) -> Result<(), MetaError>;
    /// Stores a group's committed offsets `(topic, partition, offset)`,
    /// all or nothing (other partitions keep theirs), but not yet durably:
    /// they are once a later `sync` returns, which lets many commits share
    /// one sync.
    fn stage_offsets(&self, group: &str, offsets: &[(String, u32, i64)]) -> Result<(), MetaError>;
    /// Makes every write made so far durable.
    fn sync(&self) -> Result<(), MetaError>;
    /// A group's committed offsets, by topic and partition.
    fn offsets(&self, group: &str) -> Result<Vec<(String, u32, i64)>, MetaError>;
    /// Records when a group was last active (a commit, or its last member
    /// leaving), not yet durably: it is once a later `sync` returns.
    fn stage_group_activity(&self, group: &str, at_ms: i64) -> Result<(), MetaError>;
    /// When each group was last active, for the groups with a record of it.
    fn group_activity(&self) -> Result<Vec<(String, i64)>, MetaError>;
    /// Removes a group's committed offsets and its activity, durably; a
    /// missing group is not an error.
    fn delete_group(&self, group: &str) -> Result<(), MetaError>;
    /// Every group with committed offsets, sorted.
    fn groups(&self) -> Result<Vec<String>, MetaError>;
    /// Records the principal a producer id was handed out to, durably:
    /// only it may take the id over. Forgetting the id forgets it.
    fn put_producer_owner(&self, producer_id: i64, owner: &str) -> Result<(), MetaError>;
    /// The principal of every producer id that has one recorded.
    fn producer_owners(&self) -> Result<Vec<(i64, String)>, MetaError>;
    /// Adds an ACL, durably; adding one already there changes nothing.
    fn put_acl(&self, acl: &AclBinding) -> Result<(), MetaError>;
    /// Removes an ACL, durably; whether it was there.
    fn delete_acl(&self, acl: &AclBinding) -> Result<bool, MetaError>;
    /// Every ACL.
    fn acls(&self) -> Result<Vec<AclBinding>, MetaError>;

    // Client quotas.

    /// Sets (or replaces) a quota, durably.
    fn put_quota(&self, target: &QuotaTarget, limits: &QuotaLimits) -> Result<(), MetaError>;
    /// Removes a quota, durably; a missing one is not an error.
    fn delete_quota(&self, target: &QuotaTarget) -> Result<(), MetaError>;
    /// Every quota stored.
    fn quotas(&self) -> Result<Vec<(QuotaTarget, QuotaLimits)>, MetaError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_validation_is_stored_by_name_and_absent_in_older_records() {
        let overrides = TopicOverrides {
            validate_records: Some(RecordValidation::Framing),
            ..TopicOverrides::default()
        };
        let json = serde_json::to_string(&overrides).unwrap();
        assert!(json.contains(r#""validate_records":"framing""#), "{json}");
        assert_eq!(
            serde_json::from_str::<TopicOverrides>(&json).unwrap(),
            overrides
        );

        let older = r#"{"retention_ms":5,"retention_bytes":null,"segment_bytes":null,"segment_ms":null,"max_message_bytes":null}"#;
        let read: TopicOverrides = serde_json::from_str(older).unwrap();
        assert_eq!(read.retention_ms, Some(5));
        assert_eq!(read.validate_records, None);

        let unknown = r#"{"validate_records":"some"}"#;
        assert!(serde_json::from_str::<TopicOverrides>(unknown).is_err());
    }
}
