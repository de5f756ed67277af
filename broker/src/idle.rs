//! Closing idle connections. An [`Activity`] records when a connection was
//! last used and how much of its work is still open; [`IdleTimeout`] wraps
//! the connection's socket and, while the server waits to read from it,
//! ends it (as if the peer had closed it) once it has been idle for the
//! timeout. The server then drops the connection and its descriptor.
//!
//! What counts as use is the caller's choice: the gRPC side counts requests
//! and open streams only (a client's keep-alive pings do not keep an unused
//! connection), the HTTP side any bytes from the client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// When a connection was last used, and what is still open on it.
#[derive(Debug)]
pub struct Activity {
    /// Requests or streams in progress; a busy connection is never idle.
    busy: AtomicUsize,
    /// Nanoseconds from `epoch` to the last use.
    last_used_nanos: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            last_used_nanos: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Records a use now.
    pub fn touch(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_used_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Marks the connection busy until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    /// When the connection turns idle for `timeout`, unless it is used
    /// before; `None` while it is busy.
    fn idle_at(&self, timeout: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_nanos(self.last_used_nanos.load(Ordering::Relaxed));
        Some(self.epoch + last + timeout)
    }
}

/// A request or stream in progress; see [`Activity::begin`].
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether reading bytes from the peer counts as a use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadsCount {
    Yes,
    No,
}

/// A socket that reads as closed once its connection was idle for the
/// timeout.
#[derive(Debug)]
pub struct IdleTimeout<IO> {
    io: IO,
    activity: Arc<Activity>,
    timeout: Duration,
    reads_count: ReadsCount,
    /// Wakes the pending read when the connection may have turned idle.
    check: Pin<Box<Sleep>>,
    idle: bool,
}

impl<IO> IdleTimeout<IO> {
    pub fn new(
        io: IO,
        activity: Arc<Activity>,
        timeout: Duration,
        reads_count: ReadsCount,
    ) -> Self {
        activity.touch();
        Self {
            io,
            activity,
            timeout,
            reads_count,
            check: Box::pin(tokio::time::sleep(timeout)),
            idle: false,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Polls the idle timer: ready once the connection is idle.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.check.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = match self.activity.idle_at(self.timeout) {
                Some(at) if at <= Instant::now() => return Poll::Ready(()),
                Some(at) => at,
                // Busy: look again a timeout from now.
                None => Instant::now() + self.timeout,
            };
            self.check.as_mut().reset(next);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        if let Poll::Ready(read) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if this.reads_count == ReadsCount::Yes && buf.filled().len() > before {
                this.activity.touch();
            }
            return Poll::Ready(read);
        }
        if this.poll_idle(cx).is_ready() {
            tracing::debug!(
                idle_ms = this.timeout.as_millis() as u64,
                "closing an idle connection"
            );
            // Reads as end of stream: the server closes the connection.
            this.idle = true;
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
