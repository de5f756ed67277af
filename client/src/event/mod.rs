//! Typed events: an [`Event`] trait (type name, schema version, codec), an
//! envelope carried in record headers with the payload as the record's value,
//! sending ([`send_event`] through a [`crate::Producer`] or a [`crate::Client`])
//! and a consumer-side [`EventRouter`].
//!
//! On the wire an event is one record:
//!
//! | header        | value                                       |
//! | ------------- | ------------------------------------------- |
//! | `eventType`   | [`Event::EVENT_TYPE`], e.g. `order.placed`  |
//! | `eventId`     | a UUID v4                                   |
//! | `timestamp`   | RFC 3339 in UTC, e.g. `2024-05-01T12:00:00.000Z` |
//! | `version`     | [`Event::VERSION`], decimal                 |
//! | `contentType` | `application/json` or `application/x-protobuf` |
//!
//! and the value is the payload in that content type, so a consumer routes
//! on headers without decoding. The record's timestamp is the event's.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use brook_client::event::{send_event, EventRouter, UnknownPolicy};
//! use brook_client::{Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlacedV1 { id: u64 }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced { id: u64, currency: String }
//! brook_client::event!(OrderPlacedV1, "order.placed", version = 1, codec = json);
//! brook_client::event!(OrderPlaced, "order.placed", version = 2, codec = json);
//!
//! let client = Client::connect("http://127.0.0.1:9420").await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default());
//! let order = OrderPlaced { id: 7, currency: "EUR".into() };
//! send_event(&producer, "orders", Some("7".into()), &order).await?;
//!
//! let router = EventRouter::new()
//!     .on::<OrderPlaced, _, _>(|env| async move {
//!         println!("order {} in {} ({})", env.payload.id, env.payload.currency, env.event_id);
//!     })
//!     .upcast::<OrderPlacedV1, OrderPlaced, _>(|v1| OrderPlaced { id: v1.id, currency: "USD".into() })
//!     .unhandled(UnknownPolicy::DeadLetter { topic: "orders.dlq".into() })
//!     .dead_letter_sender(producer);
//! let config = ConsumerConfig::default().with_auto_offset_reset(OffsetReset::Earliest);
//! let mut consumer = Consumer::new(client, config);
//! consumer.assign(&[("orders", 0)]);
//! router.run_consumer(&mut consumer).await?;
//! # Ok(())
//! # }
//! ```

mod codec;
mod envelope;
mod error;
pub(crate) mod outcome;
mod router;
mod send;

use bytes::Bytes;

pub use codec::{Codec, CodecError, JsonCodec, ProtobufCodec};
pub use envelope::{
    Envelope, EventMeta, decode_envelope, event_record, event_record_with, headers,
};
pub use error::{EventError, HandlerError};
pub use outcome::{Outcome, RouterStats, Unhandled, UnknownPolicy};
pub use router::{EventRouter, HandlerOutcome};
pub use send::{EventSender, send_event, send_event_to};

/// A typed event: its name on the wire, its schema version and its payload
/// codec. Usually declared with [`crate::event!`].
///
/// A new schema of the same event type gets a new `VERSION` (and usually a
/// new Rust type); consumers accept older versions through
/// [`EventRouter::upcast`].
pub trait Event: Sized + Send + Sync + 'static {
    /// The `eventType` header, e.g. `order.placed`.
    const EVENT_TYPE: &'static str;
    /// The `version` header: the payload's schema version.
    const VERSION: u32;
    /// How the payload is encoded.
    type Codec: Codec<Self>;

    /// The payload bytes.
    fn encode(&self) -> Result<Bytes, EventError> {
        Self::Codec::encode(self).map_err(|source| EventError::Encode {
            event_type: Self::EVENT_TYPE,
            version: Self::VERSION,
            source,
        })
    }

    /// The event from payload bytes.
    fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        Self::Codec::decode(bytes).map_err(|source| EventError::Decode {
            event_type: Self::EVENT_TYPE,
            version: Self::VERSION,
            source,
        })
    }
}

/// Implements [`event::Event`](crate::event::Event) for a type:
/// `event!(Type, "event.type", version = N, codec = json)` for a type that
/// derives serde's `Serialize` and `Deserialize`, `codec = protobuf` for a
/// prost `Message`, or `codec = SomeCodec` for your own
/// [`Codec`](crate::event::Codec).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced { id: u64 }
/// brook_client::event!(OrderPlaced, "order.placed", version = 2, codec = json);
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct OrderShipped { #[prost(uint64, tag = "1")] id: u64 }
/// brook_client::event!(OrderShipped, "order.shipped", version = 1, codec = protobuf);
///
/// use brook_client::event::Event;
/// assert_eq!(OrderPlaced::EVENT_TYPE, "order.placed");
/// assert_eq!(OrderShipped::VERSION, 1);
/// ```
#[macro_export]
macro_rules! event {
    (@impl $ty:ty, $name:expr, $version:expr, $codec:ty) => {
        impl $crate::event::Event for $ty {
            const EVENT_TYPE: &'static str = $name;
            const VERSION: u32 = $version;
            type Codec = $codec;
        }
    };
    ($ty:ty, $name:expr, version = $version:expr, codec = json $(,)?) => {
        $crate::event!(@impl $ty, $name, $version, $crate::event::JsonCodec);
    };
    ($ty:ty, $name:expr, version = $version:expr, codec = protobuf $(,)?) => {
        $crate::event!(@impl $ty, $name, $version, $crate::event::ProtobufCodec);
    };
    ($ty:ty, $name:expr, version = $version:expr, codec = $codec:ty $(,)?) => {
        $crate::event!(@impl $ty, $name, $version, $codec);
    };
}
