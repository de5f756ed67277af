//! A topic at run time: its stored record, its partitions, and the rules
//! for names and settings.

use std::sync::Arc;

use brook_record::RecordValidation;
use parking_lot::RwLock;

use crate::config::{Limits, TopicSettings};
use crate::error::{Invalid, NotFound};
use crate::meta::{TopicOverrides, TopicRecord};
use crate::partition::Partition;
use brook_storage::LogConfig;
use brook_storage::SEGMENT_BYTES_MAX;

/// Longest topic name.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Smallest segment size a topic may set (a segment holds at least a batch header).
pub const SEGMENT_BYTES_MIN: u64 = 1024;

#[derive(Debug)]
pub struct Topic {
    /// The stored record: partition count and overrides. Changed by admin calls.
    record: RwLock<TopicRecord>,
    /// Partitions in order; only grows.
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub fn new(record: TopicRecord, partitions: Vec<Arc<Partition>>) -> Self {
        Self {
            record: RwLock::new(record),
            partitions: RwLock::new(partitions),
        }
    }

    pub fn record(&self) -> TopicRecord {
        self.record.read().clone()
    }

    /// What a produced batch is checked against: the batch size limit and
    /// how much of its records to check, the topic's own or `defaults`.
    /// Read per produced batch, so without copying the record.
    pub fn produce_checks(&self, defaults: &TopicSettings) -> (u32, RecordValidation) {
        let record = self.record.read();
        (
            record
                .overrides
                .max_message_bytes
                .unwrap_or(defaults.max_message_bytes),
            record
                .overrides
                .validate_records
                .unwrap_or(defaults.validate_records),
        )
    }

    pub fn set_record(&self, record: TopicRecord) {
        *self.record.write() = record;
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.read().len() as u32
    }

    pub fn add_partitions(&self, added: Vec<Arc<Partition>>) {
        self.partitions.write().extend(added);
    }

    pub fn partition(&self, name: &str, index: u32) -> Result<Arc<Partition>, NotFound> {
        let partitions = self.partitions.read();
        partitions
            .get(index as usize)
            .cloned()
            .ok_or_else(|| NotFound::Partition {
                topic: name.to_owned(),
                partition: index,
                partitions: partitions.len() as u32,
            })
    }
}

/// Checks a topic name: `[A-Za-z0-9._-]{1,249}`, and not `.` or `..`
/// (they would name directories that are not the topic's).
pub fn validate_topic_name(name: &str) -> Result<(), Invalid> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > TOPIC_NAME_LEN_MAX {
        Some(format!(
            "is {} characters long, over the limit of {TOPIC_NAME_LEN_MAX}",
            name.len()
        ))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(format!(
            "`{name}` contains {c:?}; allowed are [A-Za-z0-9._-]"
        ))
    } else if name == "." || name == ".." {
        Some(format!("`{name}` is reserved"))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Invalid::new("topic name", reason)),
        None => Ok(()),
    }
}

/// The settings a topic runs with: its overrides over the broker defaults,
/// checked against the limits.
pub fn resolve_settings(
    defaults: &TopicSettings,
    overrides: &TopicOverrides,
    limits: &Limits,
) -> Result<TopicSettings, Invalid> {
    let settings = TopicSettings {
        retention_ms: overrides.retention_ms.unwrap_or(defaults.retention_ms),
        retention_bytes: overrides
            .retention_bytes
            .unwrap_or(defaults.retention_bytes),
        segment_bytes: overrides.segment_bytes.unwrap_or(defaults.segment_bytes),
        segment_ms: overrides.segment_ms.unwrap_or(defaults.segment_ms),
        max_message_bytes: overrides
            .max_message_bytes
            .unwrap_or(defaults.max_message_bytes),
        validate_records: overrides
            .validate_records
            .unwrap_or(defaults.validate_records),
    };
    if settings.retention_ms < -1 {
        return Err(Invalid::new(
            "retention_ms",
            format!(
                "must be -1 (keep forever) or >= 0, got {}",
                settings.retention_ms
            ),
        ));
    }
    if settings.retention_bytes < -1 {
        return Err(Invalid::new(
            "retention_bytes",
            format!(
                "must be -1 (keep everything) or >= 0, got {}",
                settings.retention_bytes
            ),
        ));
    }
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&settings.segment_bytes) {
        return Err(Invalid::new(
            "segment_bytes",
            format!(
                "must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}, got {}",
                settings.segment_bytes
            ),
        ));
    }
    if settings.segment_ms < 1 {
        return Err(Invalid::new(
            "segment_ms",
            format!("must be at least 1, got {}", settings.segment_ms),
        ));
    }
    let min_message = brook_record::HEADER_LEN as u32;
    if !(min_message..=limits.message_bytes_max).contains(&settings.max_message_bytes) {
        return Err(Invalid::new(
            "max_message_bytes",
            format!(
                "must be between {min_message} and the broker's max_message_bytes ({}), got {}",
                limits.message_bytes_max, settings.max_message_bytes
            ),
        ));
    }
    Ok(settings)
}

/// The log settings of a topic's partitions.
pub fn log_config(settings: &TopicSettings, index_interval_bytes: u64) -> LogConfig {
    let mut config = LogConfig::default();
    config.segment_bytes = settings.segment_bytes;
    config.segment_ms = settings.segment_ms;
    config.retention_ms = settings.retention_ms;
    config.retention_bytes = settings.retention_bytes;
    config.index_interval_bytes = index_interval_bytes;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "A-b_c.9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
