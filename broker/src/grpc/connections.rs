//! Accepted gRPC connections: the accept loop tonic serves from, and what
//! each connection holds while it is open.
//!
//! - At most `max` connections are open: one accepted beyond that is
//!   closed at once (counted in `brook_refused_connections`, logged as a
//!   WARN at most every [`WARN_INTERVAL`]), so the descriptors left are the
//!   broker's own files'.
//! - A failed accept (out of descriptors, say) is logged the same way and
//!   the loop pauses for [`ACCEPT_BACKOFF`] instead of spinning.
//! - A connection with no open stream and no request for `idle_timeout` is
//!   closed ([`crate::idle`]); [`TrackRequests`] marks it busy while a
//!   request or stream is open on it.
//! - TCP_NODELAY is set (without it small responses wait for the peer's
//!   delayed ACK) and each connection counts in `brook_open_connections`.
//! - With TLS, each accepted connection's handshake runs in a task of its
//!   own, bounded by [`HANDSHAKE_TIMEOUT`], so a slow or silent client
//!   holds up no other; a failed handshake (a plaintext client, say) is
//!   logged at debug level and closes the connection. The principal the
//!   client certificate names, if any, is read once there and kept in
//!   [`ConnectionInfo`] for [`crate::auth`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::auth::{Principal, certificate_principal};
use crate::idle::{Activity, Busy, IdleTimeout, ReadsCount};
use crate::tls::ServerTls;
use brook_engine::metrics::{GaugeGuard, Metrics};

/// Least time between two warnings about refused connections, failed
/// accepts or refused requests; the ones in between are counted into the
/// next.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept failed for lack of a resource (descriptors,
/// memory): trying again at once would only fail again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections through their handshake and not yet taken by the server.
const HANDSHAKEN_QUEUE: usize = 64;

/// How many connections may be open and how long one may idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max: usize,
    pub idle_timeout: Duration,
}

/// An open connection to a client.
#[derive(Debug)]
pub struct Connection {
    stream: IdleTimeout<Transport>,
    info: ConnectionInfo,
    _open: OpenGuard,
}

/// What a connection runs over.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a request knows of its connection (tonic puts it in the request's
/// extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    activity: Arc<Activity>,
    /// Whom the client certificate names (TLS with a client certificate
    /// only).
    certificate_principal: Option<Principal>,
}

impl ConnectionInfo {
    pub(crate) fn certificate_principal(&self) -> Option<&Principal> {
        self.certificate_principal.as_ref()
    }

    pub(crate) fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.remote_addr()
    }
}

/// Counts a connection open (for the limit and the gauge) until dropped.
#[derive(Debug)]
struct OpenGuard {
    open: Arc<AtomicUsize>,
    _gauge: GaugeGuard,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The accept loop tonic serves from. It never ends and never yields an
/// error: accept failures are logged and retried. With `tls`, what it
/// yields has been through a TLS handshake.
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    tls: Option<Arc<ServerTls>>,
) -> impl Stream<Item = io::Result<Connection>> {
    let acceptor = Acceptor {
        listener,
        limits,
        metrics,
        open: Arc::new(AtomicUsize::new(0)),
        refusals: Warnings::default(),
        failures: Warnings::default(),
    };
    match tls {
        None => futures::future::Either::Left(futures::stream::unfold(
            acceptor,
            |mut acceptor| async move {
                let (stream, accepted) = acceptor.next().await;
                let connection = accepted.into_connection(Transport::Plain(stream), None);
                Some((Ok(connection), acceptor))
            },
        )),
        Some(tls) => futures::future::Either::Right(handshaken(acceptor, tls)),
    }
}

