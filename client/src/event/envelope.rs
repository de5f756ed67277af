//! The envelope: event type, id, time, version and content type as record
//! headers, the payload as the record's value.
//!
//! Invariant: routing needs headers only; a payload is decoded once its
//! type and version are known to have a handler.

use std::sync::Arc;

use brook_record::{Header, NewRecord, Record};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::Event;
use super::codec::Codec;
use super::error::EventError;
use crate::consumer::ConsumedRecord;

/// Header keys of the envelope and of dead-lettered records.
pub mod headers {
    /// The event type name, e.g. `order.placed`.
    pub const EVENT_TYPE: &str = "eventType";
    /// A UUID v4, hyphenated.
    pub const EVENT_ID: &str = "eventId";
    /// When the event happened, RFC 3339 in UTC (`2024-05-01T12:00:00.000Z`).
    pub const TIMESTAMP: &str = "timestamp";
    /// The payload's schema version, a decimal integer.
    pub const VERSION: &str = "version";
    /// The payload's MIME type: `application/json` or `application/x-protobuf`.
    pub const CONTENT_TYPE: &str = "contentType";
    /// Why a record was dead-lettered.
    pub const DEAD_LETTER_REASON: &str = crate::dead_letter::DEAD_LETTER_REASON;
    /// The topic a dead-lettered record was read from.
    pub const ORIGINAL_TOPIC: &str = crate::dead_letter::ORIGINAL_TOPIC;
    /// The partition a dead-lettered record was read from, decimal.
    pub const ORIGINAL_PARTITION: &str = crate::dead_letter::ORIGINAL_PARTITION;
    /// The offset a dead-lettered record was read at, decimal.
    pub const ORIGINAL_OFFSET: &str = crate::dead_letter::ORIGINAL_OFFSET;
}

/// A decoded event with its envelope and where it was read.
///
/// After an upcast, `event_type`, `version` and `payload` are the target's;
/// the headers still hold what was on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<E> {
    /// The event type name.
    pub event_type: String,
    /// The event's id.
    pub event_id: Uuid,
    /// When the event happened.
    pub timestamp: DateTime<Utc>,
    /// The payload's schema version.
    pub version: u32,
    /// The event itself.
    pub payload: E,
    /// The topic the record was read from.
    pub topic: Arc<str>,
    /// The partition the record was read from.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// The record's key.
    pub key: Option<Bytes>,
    /// All the record's headers, the envelope's included.
    pub headers: Vec<Header>,
}

impl<E> Envelope<E> {
    /// The same envelope around another payload.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Envelope<F> {
        Envelope {
            event_type: self.event_type,
            event_id: self.event_id,
            timestamp: self.timestamp,
            version: self.version,
            payload: f(self.payload),
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            headers: self.headers,
        }
    }
}

/// The envelope headers of a record, parsed: enough to route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// The `eventType` header.
    pub event_type: String,
    /// The `eventId` header.
    pub event_id: Uuid,
    /// The `timestamp` header.
    pub timestamp: DateTime<Utc>,
    /// The `version` header.
    pub version: u32,
    /// The `contentType` header, if present.
    pub content_type: Option<String>,
}

impl EventMeta {
    /// Parses the envelope headers.
    pub fn from_headers(headers: &[Header]) -> Result<Self, EventError> {
        let event_type = event_type(headers)?.to_owned();
        let version = version(headers)?;
        let event_id = required(headers, headers::EVENT_ID)?;
        let event_id = Uuid::try_parse(event_id).map_err(|e| EventError::InvalidHeader {
            header: headers::EVENT_ID,
            reason: e.to_string(),
        })?;
        let timestamp = required(headers, headers::TIMESTAMP)?;
        let timestamp = DateTime::parse_from_rfc3339(timestamp)
            .map_err(|e| EventError::InvalidHeader {
                header: headers::TIMESTAMP,
                reason: format!("not RFC 3339: {e}"),
            })?
            .with_timezone(&Utc);
        let content_type = match find(headers, headers::CONTENT_TYPE) {
            None => None,
            Some(value) => Some(utf8(value, headers::CONTENT_TYPE)?.to_owned()),
        };
        Ok(Self {
            event_type,
            event_id,
            timestamp,
            version,
            content_type,
        })
    }
}

/// A record carrying `event` with a new id (UUID v4) and the current time;
/// the record's timestamp is the event's. Carries the current trace context
/// in a `traceparent` header when there is one.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
/// # brook_client::event!(OrderPlaced, "order.placed", version = 1, codec = json);
/// let record = brook_client::event::event_record(None, &OrderPlaced { id: 7 })?;
/// assert_eq!(record.value.as_deref(), Some(&br#"{"id":7}"#[..]));
/// assert!(record.headers.iter().any(|h| h.key == "eventType" && h.value == "order.placed"));
/// # Ok::<(), brook_client::event::EventError>(())
/// ```
pub fn event_record<E: Event>(key: Option<Bytes>, event: &E) -> Result<NewRecord, EventError> {
    event_record_with(key, event, Uuid::new_v4(), Utc::now())
}

