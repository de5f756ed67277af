//! The typed-event layer's error: envelope, codec, handler and client failures.

use crate::error::ClientError;

use super::codec::CodecError;

/// A handler's failure, boxed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why encoding, sending, decoding or handling an event failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The payload did not encode.
    #[error("event {event_type} v{version} does not encode")]
    Encode {
        /// The event's type.
        event_type: &'static str,
        /// The event's version.
        version: u32,
        /// The codec's error.
        #[source]
        source: CodecError,
    },

    /// The payload did not decode as the type its headers name.
    #[error("payload of event {event_type} v{version} does not decode")]
    Decode {
        /// The event's type.
        event_type: &'static str,
        /// The event's version.
        version: u32,
        /// The codec's error.
        #[source]
        source: CodecError,
    },

    /// The record has no value (a tombstone), so no payload.
    #[error("event {event_type} v{version} has no payload (null value)")]
    MissingPayload {
        /// The event's type.
        event_type: String,
        /// The event's version.
        version: u32,
    },

    /// The record lacks an envelope header.
    #[error("record has no {header} header")]
    MissingHeader {
        /// The header's key, e.g. `eventType`.
        header: &'static str,
    },

    /// An envelope header does not parse.
    #[error("header {header} is invalid: {reason}")]
    InvalidHeader {
        /// The header's key, e.g. `eventId`.
        header: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// The `contentType` header names another codec than the event type's.
    #[error("event {event_type} v{version} has content type {found}, expected {expected}")]
    ContentType {
        /// The event's type.
        event_type: &'static str,
        /// The event's version.
        version: u32,
        /// The codec's content type.
        expected: &'static str,
        /// The header's value.
        found: String,
    },

    /// No handler (or upcast) is registered for the event type.
    #[error("unknown event type {event_type}")]
    UnknownType {
        /// The `eventType` header's value.
        event_type: String,
    },

    /// The event type is known, but not in this version.
    #[error("unknown version {version} of event type {event_type}")]
    UnknownVersion {
        /// The `eventType` header's value.
        event_type: String,
        /// The `version` header's value.
        version: u32,
    },

    /// An upcast leads to a type no handler is registered for.
    #[error("no handler for event {event_type} v{version}, the target of an upcast")]
    NoHandler {
        /// The target's event type.
        event_type: &'static str,
        /// The target's version.
        version: u32,
    },

    /// A dead-letter policy applied, but the router has no dead-letter sink.
    #[error("no dead-letter sink configured for topic {topic}")]
    NoDeadLetterSink {
        /// The dead-letter topic of the policy.
        topic: String,
    },

    /// The handler returned an error.
    #[error("handler for {event_type} v{version} at {topic}/{partition}@{offset} failed")]
    Handler {
        /// The event's type.
        event_type: String,
        /// The event's version.
        version: u32,
        /// The record's topic.
        topic: String,
        /// The record's partition.
        partition: u32,
        /// The record's offset.
        offset: i64,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },

    /// A call to the broker (produce, fetch) failed.
    #[error(transparent)]
    Client(#[from] ClientError),

    /// The record at `topic`/`partition`@`offset` was not dealt with;
    /// `source` says why. Every error [`super::EventRouter::handle`]
    /// returns is this one; [`EventError::cause`] is the reason.
    #[error("event at {topic}/{partition}@{offset} not handled")]
    Record {
        /// The record's topic.
        topic: String,
        /// The record's partition.
        partition: u32,
        /// The record's offset.
        offset: i64,
        /// Why it was not handled (never another `Record`).
        #[source]
        source: Box<EventError>,
    },
}

impl EventError {
    /// Whether trying again may help: only when the broker call failed for
    /// a passing reason (see [`ClientError::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Client(e) => e.is_retryable(),
            Self::Record { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// The record the error is about, as `(topic, partition, offset)`:
    /// where to seek back to handle it again. `None` for errors about no
    /// one record (encoding an event, a consumer's own failure).
    pub fn record(&self) -> Option<(&str, u32, i64)> {
        match self {
            Self::Record {
                topic,
                partition,
                offset,
                ..
            }
            | Self::Handler {
                topic,
                partition,
                offset,
                ..
            } => Some((topic, *partition, *offset)),
            _ => None,
        }
    }

    /// Why the record was not handled: the source of a `Record` error,
    /// otherwise the error itself.
    pub fn cause(&self) -> &EventError {
        match self {
            Self::Record { source, .. } => source,
            other => other,
        }
    }
}
