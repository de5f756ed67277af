//! Consuming several event types of one topic: a table from (event type,
//! version) to a decoder and a handler, upcasts from older versions, and an
//! explicit policy for what has no handler or does not decode.
//!
//! Invariants: a record is routed on its headers before its payload is
//! touched; every record ends as exactly one [`Outcome`] or one error, which
//! names the record ([`EventError::Record`]); nothing a record contains can
//! make the router panic. [`EventRouter::run_consumer`] never leaves its
//! consumer past a record that was not dealt with.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use tracing::Instrument;

use crate::consumer::{Consumer, SeekTo};

use super::Event;
use super::envelope::{self, Envelope, EventMeta, decode_payload};
use super::error::{EventError, HandlerError};
use super::outcome::{Outcome, RouterStats, Unhandled, UnknownPolicy, reason};
use super::send::{DynSender, EventSender};
use crate::consumer::ConsumedRecord;
use crate::dead_letter::dead_letter_record;
use crate::error::ClientError;

/// What a handler may return: nothing, or a `Result` whose error converts
/// into a boxed error (e.g. `std::io::Error`, `anyhow::Error`, `String`).
pub trait HandlerOutcome: Send {
    /// As a `Result`.
    fn into_result(self) -> Result<(), HandlerError>;
}

impl HandlerOutcome for () {
    fn into_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError> + Send> HandlerOutcome for Result<(), E> {
    fn into_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), EventError>> + Send + 'a>>;

/// The typed entry point of an event type: its handler, or an upcast.
type Sink<E> = Box<dyn for<'a> Fn(Envelope<E>, &'a Sinks) -> HandlerFuture<'a> + Send + Sync>;

/// Decodes a record known to be of one type and version, and calls its sink.
type Route = Box<
    dyn for<'a> Fn(
            EventMeta,
            &'a ConsumedRecord,
            &'a Sinks,
        ) -> Result<HandlerFuture<'a>, EventError>
        + Send
        + Sync,
>;

