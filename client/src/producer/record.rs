//! What a caller hands the producer, and what it gets back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use brook_record::{Header, NewRecord};
use bytes::Bytes;

/// A record to send: [`ProducerRecord::new`] and the builder methods, or a
/// struct literal.
///
/// ```
/// use brook_client::ProducerRecord;
///
/// let record = ProducerRecord::new("orders", r#"{"id": 7}"#)
///     .key("customer-42")
///     .header("content-type", "application/json");
/// assert_eq!(record.partition, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic to append to.
    pub topic: String,
    /// `None`: chosen by the key's hash, or sticky for keyless records (see
    /// [`crate::fnv1a32`]).
    pub partition: Option<u32>,
    /// Opaque; records with equal keys go to the same partition.
    pub key: Option<Bytes>,
    /// `None` is a tombstone (distinct from an empty value).
    pub value: Option<Bytes>,
    /// A `traceparent` header is added when absent and a trace is active.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` means when it is accepted.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record with `value`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// With `key` (which then picks the partition, unless one is set).
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// With one more header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Sent to `partition`, whatever its key.
    #[must_use]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// With this timestamp (milliseconds since the Unix epoch).
    #[must_use]
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds the current trace's `traceparent` unless the record has one.
    #[cfg(feature = "otel")]
    pub(crate) fn add_traceparent(&mut self) {
        use crate::trace::{TRACEPARENT, traceparent_header};
        if self.headers.iter().any(|h| h.key == TRACEPARENT) {
            return;
        }
        if let Some(header) = traceparent_header() {
            self.headers.push(header);
        }
    }

    /// The record to encode; `now_ms` stamps it when it has no timestamp.
    pub(crate) fn into_new_record(self, now_ms: impl FnOnce() -> i64) -> NewRecord {
        NewRecord {
            timestamp: self.timestamp.unwrap_or_else(now_ms),
            key: self.key,
            value: self.value,
            headers: self.headers,
        }
    }
}

/// Where a record was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The record's topic.
    pub topic: String,
    /// The partition it was appended to.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's timestamp, as stored.
    pub timestamp: i64,
}

/// Upper bound of a record's encoded size beyond its key and value: the
/// length, attributes, timestamp and offset deltas, key and value lengths
/// and header count, each a varint of at most 10 bytes.
const RECORD_OVERHEAD_BYTES_MAX: usize = 7 * 10;
/// The same for one header: its key and value lengths.
const HEADER_OVERHEAD_BYTES_MAX: usize = 2 * 10;

/// The bytes a record is charged against `buffer_memory` (and counted
/// toward a batch's size): an upper bound of its encoded size.
pub(crate) fn record_size(record: &impl RecordParts) -> usize {
    let (key, value, headers) = record.parts();
    RECORD_OVERHEAD_BYTES_MAX
        + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len)
        + headers
            .iter()
            .map(|h| HEADER_OVERHEAD_BYTES_MAX + h.key.len() + h.value.len())
            .sum::<usize>()
}

/// The parts of a record that take space.
pub(crate) trait RecordParts {
    fn parts(&self) -> (Option<&[u8]>, Option<&[u8]>, &[Header]);
}

impl RecordParts for ProducerRecord {
    fn parts(&self) -> (Option<&[u8]>, Option<&[u8]>, &[Header]) {
        (self.key.as_deref(), self.value.as_deref(), &self.headers)
    }
}

impl RecordParts for NewRecord {
    fn parts(&self) -> (Option<&[u8]>, Option<&[u8]>, &[Header]) {
        (self.key.as_deref(), self.value.as_deref(), &self.headers)
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The system clock's milliseconds at an `Instant`, from one reading of it
/// per second: a producer stamps every record, and in a virtual machine a
/// clock read can cost as much as encoding a small record. A step of the
/// system clock shows within a second; between readings time moves with
/// the monotonic clock.
#[derive(Debug)]
pub(crate) struct WallClock {
    /// An instant and the system clock's milliseconds read at it.
    reading: Mutex<(Instant, i64)>,
}

/// How long a reading of the system clock serves.
const WALL_CLOCK_READ_EVERY: Duration = Duration::from_secs(1);

impl WallClock {
    pub(crate) fn new() -> Self {
        Self {
            reading: Mutex::new((Instant::now(), now_ms())),
        }
    }

    /// Milliseconds since the Unix epoch at `at`, an instant of now.
    pub(crate) fn ms_at(&self, at: Instant) -> i64 {
        let mut reading = self.reading.lock();
        match at.checked_duration_since(reading.0) {
            Some(since) if since < WALL_CLOCK_READ_EVERY => {
                // Under a second: the cast cannot truncate.
                reading.1.saturating_add(since.as_millis() as i64)
            }
            _ => {
                *reading = (at, now_ms());
                reading.1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_fields() {
        let record = ProducerRecord::new("t", "v")
            .key("k")
            .header("h", "1")
            .partition(3)
            .timestamp(9);
        assert_eq!(record.topic, "t");
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(record.partition, Some(3));
        assert_eq!(record.headers.len(), 1);
        let new = record.into_new_record(|| unreachable!("the record has a timestamp"));
        assert_eq!(new.timestamp, 9);
    }

    #[test]
    fn the_wall_clock_moves_with_the_instants_and_reads_the_system_clock_again() {
        let clock = WallClock::new();
        let (start, start_ms) = *clock.reading.lock();
        assert_eq!(
            clock.ms_at(start + Duration::from_millis(250)),
            start_ms + 250
        );
        let later = start + WALL_CLOCK_READ_EVERY + Duration::from_millis(1);
        let read_again = clock.ms_at(later);
        assert!((read_again - now_ms()).abs() < 100, "{read_again}");
        assert_eq!(clock.reading.lock().0, later);
        let system = now_ms();
        assert!((clock.ms_at(Instant::now()) - system).abs() < 100);
    }

    #[test]
    fn size_bounds_the_encoding() {
        let record = ProducerRecord::new("t", vec![7u8; 300])
            .key("key")
            .header("h", "v");
        let size = record_size(&record);
        let batch = brook_record::encode_batch(
            &[record.into_new_record(now_ms)],
            brook_record::BatchOptions::default(),
        )
        .unwrap();
        assert!(
            size >= batch.len() - brook_record::HEADER_LEN,
            "{size} < {}",
            batch.len()
        );
    }
}
