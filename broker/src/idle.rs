//! Closing idle connections. An [`Activity`] records when a connection was
//! last used and how much of its work is still open; [`IdleTimeout`] wraps
//! the connection's socket and, while the server waits to read from it,
//! ends it (as if the peer had closed it) once it has been idle for the
//! timeout. The server then drops the connection and its descriptor.
//!
//! What counts as use is the caller's choice: the gRPC side counts requests
//! and open streams only (a client's keep-alive pings do not keep an unused
//! connection), the HTTP side any bytes from the client.
//!
//! A write the peer does not take (it stopped reading, and the socket's
//! buffers are full) fails with `TimedOut` once it has waited for the
//! timeout, so a client that never reads its answers cannot hold a
//! connection either.

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
    /// Set while a write waits for the peer to take bytes: when it gives up.
    write_stalled: Option<Pin<Box<Sleep>>>,
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
            write_stalled: None,
        }
    }

    /// Passes a write's outcome through; one that stays pending for the
    /// timeout fails with `TimedOut`.
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            tracing::debug!(
                timeout_ms = timeout.as_millis() as u64,
                "closing a connection whose peer does not read"
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer took nothing written to it for the idle timeout",
            )));
        }
        Poll::Pending
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
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bound_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bound_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.bound_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A peer that stops reading cannot hold the connection: the write that
    /// waits for it fails after the timeout; one the peer takes in time
    /// goes through.
    #[tokio::test]
    async fn a_write_the_peer_does_not_take_fails_after_the_timeout() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut socket = IdleTimeout::new(
            ours,
            Activity::new(),
            Duration::from_millis(200),
            ReadsCount::Yes,
        );
        let chunk = vec![7u8; 4096];
        // The peer drains slowly but in time: every write completes.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += peer.read(&mut buf).await.unwrap_or(0);
            }
            peer
        });
        let written = tokio::time::timeout(Duration::from_secs(5), async {
            socket.write_all(&chunk).await?;
            socket.write_all(&chunk).await
        })
        .await
        .expect("the writes end");
        assert!(written.is_ok(), "{written:?}");
        let _peer = reader.await.unwrap();
        // Now the peer reads nothing more.
        let stalled = tokio::time::timeout(Duration::from_secs(5), socket.write_all(&chunk))
            .await
            .expect("the write gives up by itself");
        let error = stalled.expect_err("a write nobody takes fails");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