/// The sink of each event type, by `TypeId`; each value is a `Sink<E>`.
#[derive(Default)]
struct Sinks(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Sinks {
    fn insert<E: Event>(&mut self, sink: Sink<E>) {
        self.0.insert(TypeId::of::<E>(), Box::new(sink));
    }

    /// Looked up at call time, so an upcast may be registered before the
    /// handler of its target, and upcasts chain (v1 → v2 → v3).
    fn call<E: Event>(&self, envelope: Envelope<E>) -> HandlerFuture<'_> {
        match self
            .0
            .get(&TypeId::of::<E>())
            .and_then(|sink| sink.downcast_ref::<Sink<E>>())
        {
            Some(sink) => sink(envelope, self),
            None => Box::pin(std::future::ready(Err(EventError::NoHandler {
                event_type: E::EVENT_TYPE,
                version: E::VERSION,
            }))),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands each record of a topic to the handler of its event type and
/// version, decoding the payload with the type's codec; see the module docs
/// of [`mod@crate::event`] for a full example.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderCancelled { id: u64 }
/// use brook_client::event::{EventRouter, UnknownPolicy};
/// brook_client::event!(OrderPlaced, "order.placed", version = 1, codec = json);
/// brook_client::event!(OrderCancelled, "order.cancelled", version = 1, codec = json);
///
/// let router = EventRouter::new()
///     .on::<OrderPlaced, _, _>(|env| async move { println!("placed {}", env.payload.id) })
///     .on::<OrderCancelled, _, _>(|env| async move { println!("cancelled {}", env.payload.id) })
///     .unknown_type(UnknownPolicy::Skip);
/// ```
#[must_use = "a router does nothing until records are handed to it"]
pub struct EventRouter {
    /// By event type, then version.
    routes: HashMap<&'static str, HashMap<u32, Route>>,
    sinks: Sinks,
    unknown_type: UnknownPolicy,
    unknown_version: UnknownPolicy,
    undecodable: UnknownPolicy,
    dead_letters: Option<Box<dyn DynSender>>,
    counters: Counters,
}

impl Default for EventRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<(&str, u32)> = self
            .routes
            .iter()
            .flat_map(|(t, versions)| versions.keys().map(move |v| (*t, *v)))
            .collect();
        routes.sort_unstable();
        f.debug_struct("EventRouter")
            .field("routes", &routes)
            .field("unknown_type", &self.unknown_type)
            .field("unknown_version", &self.unknown_version)
            .field("undecodable", &self.undecodable)
            .field("dead_letters", &self.dead_letters.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EventRouter {
    /// A router with no handlers, failing on anything unhandled.
    pub fn new() -> Self {
        Self {
            routes: HashMap::new(),
            sinks: Sinks::default(),
            unknown_type: UnknownPolicy::Fail,
            unknown_version: UnknownPolicy::Fail,
            undecodable: UnknownPolicy::Fail,
            dead_letters: None,
            counters: Counters::default(),
        }
    }

    /// Handles events of type `E` (its `EVENT_TYPE` and `VERSION`) with
    /// `handler`, which runs inside [`crate::trace::record_span`] so it joins
    /// the producer's trace. Replaces an earlier handler or upcast of `E`.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: Event,
        F: Fn(Envelope<E>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutcome,
    {
        self.sinks.insert::<E>(Box::new(move |envelope, _sinks| {
            let event_type = envelope.event_type.clone();
            let version = envelope.version;
            let (topic, partition, offset) = (
                envelope.topic.to_string(),
                envelope.partition,
                envelope.offset,
            );
            let handled = handler(envelope);
            Box::pin(async move {
                handled
                    .await
                    .into_result()
                    .map_err(|source| EventError::Handler {
                        event_type,
                        version,
                        topic,
                        partition,
                        offset,
                        source,
                    })
            })
        }));
        self.add_route::<E>()
    }

    /// Accepts events of type `Old` by converting them to `New` and handing
    /// them to `New`'s handler (or its upcast: upcasts chain). Typically
    /// `Old` is version N-1 of the same event type.
    pub fn upcast<Old, New, F>(mut self, convert: F) -> Self
    where
        Old: Event,
        New: Event,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        self.sinks.insert::<Old>(Box::new(move |envelope, sinks| {
            let mut envelope = envelope.map(&convert);
            New::EVENT_TYPE.clone_into(&mut envelope.event_type);
            envelope.version = New::VERSION;
            sinks.call::<New>(envelope)
        }));
        self.add_route::<Old>()
    }

    /// What to do with a record whose event type has no handler.
    pub fn unknown_type(mut self, policy: UnknownPolicy) -> Self {
        self.unknown_type = policy;
        self
    }

    /// What to do with a record of a known type in a version without handler.
    pub fn unknown_version(mut self, policy: UnknownPolicy) -> Self {
        self.unknown_version = policy;
        self
    }

    /// What to do with a record whose envelope or payload does not decode.
    pub fn undecodable(mut self, policy: UnknownPolicy) -> Self {
        self.undecodable = policy;
        self
    }

    /// One policy for all three cases.
    pub fn unhandled(self, policy: UnknownPolicy) -> Self {
        self.unknown_type(policy.clone())
            .unknown_version(policy.clone())
            .undecodable(policy)
    }

    /// Where [`UnknownPolicy::DeadLetter`] sends records: a
    /// [`crate::Client`] (partition 0), or a producer (partitioned by the
    /// original key).
    pub fn dead_letter_sender<S: EventSender + 'static>(mut self, sender: S) -> Self {
        self.dead_letters = Some(Box::new(sender));
        self
    }

    /// Outcome counts so far.
    pub fn stats(&self) -> RouterStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouterStats {
            handled: load(&self.counters.handled),
            skipped: load(&self.counters.skipped),
            dead_lettered: load(&self.counters.dead_lettered),
            failed: load(&self.counters.failed),
        }
    }

    /// Routes one record: to its handler, or by policy. An `Err` means the
    /// record was not dealt with (a handler failed, a `Fail` policy applied,
    /// or the dead-letter send failed) and should be retried or the
    /// consumer stopped; it is an [`EventError::Record`] naming the record,
    /// its [`EventError::cause`] the reason.
    pub async fn handle(&self, consumed: &ConsumedRecord) -> Result<Outcome, EventError> {
        self.route(consumed)
            .await
            .map_err(|source| EventError::Record {
                topic: consumed.topic.to_string(),
                partition: consumed.partition,
                offset: consumed.record.offset,
                source: Box::new(source),
            })
    }

    async fn route(&self, consumed: &ConsumedRecord) -> Result<Outcome, EventError> {
        let handled = match self.dispatch(consumed) {
            Ok(handled) => handled,
            Err((why, error)) => return self.unhandled_record(why, error, consumed).await,
        };
        let span = crate::trace::record_span(&consumed.record, "handle");
        match handled.instrument(span).await {
            Ok(()) => {
                Counters::bump(&self.counters.handled);
                Ok(Outcome::Handled)
            }
            Err(e) => {
                Counters::bump(&self.counters.failed);
                Err(e)
            }
        }
    }

    /// Handles the records `consumer` hands out, in turn, until one ends in
    /// an error, which is returned (the stream of a consumer never ends by
    /// itself).
    ///
    /// Before returning a record's error, the consumer is sought back to
    /// that record, so that reading on (another `run_consumer`) starts with
    /// it again and [`Consumer::position`] (what to commit) does not pass
    /// it. A failure of the consumer itself comes back as
    /// [`EventError::Client`].
    pub async fn run_consumer(&self, consumer: &mut Consumer) -> Result<(), EventError> {
        while let Some(consumed) = consumer.next().await {
            let consumed = consumed?;
            let Err(error) = self.handle(&consumed).await else {
                continue;
            };
            let (topic, partition, offset) =
                (&*consumed.topic, consumed.partition, consumed.record.offset);
            if let Err(not_rewound) = consumer
                .seek(topic, partition, SeekTo::Offset(offset))
                .await
            {
                // A seek to an offset makes no call: the partition was
                // unassigned, and is no longer this consumer's to read.
                tracing::debug!(topic, partition, offset, error = %not_rewound, "failed record not rewound");
            }
            return Err(error);
        }
        Ok(())
    }

    /// Handles every record of `records` in turn until the stream ends or a
    /// record ends in an error, which is returned.
    ///
    /// This does not rewind: the record that failed was already handed
    /// out, so a [`Consumer`] behind `records` has moved past it, and its
    /// position skips it. Use [`Self::run_consumer`] on a consumer, or seek
    /// back to the error's [`EventError::record`] yourself.
    pub async fn run<S>(&self, mut records: S) -> Result<(), EventError>
    where
        S: Stream<Item = Result<ConsumedRecord, ClientError>> + Unpin,
    {
        while let Some(consumed) = records.next().await {
            self.handle(&consumed?).await?;
        }
        Ok(())
    }

    fn add_route<E: Event>(mut self) -> Self {
        let route: Route = Box::new(|meta, consumed, sinks| {
            let envelope = decode_payload::<E>(meta, consumed)?;
            Ok(sinks.call(envelope))
        });
        self.routes
            .entry(E::EVENT_TYPE)
            .or_default()
            .insert(E::VERSION, route);
        self
    }

    /// The handler's future for the record, or why there is none.
    fn dispatch<'a>(
        &'a self,
        consumed: &'a ConsumedRecord,
    ) -> Result<HandlerFuture<'a>, (Unhandled, EventError)> {
        let headers = &consumed.record.headers;
        let event_type = envelope::event_type(headers).map_err(|e| (Unhandled::UnknownType, e))?;
        let Some(versions) = self.routes.get(event_type) else {
            return Err((
                Unhandled::UnknownType,
                EventError::UnknownType {
                    event_type: event_type.to_owned(),
                },
            ));
        };
        let version = envelope::version(headers).map_err(|e| (Unhandled::Undecodable, e))?;
        let Some(route) = versions.get(&version) else {
            return Err((
                Unhandled::UnknownVersion,
                EventError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    version,
                },
            ));
        };
        let meta = EventMeta::from_headers(headers).map_err(|e| (Unhandled::Undecodable, e))?;
        route(meta, consumed, &self.sinks).map_err(|e| (Unhandled::Undecodable, e))
    }

    async fn unhandled_record(
        &self,
        why: Unhandled,
        error: EventError,
        consumed: &ConsumedRecord,
    ) -> Result<Outcome, EventError> {
        let policy = match why {
            Unhandled::UnknownType => &self.unknown_type,
            Unhandled::UnknownVersion => &self.unknown_version,
            Unhandled::Undecodable => &self.undecodable,
        };
        let (topic, partition, offset) =
            (&*consumed.topic, consumed.partition, consumed.record.offset);
        match policy {
            UnknownPolicy::Skip => {
                tracing::debug!(topic, partition, offset, reason = %reason(&error), "event skipped");
                Counters::bump(&self.counters.skipped);
                Ok(Outcome::Skipped(why))
            }
            UnknownPolicy::Fail => {
                Counters::bump(&self.counters.failed);
                Err(error)
            }
            UnknownPolicy::DeadLetter {
                topic: dead_letter_topic,
            } => {
                let Some(sender) = &self.dead_letters else {
                    Counters::bump(&self.counters.failed);
                    return Err(EventError::NoDeadLetterSink {
                        topic: dead_letter_topic.clone(),
                    });
                };
                let reason = reason(&error);
                let record = dead_letter_record(consumed, &reason);
                if let Err(e) = sender.send(dead_letter_topic, record).await {
                    Counters::bump(&self.counters.failed);
                    return Err(e.into());
                }
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    dead_letter_topic,
                    reason,
                    "event dead-lettered"
                );
                Counters::bump(&self.counters.dead_lettered);
                Ok(Outcome::DeadLettered(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brook_record::Record;

    use super::*;

    fn is_send_sync<T: Send + Sync>() {}
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn a_router_and_its_futures_can_move_between_threads() {
        is_send_sync::<EventRouter>();
        let router = EventRouter::new();
        let consumed = ConsumedRecord {
            topic: Arc::from("t"),
            partition: 0,
            record: Record {
                offset: 0,
                timestamp: 0,
                key: None,
                value: None,
                headers: vec![],
            },
        };
        is_send(&router.handle(&consumed));
    }
}
