//! The connection: one tonic `Channel` shared by the three service stubs,
//! the options that bound every call, the circuit breaker in front of it, and
//! the helper that applies both.
//!
//! Invariant: every call goes through [`Client::rpc`], so none can wait
//! longer than its time limit, and each passes the circuit breaker and
//! reports its outcome to it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::admin_service_client::AdminServiceClient;
use brook_proto::fetch_service_client::FetchServiceClient;
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_record::BatchOptions;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Authorize, AuthorizedChannel, BearerToken, Transport};
use crate::error::ClientError;
use crate::resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use crate::routing::Routing;
use crate::tls::{TlsOptions, resolve_scheme};

/// How long establishing the connection may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take (a fetch gets its long-poll wait on top).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest gRPC message sent or received; matches the broker's default
/// limit, which is above its largest batch and largest fetch response.
pub const DEFAULT_MESSAGE_BYTES_MAX: usize = brook_record::protocol::GRPC_MESSAGE_BYTES_MAX_DEFAULT;
/// Produce requests a [`crate::ProduceStream`] keeps unacknowledged.
pub const DEFAULT_PRODUCE_IN_FLIGHT_MAX: usize = 128;

/// How often an idle connection is pinged (see [`ClientOptions::keepalive_interval`]).
const KEEPALIVE_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// HTTP/2 receive windows: bytes a broker may send before the client
/// reads them. hyper's defaults (5 MiB per connection, 2 MiB per stream)
/// make a broker answering a fetch of several MiB wait for the client's
/// window updates in the middle of the answer.
const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
const HTTP2_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame the broker may send. At the 16 KiB default a
/// fetch answer of 1 MiB is 64 frames, each its own write and wake-up on
/// both sides: consuming 1 KiB records ran at about 0.78 GB/s on
/// loopback, and at about 1 GB/s with 1 MiB frames.
const HTTP2_FRAME_BYTES_MAX: u32 = 1024 * 1024;
/// How long a ping may take (see [`ClientOptions::keepalive_timeout`]).
const KEEPALIVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);

/// Settings of a [`Client`]; [`ClientOptions::default`] holds the `DEFAULT_*`
/// values, pings the connection every 30 s, closing it when a ping is
/// not answered within 20 s, and sets no TLS (the endpoint's scheme decides).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Time limit for the TCP connect and the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// Time limit for each call (a fetch adds its `max_wait`).
    pub request_timeout: Duration,
    /// Largest gRPC message encoded or decoded.
    pub message_bytes_max: usize,
    /// Unacknowledged requests per produce stream; `send` waits at this bound.
    pub produce_in_flight_max: usize,
    /// How often the connection sends an HTTP/2 ping, even when no call is
    /// open, so that a broker that vanished without closing the connection
    /// (a half-open connection: a crashed host, a dropped route) is noticed,
    /// and long-lived streams ([`crate::Subscription`],
    /// [`crate::ProduceStream`]) end with an error instead of waiting forever.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed and
    /// every call on it fails (retryably).
    pub keepalive_timeout: Duration,
    /// Compression (and producer identity) of batches built by [`Client::produce`].
    pub batch: BatchOptions,
    /// When calls start failing fast because the broker looks unreachable.
    pub circuit_breaker: CircuitBreakerConfig,
    /// TLS settings. With them, a `host:port` endpoint connects with TLS
    /// (`https://`), and an `http://` endpoint is an error. Without them,
    /// an `https://` endpoint connects with TLS trusting the system's roots.
    pub tls: Option<TlsOptions>,
    /// Sent as `authorization: Bearer <token>` metadata on every call, for
    /// a broker with `auth = token`. Hidden in `Debug`.
    pub bearer_token: Option<BearerToken>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            message_bytes_max: DEFAULT_MESSAGE_BYTES_MAX,
            produce_in_flight_max: DEFAULT_PRODUCE_IN_FLIGHT_MAX,
            keepalive_interval: KEEPALIVE_INTERVAL_DEFAULT,
            keepalive_timeout: KEEPALIVE_TIMEOUT_DEFAULT,
            batch: BatchOptions::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            tls: None,
            bearer_token: None,
        }
    }
}