/// Accepts in a task of its own and hands on each connection once its TLS
/// handshake is done; ends when the server stops taking connections.
fn handshaken(
    mut acceptor: Acceptor,
    tls: Arc<ServerTls>,
) -> impl Stream<Item = io::Result<Connection>> {
    let (ready, taken) = mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = ready.closed() => return,
                accepted = acceptor.next() => accepted,
            };
            let ready = ready.clone();
            let handshake = tls.acceptor();
            let names = tls.client_principal();
            tokio::spawn(async move {
                let (stream, accepted) = accepted;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        // The handshake verified the chain; its first
                        // certificate is the client's own.
                        let principal = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(<[_]>::first)
                            .and_then(|cert| certificate_principal(cert, names));
                        let connection =
                            accepted.into_connection(Transport::Tls(Box::new(stream)), principal);
                        // If the server stopped taking connections, this one closes.
                        let _ = ready.send(Ok(connection)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_elapsed) => tracing::debug!(
                        timeout_ms = HANDSHAKE_TIMEOUT.as_millis() as u64,
                        "TLS handshake timed out"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(taken)
}

/// A connection accepted within the limit, before any handshake: all of
/// it but its socket.
struct Accepted {
    tcp: TcpConnectInfo,
    open: OpenGuard,
    idle_timeout: Duration,
}

impl Accepted {
    fn into_connection(
        self,
        transport: Transport,
        certificate_principal: Option<Principal>,
    ) -> Connection {
        let activity = Activity::new();
        Connection {
            stream: IdleTimeout::new(
                transport,
                activity.clone(),
                self.idle_timeout,
                ReadsCount::No,
            ),
            info: ConnectionInfo {
                tcp: self.tcp,
                activity,
                certificate_principal,
            },
            _open: self.open,
        }
    }
}

struct Acceptor {
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    /// Connections open now (the gauge is for scraping only).
    open: Arc<AtomicUsize>,
    refusals: Warnings,
    failures: Warnings,
}

impl Acceptor {
    async fn next(&mut self) -> (TcpStream, Accepted) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _peer)) => stream,
                Err(e) if is_peer_gone(&e) => continue,
                Err(e) => {
                    if let Some(more) = self.failures.due() {
                        tracing::warn!(error = %e, failed_since_last = more, "cannot accept a gRPC connection");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if self.open.load(Ordering::Acquire) >= self.limits.max {
                // Dropping the stream closes it.
                self.metrics.refused_connections.inc();
                if let Some(refused) = self.refusals.due() {
                    tracing::warn!(
                        max_connections = self.limits.max,
                        refused,
                        "refusing gRPC connections: max_connections are open"
                    );
                }
                continue;
            }
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            self.open.fetch_add(1, Ordering::AcqRel);
            let open = OpenGuard {
                open: self.open.clone(),
                _gauge: GaugeGuard::new(self.metrics.open_connections.clone()),
            };
            let tcp = stream.connect_info();
            return (
                stream,
                Accepted {
                    tcp,
                    open,
                    idle_timeout: self.limits.idle_timeout,
                },
            );
        }
    }
}

/// The peer went away between connecting and our accept: nothing to report.
fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Rate limit of one kind of warning.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    last: Option<Instant>,
    /// Occurrences since the last warning, this one included.
    pending: u64,
}

impl Warnings {
    /// Counts an occurrence; `Some(count since the last warning)` when a
    /// warning is due now.
    pub(crate) fn due(&mut self) -> Option<u64> {
        self.pending += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + WARN_INTERVAL) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A tower layer that keeps a connection busy (not idle) from a request's
/// arrival until its response, stream or not, has ended; it also puts the
/// connection's [`TcpConnectInfo`] in the request, where tonic's
/// `remote_addr` looks for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for TrackRequests<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<BusyBody<R>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let info = request.extensions().get::<ConnectionInfo>().cloned();
        let busy = info.map(|info| {
            request.extensions_mut().insert(info.tcp);
            info.activity.begin()
        });
        TrackedFuture {
            inner: self.inner.call(request),
            busy,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being handled; its connection is busy meanwhile.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, R, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = Result<http::Response<BusyBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        let busy = this.busy.take();
        Poll::Ready(response.map(|r| {
            r.map(|body| BusyBody {
                inner: body,
                _busy: busy,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy until it is dropped.
    pub struct BusyBody<B> {
        #[pin]
        inner: B,
        _busy: Option<Busy>,
    }
}

impl<B: Body> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
