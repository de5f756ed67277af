//! What becomes of a record the router sees: the policies for records
//! without a handler, the outcomes and their counts, and the dead-letter
//! record.

use super::error::EventError;

/// What to do with a record the router cannot hand to a handler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Drop it (counted in [`RouterStats::skipped`]) and go on.
    Skip,
    /// Return the error from [`super::EventRouter::handle`]; the record is not
    /// consumed. The default: nothing is lost unless asked for.
    #[default]
    Fail,
    /// Send the original record (key, value, headers) to `topic`, with
    /// [`super::headers::DEAD_LETTER_REASON`] and the original topic, partition and
    /// offset added, and go on. Needs [`super::EventRouter::dead_letter_sender`].
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
}

/// Why a record had no handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unhandled {
    /// No handler for its `eventType` (or the header is missing).
    UnknownType,
    /// Handlers for its type, none for its `version`.
    UnknownVersion,
    /// Its envelope headers or its payload do not decode.
    Undecodable,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A handler took it and succeeded.
    Handled,
    /// It was skipped by policy.
    Skipped(Unhandled),
    /// It was sent to the dead-letter topic by policy.
    DeadLettered(Unhandled),
}

/// Counts of outcomes since the router was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterStats {
    /// Records handlers succeeded on.
    pub handled: u64,
    /// Records skipped by policy.
    pub skipped: u64,
    /// Records sent to a dead-letter topic.
    pub dead_lettered: u64,
    /// Records that ended in an error (a handler's, a `Fail` policy's, a
    /// failed dead-letter send).
    pub failed: u64,
}

/// The error and its causes, on one line.
pub(super) fn reason(error: &EventError) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_every_cause() {
        let error = EventError::Decode {
            event_type: "e",
            version: 1,
            source: "bad byte at 3".into(),
        };
        assert_eq!(
            reason(&error),
            "payload of event e v1 does not decode: bad byte at 3"
        );
    }
}
