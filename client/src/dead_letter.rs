//! The record a group member or an event router sends to a dead-letter
//! topic: the original, with headers that say why and where it came from.
//! Kept apart from `event/` so group consumers have it without the
//! `events` feature.

use brook_record::{Header, NewRecord};
use bytes::Bytes;

use crate::consumer::ConsumedRecord;

/// Why a record was dead-lettered.
pub(crate) const DEAD_LETTER_REASON: &str = "deadLetterReason";
/// The topic a dead-lettered record was read from.
pub(crate) const ORIGINAL_TOPIC: &str = "originalTopic";
/// The partition a dead-lettered record was read from, decimal.
pub(crate) const ORIGINAL_PARTITION: &str = "originalPartition";
/// The offset a dead-lettered record was read at, decimal.
pub(crate) const ORIGINAL_OFFSET: &str = "originalOffset";

/// The original record, with the dead-letter headers (replacing any it had
/// from an earlier dead-lettering).
pub(crate) fn dead_letter_record(consumed: &ConsumedRecord, reason: &str) -> NewRecord {
    const ADDED: [&str; 4] = [
        DEAD_LETTER_REASON,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
    ];
    let record = &consumed.record;
    let mut headers: Vec<Header> = record
        .headers
        .iter()
        .filter(|h| !ADDED.contains(&h.key.as_str()))
        .cloned()
        .collect();
    for (key, value) in ADDED.into_iter().zip([
        reason.to_owned(),
        consumed.topic.to_string(),
        consumed.partition.to_string(),
        record.offset.to_string(),
    ]) {
        headers.push(Header {
            key: key.to_owned(),
            value: Bytes::from(value),
        });
    }
    NewRecord {
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    }
}
