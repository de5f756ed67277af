//! Trace context carried in record headers, so a consumer's handling of a
//! record joins the trace of the code that produced it.
//!
//! The header is the W3C Trace Context `traceparent` (version `00`):
//! `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, byte for byte what
//! OpenTelemetry's `TraceContextPropagator` writes and accepts (a unit test
//! checks both directions); unlike it, flag bits other than `sampled` are
//! ignored rather than refused, as the W3C spec asks. It is encoded here on the OpenTelemetry API types
//! because the propagator lives in `opentelemetry_sdk`, and a library should
//! depend on the API only, leaving the SDK to the application.
//!
//! Invariant: without an OpenTelemetry layer in the `tracing` subscriber both
//! functions do no more than a subscriber lookup (and, for [`record_span`],
//! parse one short header): [`traceparent_header`] returns `None` and
//! [`record_span`] returns a plain span.

use brook_record::{Header, Record};
use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The key of the header that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The only `traceparent` version this module writes; version 0 is the only
/// one whose layout is fixed, so it is also the only one it reads.
const VERSION: &str = "00";

/// The W3C `traceparent` header for the current tracing span's OpenTelemetry
/// context, if it has a valid span context: `None` outside any span, and
/// whenever no OpenTelemetry layer is installed.
///
/// Add it to a record's headers when producing, so [`record_span`] on the
/// consumer side continues the trace.
#[must_use]
pub fn traceparent_header() -> Option<Header> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let value = format_traceparent(span.span_context())?;
    Some(Header {
        key: TRACEPARENT.to_owned(),
        value: Bytes::from(value),
    })
}