/// [`event_record`] with a given id and time (e.g. an id fixed for retries).
pub fn event_record_with<E: Event>(
    key: Option<Bytes>,
    event: &E,
    event_id: Uuid,
    timestamp: DateTime<Utc>,
) -> Result<NewRecord, EventError> {
    let value = event.encode()?;
    let text = |key: &str, value: String| Header {
        key: key.to_owned(),
        value: Bytes::from(value),
    };
    let mut headers = vec![
        text(headers::EVENT_TYPE, E::EVENT_TYPE.to_owned()),
        text(headers::EVENT_ID, event_id.hyphenated().to_string()),
        text(
            headers::TIMESTAMP,
            timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
        text(headers::VERSION, E::VERSION.to_string()),
        text(
            headers::CONTENT_TYPE,
            <E::Codec as Codec<E>>::CONTENT_TYPE.to_owned(),
        ),
    ];
    headers.extend(crate::trace::traceparent_header());
    Ok(NewRecord {
        timestamp: timestamp.timestamp_millis(),
        key,
        value: Some(value),
        headers,
    })
}

/// Decodes a consumed record as an `E`, checking its type and version
/// headers: for a topic that carries one event type (see
/// [`super::EventRouter`] for several).
pub fn decode_envelope<E: Event>(consumed: &ConsumedRecord) -> Result<Envelope<E>, EventError> {
    let meta = EventMeta::from_headers(&consumed.record.headers)?;
    if meta.event_type != E::EVENT_TYPE {
        return Err(EventError::UnknownType {
            event_type: meta.event_type,
        });
    }
    if meta.version != E::VERSION {
        return Err(EventError::UnknownVersion {
            event_type: meta.event_type,
            version: meta.version,
        });
    }
    decode_payload(meta, consumed)
}

/// Decodes the payload of a record whose headers say it is an `E`.
pub(super) fn decode_payload<E: Event>(
    meta: EventMeta,
    consumed: &ConsumedRecord,
) -> Result<Envelope<E>, EventError> {
    let record = &consumed.record;
    let expected = <E::Codec as Codec<E>>::CONTENT_TYPE;
    if let Some(found) = meta
        .content_type
        .as_deref()
        .filter(|found| *found != expected)
    {
        return Err(EventError::ContentType {
            event_type: E::EVENT_TYPE,
            version: E::VERSION,
            expected,
            found: found.to_owned(),
        });
    }
    let Some(value) = &record.value else {
        return Err(EventError::MissingPayload {
            event_type: meta.event_type,
            version: meta.version,
        });
    };
    let payload = E::decode(value)?;
    Ok(envelope(meta, consumed, payload))
}

fn envelope<E>(meta: EventMeta, consumed: &ConsumedRecord, payload: E) -> Envelope<E> {
    let record: &Record = &consumed.record;
    Envelope {
        event_type: meta.event_type,
        event_id: meta.event_id,
        timestamp: meta.timestamp,
        version: meta.version,
        payload,
        topic: consumed.topic.clone(),
        partition: consumed.partition,
        offset: record.offset,
        key: record.key.clone(),
        headers: record.headers.clone(),
    }
}

/// The `eventType` header.
pub(super) fn event_type(headers: &[Header]) -> Result<&str, EventError> {
    required(headers, headers::EVENT_TYPE)
}

/// The `version` header.
pub(super) fn version(headers: &[Header]) -> Result<u32, EventError> {
    let value = required(headers, headers::VERSION)?;
    value.parse().map_err(|e| EventError::InvalidHeader {
        header: headers::VERSION,
        reason: format!("{value:?} is not a version number: {e}"),
    })
}

/// The last header with this key (a later one overrides an earlier one).
pub(super) fn find<'a>(headers: &'a [Header], key: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .rev()
        .find(|h| h.key == key)
        .map(|h| &h.value)
}

fn required<'a>(headers: &'a [Header], key: &'static str) -> Result<&'a str, EventError> {
    let value = find(headers, key).ok_or(EventError::MissingHeader { header: key })?;
    utf8(value, key)
}

fn utf8<'a>(value: &'a Bytes, key: &'static str) -> Result<&'a str, EventError> {
    std::str::from_utf8(value).map_err(|e| EventError::InvalidHeader {
        header: key,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Ping {
        n: u32,
    }
    crate::event!(Ping, "ping", version = 3, codec = json);

    fn consumed(record: NewRecord) -> ConsumedRecord {
        ConsumedRecord {
            topic: Arc::from("t"),
            partition: 1,
            record: Record {
                offset: 5,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers,
            },
        }
    }

    #[test]
    fn headers_are_written_as_specified_and_read_back() {
        let id = Uuid::from_u128(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c);
        let at = Utc
            .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
            .single()
            .expect("a valid time");
        let record = event_record_with(None, &Ping { n: 1 }, id, at).expect("encodes");
        let text: Vec<(&str, &str)> = record
            .headers
            .iter()
            .map(|h| {
                (
                    h.key.as_str(),
                    std::str::from_utf8(&h.value).expect("utf-8"),
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                ("eventType", "ping"),
                ("eventId", "0af76519-16cd-43dd-8448-eb211c80319c"),
                ("timestamp", "2024-05-01T12:00:00.000Z"),
                ("version", "3"),
                ("contentType", "application/json"),
            ]
        );
        assert_eq!(record.timestamp, at.timestamp_millis());
        let envelope = decode_envelope::<Ping>(&consumed(record)).expect("decodes");
        assert_eq!(envelope.payload, Ping { n: 1 });
        assert_eq!(
            (envelope.event_id, envelope.timestamp, envelope.version),
            (id, at, 3)
        );
        assert_eq!(
            (&*envelope.topic, envelope.partition, envelope.offset),
            ("t", 1, 5)
        );
    }

    #[test]
    fn an_offset_timestamp_is_read_as_utc() {
        let mut record = event_record(None, &Ping { n: 1 }).expect("encodes");
        record.headers.push(Header {
            key: headers::TIMESTAMP.to_owned(),
            value: Bytes::from("2024-05-01T14:00:00+02:00"),
        });
        let meta = EventMeta::from_headers(&record.headers).expect("parses");
        assert_eq!(meta.timestamp.to_rfc3339(), "2024-05-01T12:00:00+00:00");
    }
}