/// A connection to a Brook broker. Cloning is cheap: clones share the
/// connection (HTTP/2 multiplexes their calls) and its circuit breaker.
///
/// # When the broker goes away
///
/// The connection heals itself: once the broker is unreachable, each call
/// (re)connects first, the TCP connect and HTTP/2 handshake bounded by
/// [`ClientOptions::connect_timeout`], and a call that cannot connect fails
/// with a retryable error ([`ClientError::is_retryable`]). A broker that is
/// down usually refuses connections at once; one behind a dead host or
/// partition makes each call wait for the connect timeout. To stop every
/// caller from paying that, a circuit breaker
/// ([`ClientOptions::circuit_breaker`]) counts consecutive retryable failures:
/// after `failure_threshold` of them, calls fail at once with
/// [`ClientError::CircuitOpen`] for `open_duration`, then one probe call goes
/// through, and its success lets every call through again. Nothing is retried
/// for you; a [`crate::resilience::Backoff`] paces retry loops.
///
/// ```no_run
/// # async fn example() -> Result<(), brook_client::ClientError> {
/// use brook_client::{Client, FetchOptions, NewRecord, TopicConfig};
///
/// let client = Client::connect("127.0.0.1:9420").await?;
/// client.create_topic("events", 3, TopicConfig::default()).await?;
/// let record = NewRecord {
///     value: Some("hello".into()),
///     ..NewRecord::default()
/// };
/// let ack = client.produce("events", 0, &[record]).await?;
/// let fetched = client
///     .fetch("events", 0, ack.base_offset, FetchOptions::default())
///     .await?;
/// assert_eq!(fetched.records[0].value.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) admin: AdminServiceClient<Transport>,
    pub(crate) produce: ProduceServiceClient<Transport>,
    pub(crate) fetch: FetchServiceClient<Transport>,
    pub(crate) options: ClientOptions,
    /// Shared by the clones, as the connection is.
    breaker: CircuitBreaker,
    /// The connection (with the bearer token), for stubs of other
    /// services (consumer groups) and raw calls.
    pub(crate) channel: Transport,
    /// The broker connected to, as given (empty for a wrapped channel).
    pub(crate) endpoint: Arc<str>,
    /// In a cluster: which broker leads which partition, and connections
    /// to the others.
    pub(crate) routing: Arc<Routing>,
}

impl Client {
    /// Connects with [`ClientOptions::default`]. `endpoint` is a URI such as
    /// `http://127.0.0.1:9420` or `https://broker.internal:9420` (TLS,
    /// trusting the system's roots), or `host:port` (then `http://` is
    /// assumed).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with the given options. The first connection is made here,
    /// within `options.connect_timeout`, so a wrong address fails now; later
    /// reconnects happen on demand (see [`Client`]).
    ///
    /// With `options.tls`, `host:port` means `https://host:port`, PEM files
    /// are read (and checked) here, and an `http://` endpoint fails with
    /// [`ClientError::Tls`], as does a PEM that is unreadable or holds no
    /// certificate or key.
    ///
    /// # Panics
    ///
    /// If `options.produce_in_flight_max`,
    /// `options.circuit_breaker.failure_threshold`, `options.keepalive_interval`
    /// or `options.keepalive_timeout` is 0.
    pub async fn connect_with(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        assert!(
            options.produce_in_flight_max > 0,
            "a produce stream needs room for one request"
        );
        let endpoint = endpoint.into();
        let channel = Self::connect_channel(endpoint.clone(), &options).await?;
        let mut client = Self::from_channel(channel, options);
        client.endpoint = Arc::from(endpoint);
        Ok(client)
    }