/// Starts a span for handling `record` whose OpenTelemetry parent is the
/// context in the record's `traceparent` header (a new root if absent or
/// malformed). `name` becomes the OpenTelemetry span name (`otel.name`); the
/// `tracing` name is `brook.record`, as `tracing` needs span names fixed at
/// compile time.
///
/// The span is at `INFO`: it exists to be a parent of the handler's work, so
/// it must survive the filters a production subscriber usually has.
///
/// ```
/// # let record = brook_client::Record { offset: 0, timestamp: 0, key: None, value: None, headers: vec![] };
/// let span = brook_client::trace::record_span(&record, "handle order");
/// let _entered = span.enter();
/// // handle the record; spans and events here join the producer's trace
/// ```
#[must_use]
pub fn record_span(record: &Record, name: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "brook.record",
        otel.name = name,
        otel.kind = "consumer",
        offset = record.offset,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(parent) = record
        .headers
        .iter()
        .find(|header| header.key == TRACEPARENT)
        .and_then(|header| std::str::from_utf8(&header.value).ok())
        .and_then(parse_traceparent)
    {
        // Fails only without an OpenTelemetry layer, where there is no
        // trace to join: the span stays a plain `tracing` span.
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    span
}

/// The `traceparent` value for `span_context`, `None` if it is invalid.
fn format_traceparent(span_context: &SpanContext) -> Option<String> {
    if !span_context.is_valid() {
        return None;
    }
    Some(format!(
        "{VERSION}-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags() & TraceFlags::SAMPLED
    ))
}

/// The remote span context in a `traceparent` value; `None` unless it is a
/// well-formed version-0 value with non-zero ids. Like the W3C spec, hex must
/// be lowercase, and any flags byte is accepted: bits other than `sampled`
/// (e.g. Level 2's `random`, bit 1) are ignored, as the spec asks of
/// receivers, so a newer tracer's header still joins the trace.
fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != VERSION {
        return None;
    }
    let lower_hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !(lower_hex(trace_id, 32) && lower_hex(span_id, 16) && lower_hex(flags, 2)) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let span_context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    span_context.is_valid().then_some(span_context)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
    use parking_lot::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps every ended span, to read parents from.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn with_otel<T>(collect: &Collect, f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(collect.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("brook-client-test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn record_with(headers: Vec<Header>) -> Record {
        Record {
            offset: 7,
            timestamp: 0,
            key: None,
            value: None,
            headers,
        }
    }

    #[test]
    fn traceparent_round_trips_from_producer_to_consumer_span() {
        let collect = Collect::default();
        let (producer, consumer) = with_otel(&collect, || {
            let producer = tracing::info_span!("produce");
            let (producer_cx, header) = producer.in_scope(|| {
                (
                    tracing::Span::current().context(),
                    traceparent_header().expect("an otel span is current"),
                )
            });
            assert_eq!(header.key, TRACEPARENT);
            let consumer = record_span(&record_with(vec![header]), "handle");
            let consumer_cx = consumer.context();
            drop((producer, consumer));
            (
                producer_cx.span().span_context().clone(),
                consumer_cx.span().span_context().clone(),
            )
        });
        assert!(producer.is_valid() && consumer.is_valid());
        assert_eq!(consumer.trace_id(), producer.trace_id());
        assert_ne!(consumer.span_id(), producer.span_id());
        let spans = collect.0.lock();
        let handled = spans
            .iter()
            .find(|span| span.name == "handle")
            .expect("otel.name names the span");
        assert_eq!(handled.parent_span_id, producer.span_id());
        assert!(handled.parent_span_is_remote);
    }

    #[test]
    fn a_missing_or_malformed_header_starts_a_new_root() {
        let collect = Collect::default();
        let outer_trace = with_otel(&collect, || {
            let outer = tracing::info_span!("outer");
            let _entered = outer.enter();
            for value in ["", "garbage", "00-0-0-00", "01-aa-bb-01"] {
                let header = Header {
                    key: TRACEPARENT.into(),
                    value: Bytes::from(value),
                };
                drop(record_span(&record_with(vec![header]), "handle"));
            }
            drop(record_span(&record_with(vec![]), "handle"));
            outer.context().span().span_context().trace_id()
        });
        let spans = collect.0.lock();
        let handled: Vec<_> = spans.iter().filter(|s| s.name == "handle").collect();
        assert_eq!(handled.len(), 5);
        // Not remote: the header was ignored and the span nests as usual.
        for span in handled {
            assert!(!span.parent_span_is_remote);
            assert_eq!(span.span_context.trace_id(), outer_trace);
        }
    }

    #[test]
    fn without_an_otel_layer_they_are_no_ops() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("produce");
            assert!(span.in_scope(traceparent_header).is_none());
            let header = Header {
                key: TRACEPARENT.into(),
                value: Bytes::from("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            };
            let span = record_span(&record_with(vec![header]), "handle");
            assert!(!span.is_disabled());
            assert!(!span.context().span().span_context().is_valid());
        });
        // And with no subscriber at all.
        assert!(traceparent_header().is_none());
        let span = record_span(&record_with(vec![]), "handle");
        assert!(!span.context().span().span_context().is_valid());
    }

    #[test]
    fn the_format_matches_the_sdk_propagator_both_ways() {
        let propagator = TraceContextPropagator::new();
        for value in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ] {
            let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
            let sdk = propagator.extract(&carrier);
            let ours = parse_traceparent(value).expect("valid");
            assert_eq!(sdk.span().span_context(), &ours);

            let mut injected = HashMap::new();
            propagator.inject_context(
                &Context::new().with_remote_span_context(ours.clone()),
                &mut injected,
            );
            assert_eq!(
                injected[TRACEPARENT],
                format_traceparent(&ours).expect("valid")
            );
            assert_eq!(injected[TRACEPARENT], value);
        }
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            let carrier = HashMap::from([(TRACEPARENT.to_owned(), bad.to_owned())]);
            assert!(
                !propagator
                    .extract(&carrier)
                    .span()
                    .span_context()
                    .is_valid(),
                "{bad}"
            );
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // The SDK takes a short id as if zero-padded; the W3C spec fixes the length.
        // (The SDK also refuses flags above 2, which the spec says to ignore:
        // see `unknown_flag_bits_are_ignored`.)
        assert!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01").is_none()
        );
    }

    #[test]
    fn unknown_flag_bits_are_ignored() {
        let id = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";
        for (flags, sampled) in [("03", true), ("02", false), ("ff", true), ("fe", false)] {
            let parsed = parse_traceparent(&format!("00-{id}-{flags}"))
                .unwrap_or_else(|| panic!("flags {flags} are valid"));
            assert_eq!(parsed.is_sampled(), sampled, "{flags}");
            assert_eq!(
                format_traceparent(&parsed).expect("valid"),
                format!("00-{id}-0{}", u8::from(sampled)),
                "only the sampled bit is passed on"
            );
        }
    }
}
