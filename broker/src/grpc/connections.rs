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
use tokio::time::Instant;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::idle::{Activity, Busy, IdleTimeout, ReadsCount};
use brook_engine::metrics::{GaugeGuard, Metrics};

/// Least time between two warnings about refused connections or failed
/// accepts; the ones in between are counted into the next.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept failed for lack of a resource (descriptors,
/// memory): trying again at once would only fail again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections may be open and how long one may idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max: usize,
    pub idle_timeout: Duration,
}

/// An open connection to a client.
#[derive(Debug)]
pub struct Connection {
    stream: IdleTimeout<TcpStream>,
    info: ConnectionInfo,
    _open: OpenGuard,
}

/// What a request knows of its connection (tonic puts it in the request's
/// extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    activity: Arc<Activity>,
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
/// error: accept failures are logged and retried.
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<Connection>> {
    let acceptor = Acceptor {
        listener,
        limits,
        metrics,
        open: Arc::new(AtomicUsize::new(0)),
        refusals: Warnings::default(),
        failures: Warnings::default(),
    };
    futures::stream::unfold(acceptor, |mut acceptor| async move {
        let connection = acceptor.next().await;
        Some((Ok(connection), acceptor))
    })
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
    async fn next(&mut self) -> Connection {
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
            let activity = Activity::new();
            return Connection {
                stream: IdleTimeout::new(
                    stream,
                    activity.clone(),
                    self.limits.idle_timeout,
                    ReadsCount::No,
                ),
                info: ConnectionInfo { tcp, activity },
                _open: open,
            };
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
struct Warnings {
    last: Option<Instant>,
    /// Occurrences since the last warning, this one included.
    pending: u64,
}

impl Warnings {
    /// Counts an occurrence; `Some(count since the last warning)` when a
    /// warning is due now.
    fn due(&mut self) -> Option<u64> {
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
