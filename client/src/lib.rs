//! A Rust client for the Brook message broker.
//!
//! [`Client`] holds one HTTP/2 connection and offers topic and quota
//! administration, unary produce ([`Client::produce`]), a pipelined producer
//! ([`Client::produce_stream`]), long-poll fetches ([`Client::fetch`]),
//! subscriptions ([`Client::subscribe`]) and offset lookups. Every call is
//! bounded in time, and every failure is a [`ClientError`] that knows
//! whether retrying can help.
//!
//! ```no_run
//! # async fn example() -> Result<(), brook_client::ClientError> {
//! use brook_client::{Client, NewRecord, OffsetSpec};
//! use futures::StreamExt;
//!
//! let client = Client::connect("http://127.0.0.1:9420").await?;
//! let start = client.list_offsets("events", 0, OffsetSpec::Latest).await?;
//! let mut records = client.subscribe("events", 0, start).await?;
//! client
//!     .produce("events", 0, &[NewRecord { value: Some("hi".into()), ..NewRecord::default() }])
//!     .await?;
//! let record = records.next().await.expect("a record")?;
//! assert_eq!(record.offset, start);
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: only this crate's modules know the `brook_proto` types; the
//! public API speaks in its own structs and in `brook_record`'s records.

#![warn(missing_docs)]

/// Chainable `with_*` setters for a settings type's public fields: outside
/// this crate `#[non_exhaustive]` forbids struct literals, so settings are
/// made from their `Default` (or constructor) and these.
macro_rules! setters {
    ($ty:ty { $($setter:ident => $field:ident: $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`Self::", stringify!($field), "`].")]
                #[must_use]
                pub fn $setter(mut self, $field: $fty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

mod acl;
mod admin;
mod auth;
mod client;
mod cluster;
mod consumer;
mod dead_letter;
mod deadline;
mod error;
#[cfg(feature = "events")]
pub mod event;
mod fetch;
mod group;
mod produce;
mod producer;
mod quota;
pub mod resilience;
mod routing;
mod stream;
mod tls;
#[cfg(feature = "otel")]
pub mod trace;
mod undecodable;

pub use acl::{Acl, AclOperation, AclPermission, AclResource, UnknownAclOperation};
pub use admin::{PartitionDescription, TopicConfig, TopicDescription, TopicSettings, TopicSummary};
pub use auth::{
    Authorize, AuthorizedChannel, BearerToken, InvalidBearerToken, TOKEN_FILE_CHECK_INTERVAL,
    TokenFileError,
};
pub use brook_record::{BatchOptions, Compression, Header, NewRecord, Record, RecordValidation};
pub use client::{
    Client, ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MESSAGE_BYTES_MAX,
    DEFAULT_PRODUCE_IN_FLIGHT_MAX, DEFAULT_REQUEST_TIMEOUT,
};
pub use cluster::{BrokerDescription, ClusterDescription, GroupCoordinator, PartitionReplicas};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, ConsumerError, OffsetReset, SeekTo};
pub use error::{Cause, ClientError, ErrorKind, StatusCode};
pub use fetch::{
    FetchOptions, FetchResult, FetchTarget, OffsetSpec, PartitionFetch, SUBSCRIBE_MAX_BYTES,
    Subscription,
};
pub use group::{
    FailurePolicy, GroupClient, GroupConfig, GroupConsumer, GroupDescription, GroupError,
    GroupHandle, GroupSummary, MemberDescription, PartitionLag, PartitionOffset, ResetTo,
    TopicPartition,
};
/// The OpenTelemetry API this client is built against. Install your tracer
/// provider through this re-export (or the same version of the crate):
/// spans of another `opentelemetry` version are a different type to this
/// client, so it would find no trace context and send no `traceparent`,
/// silently.
#[cfg(feature = "otel")]
pub use opentelemetry;
pub use produce::ProduceAck;
pub use producer::{
    DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_MEMORY, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, DeliveryFuture,
    Producer, ProducerConfig, ProducerRecord, RecordMetadata, fnv1a32,
};
pub use quota::{Quota, QuotaTarget};
pub use resilience::{Backoff, CircuitBreakerConfig, CircuitState};
pub use stream::{PendingAck, ProduceStream};
pub use tls::{Pem, TlsIdentity, TlsOptions};
#[cfg(feature = "otel")]
pub use trace::{record_span, traceparent_header};
pub use undecodable::{SkippedBatch, UndecodablePolicy};