    /// [`Client::connect_channel`] with `options.bearer_token` added to every
    /// call, for callers that speak gRPC without the client, such as a raw
    /// produce stream.
    ///
    /// # Panics
    ///
    /// If `options.keepalive_interval` or `options.keepalive_timeout` is 0.
    pub async fn connect_authorized_channel(
        endpoint: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<AuthorizedChannel, ClientError> {
        let channel = Self::connect_channel(endpoint, options).await?;
        Ok(AuthorizedChannel::new(
            channel,
            Authorize::new(options.bearer_token.clone()),
        ))
    }

    /// A connected gRPC channel to `endpoint` under the same rules as
    /// [`Client::connect_with`] (TLS from the endpoint and `options.tls`,
    /// keepalive, connect timeout), for callers that speak gRPC without the
    /// client. The bearer token is not added:
    /// [`Client::connect_authorized_channel`] adds it.
    ///
    /// # Panics
    ///
    /// If `options.keepalive_interval` or `options.keepalive_timeout` is 0.
    pub async fn connect_channel(
        endpoint: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<Channel, ClientError> {
        assert!(
            !options.keepalive_interval.is_zero() && !options.keepalive_timeout.is_zero(),
            "keepalive pings need a positive interval and timeout"
        );
        let (endpoint, uses_tls) = resolve_scheme(endpoint.into(), options.tls.as_ref())?;
        let mut endpoint = Endpoint::from_shared(endpoint.clone())
            .map_err(|error| ClientError::InvalidEndpoint {
                endpoint,
                source: std::sync::Arc::new(error),
            })?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .max_frame_size(HTTP2_FRAME_BYTES_MAX)
            // A half-open connection shows no error by itself: pings find it.
            .http2_keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .keep_alive_while_idle(true);
        if uses_tls {
            let tls = options.tls.clone().unwrap_or_default();
            let config = tls.client_config(options.connect_timeout).await?;
            endpoint = endpoint.tls_config(config).map_err(|error| {
                ClientError::tls(
                    "the certificates or key are not usable",
                    Some(std::sync::Arc::new(error)),
                )
            })?;
        }
        // connect_timeout bounds the TCP connect only; this bounds the handshake too.
        let channel = tokio::time::timeout(options.connect_timeout, endpoint.connect())
            .await
            .map_err(|_elapsed| ClientError::Timeout {
                operation: "connect",
                after: options.connect_timeout,
            })?
            .map_err(ClientError::transport)?;
        Ok(channel)
    }

    /// Wraps an existing channel (tests use one that connects lazily).
    /// The channel's own settings apply: `connect_timeout` and the keepalive
    /// options are for [`Client::connect_with`].
    ///
    /// # Panics
    ///
    /// If `options.circuit_breaker.failure_threshold` is 0.
    pub(crate) fn from_channel(channel: Channel, options: ClientOptions) -> Self {
        let limit = options.message_bytes_max;
        let channel = Transport::new(channel, Authorize::new(options.bearer_token.clone()));
        Self {
            admin: AdminServiceClient::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            produce: ProduceServiceClient::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            fetch: FetchServiceClient::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            breaker: CircuitBreaker::new(options.circuit_breaker),
            options,
            channel,
            endpoint: Arc::from(""),
            routing: Arc::default(),
        }
    }

    /// The client for the broker at `address`: this one when it is the
    /// broker this client connected to, else one connected on first use
    /// with the same options.
    pub(crate) async fn at(&self, address: &Arc<str>) -> Result<Client, ClientError> {
        if without_scheme(address) == without_scheme(&self.endpoint) {
            return Ok(self.clone());
        }
        self.routing.client_at(self, address).await
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The state of the circuit breaker in front of the connection.
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Runs one call through the circuit breaker and under `timeout`, turning
    /// its status into a [`ClientError`]. With the breaker open, fails with
    /// [`ClientError::CircuitOpen`] without polling `call` (so nothing is
    /// sent); otherwise reports the outcome: retryable errors count against
    /// the broker, answers (errors included) for it.
    pub(crate) async fn rpc<T>(
        &self,
        operation: &'static str,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        let permit = self.breaker.acquire()?;
        let result = Self::call(operation, timeout, call).await;
        permit.report(&result);
        result
    }

    /// Runs one call under `timeout`, turning its status into a [`ClientError`].
    async fn call<T>(
        operation: &'static str,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::status(operation, status)),
            Err(_elapsed) => Err(ClientError::Timeout {
                operation,
                after: timeout,
            }),
        }
    }
}

/// An address without its `http://` or `https://`: brokers name each other
/// by `host:port`.
pub(crate) fn without_scheme(address: &str) -> &str {
    address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address)
}

setters!(ClientOptions {
    with_connect_timeout => connect_timeout: Duration,
    with_request_timeout => request_timeout: Duration,
    with_message_bytes_max => message_bytes_max: usize,
    with_produce_in_flight_max => produce_in_flight_max: usize,
    with_keepalive_interval => keepalive_interval: Duration,
    with_keepalive_timeout => keepalive_timeout: Duration,
    with_batch => batch: BatchOptions,
    with_circuit_breaker => circuit_breaker: CircuitBreakerConfig,
});

impl ClientOptions {
    /// Sets [`Self::tls`].
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`Self::bearer_token`].
    #[must_use]
    pub fn with_bearer_token(mut self, token: BearerToken) -> Self {
        self.bearer_token = Some(token);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_settings_with_a_plaintext_endpoint_fail_to_connect() {
        let options = ClientOptions::default().with_tls(TlsOptions::default());
        let error = Client::connect_with("http://127.0.0.1:1", options)
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn an_invalid_endpoint_is_not_retryable() {
        let error = Client::connect("http://bad host:1").await.unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidEndpoint { .. }),
            "{error:?}"
        );
        assert_eq!(error.kind(), crate::ErrorKind::InvalidArgument);
        // Retrying cannot make the address valid.
        assert!(!error.is_retryable());
    }
}
