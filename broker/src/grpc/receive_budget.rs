//! The broker-wide budget of bytes of gRPC messages partly received.
//!
//! tonic buffers a message until all of it has arrived, so a client that
//! opens many streams and sends each a large message slowly could make the
//! broker hold gigabytes. [`ReceiveBudgetLayer`] reads each request body's
//! gRPC framing as it passes: when a message's 5-byte prefix arrives, the
//! length it declares is taken from the budget (or, if that much is not
//! left, the message is refused with RESOURCE_EXHAUSTED) and given back
//! once the message's last byte has passed, or the stream ends. The broker
//! may then wait at most `message_receive_timeout` for the rest of the
//! message, so a slow sender holds its share only that long. Only time
//! spent waiting for the client counts: while the handler is not reading
//! (a produce stream held back by a full partition queue), flow control
//! stops the client, and that is not the client's delay.
//!
//! A declared length above the largest gRPC message is left to tonic,
//! which refuses it before buffering anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;

use brook_engine::metrics::Metrics;

/// gRPC's message prefix: a compression flag and a big-endian u32 length.
const PREFIX_LEN: usize = 5;

/// The budget shared by every request of the server.
#[derive(Debug, Clone)]
pub struct ReceiveBudget {
    /// One permit per byte of messages partly received.
    bytes: Arc<Semaphore>,
    bytes_max: usize,
    /// Declared lengths above this are tonic's to refuse.
    message_bytes_max: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl ReceiveBudget {
    pub fn new(
        bytes_max: usize,
        message_bytes_max: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let bytes_max = bytes_max.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
            message_bytes_max,
            timeout,
            metrics,
        }
    }

    /// Bytes of the budget not held by a message now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    fn reserve(&self, len: u32) -> Result<Option<OwnedSemaphorePermit>, Status> {
        if len as usize > self.message_bytes_max {
            return Ok(None);
        }
        match self.bytes.clone().try_acquire_many_owned(len) {
            Ok(permit) => Ok(Some(permit)),
            Err(_no_room) => {
                self.metrics.refused_messages.inc();
                tracing::debug!(
                    message_bytes = len,
                    receive_buffer_bytes_max = self.bytes_max,
                    "refusing a message: the receive buffer is full"
                );
                Err(Status::resource_exhausted(format!(
                    "max_receive_buffer_bytes: the broker is receiving {} bytes of messages already \
                     and cannot take a message of {len} more; retry later",
                    self.bytes_max - self.bytes.available_permits()
                )))
            }
        }
    }

    fn too_slow(&self, len: usize) -> Status {
        self.metrics.refused_messages.inc();
        tracing::debug!(
            message_bytes = len,
            "refusing a message: it arrived too slowly"
        );
        Status::resource_exhausted(format!(
            "message_receive_timeout_ms: a message of {len} bytes did not arrive within {} ms",
            self.timeout.as_millis()
        ))
    }
}

/// Puts every request body of the services under it on the budget.
#[derive(Debug, Clone)]
pub struct ReceiveBudgetLayer {
    budget: ReceiveBudget,
}

impl ReceiveBudgetLayer {
    pub fn new(budget: ReceiveBudget) -> Self {
        Self { budget }
    }
}

impl<S> tower::Layer<S> for ReceiveBudgetLayer {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budgeted {
            inner,
            budget: self.budget.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Budgeted<S> {
    inner: S,
    budget: ReceiveBudget,
}

impl<S> tower::Service<http::Request<Body>> for Budgeted<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let budget = self.budget.clone();
        self.inner
            .call(request.map(|body| Body::new(BudgetedBody::new(body, budget))))
    }
}

/// A request body whose messages are reserved from the budget as their
/// prefixes arrive.
struct BudgetedBody {
    inner: Body,
    budget: ReceiveBudget,
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// Bytes of the current message still to come, and its length.
    remaining: usize,
    message_len: usize,
    /// The current message's share of the budget.
    held: Option<OwnedSemaphorePermit>,
    /// Time spent waiting for the current message's bytes so far, and
    /// since when the body has been waiting (it answered `Pending`).
    waited: Duration,
    waiting_since: Option<Instant>,
    /// Wakes the body when the wait would pass the timeout; made the first time a message is
    /// still incomplete when no more data is ready (most messages arrive
    /// within one poll and never need it), then reused.
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl BudgetedBody {
    fn new(inner: Body, budget: ReceiveBudget) -> Self {
        Self {
            inner,
            budget,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            remaining: 0,
            message_len: 0,
            held: None,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            failed: false,
        }
    }

    /// Follows the framing through `data`, reserving each message that
    /// starts in it and releasing each that ends in it.
    fn follow(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    self.end_message();
                }
                continue;
            }
            let n = (PREFIX_LEN - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == PREFIX_LEN {
                self.prefix_len = 0;
                let [_compressed, length @ ..] = self.prefix;
                let len = u32::from_be_bytes(length);
                if len > 0 {
                    self.held = self.budget.reserve(len)?;
                    self.remaining = len as usize;
                    self.message_len = len as usize;
                    self.waited = Duration::ZERO;
                }
            }
        }
        Ok(())
    }

    fn end_message(&mut self) {
        self.held = None;
        self.waited = Duration::ZERO;
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.failed = true;
        self.end_message();
        Poll::Ready(Some(Err(status)))
    }
}

impl HttpBody for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        // The time since this body last answered `Pending` was spent
        // waiting for the client (the handler was waiting on this body).
        if let Some(since) = this.waiting_since.take() {
            this.waited += since.elapsed();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.follow(data)
                {
                    return this.fail(status);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(end) => {
                this.end_message();
                Poll::Ready(end)
            }
            Poll::Pending => {
                if this.held.is_some() {
                    let Some(left) = this.budget.timeout.checked_sub(this.waited) else {
                        let status = this.budget.too_slow(this.message_len);
                        return this.fail(status);
                    };
                    let now = Instant::now();
                    let deadline = now + left;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        let status = this.budget.too_slow(this.message_len);
                        return this.fail(status);
                    }
                    this.waiting_since = Some(now);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes_max: usize) -> ReceiveBudget {
        ReceiveBudget::new(
            bytes_max,
            1 << 20,
            Duration::from_secs(60),
            Arc::new(Metrics::new()),
        )
    }

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.resize(PREFIX_LEN + len as usize, 7);
        bytes
    }

    #[tokio::test]
    async fn a_message_holds_its_length_until_its_last_byte_and_prefixes_may_be_split() {
        let budget = budget(100);
        let mut body = BudgetedBody::new(Body::empty(), budget.clone());
        let first = message(60);
        body.follow(&first[..3]).unwrap();
        assert_eq!(budget.available(), 100);
        body.follow(&first[3..10]).unwrap();
        assert_eq!(budget.available(), 40);
        // The rest of the first message and the start of the second.
        let mut rest = first[10..].to_vec();
        rest.extend_from_slice(&message(30)[..8]);
        body.follow(&rest).unwrap();
        assert_eq!(budget.available(), 70);
        drop(body);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn a_message_that_does_not_fit_is_refused_naming_the_limit() {
        let budget = budget(100);
        let mut holder = BudgetedBody::new(Body::empty(), budget.clone());
        holder.follow(&message(80)[..PREFIX_LEN]).unwrap();
        let mut other = BudgetedBody::new(Body::empty(), budget.clone());
        let refused = other.follow(&message(30)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("max_receive_buffer_bytes"));
        // Above the largest gRPC message: tonic refuses it, not the budget.
        let mut huge = vec![0];
        huge.extend_from_slice(&(1u32 << 21).to_be_bytes());
        other.follow(&huge).unwrap();
    }

    /// A request body fed by the test.
    struct Feed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl HttpBody for Feed {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|data| data.map(|d| Ok(Frame::data(d))))
        }
    }

    async fn next(body: &mut BudgetedBody) -> Option<Result<Frame<Bytes>, Status>> {
        let frame = futures::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
        tokio::time::timeout(Duration::from_secs(5), frame)
            .await
            .expect("the body answers within 5 s")
    }

    /// Only time spent waiting for the client counts: a handler that stops
    /// reading (held back by a full partition) does not make the client
    /// too slow, but a client that stops sending is.
    #[tokio::test]
    async fn only_time_waiting_for_the_client_counts_against_the_timeout() {
        let budget = ReceiveBudget::new(
            1 << 20,
            1 << 20,
            Duration::from_millis(300),
            Arc::new(Metrics::new()),
        );
        let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = BudgetedBody::new(Body::new(Feed(rx)), budget);
        // A whole message and the start of the next arrive together; then
        // the handler does not read for longer than the timeout (the
        // client, held by flow control, sends nothing meanwhile).
        let first = message(100);
        let second = message(100);
        let mut chunk = first.clone();
        chunk.extend_from_slice(&second[..50]);
        feed.send(Bytes::from(chunk)).unwrap();
        assert!(matches!(next(&mut body).await, Some(Ok(_))));
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Reading again, the body waits for the rest: it comes in time.
        let rest = Bytes::copy_from_slice(&second[50..]);
        let sender = feed.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = sender.send(rest);
        });
        assert!(matches!(next(&mut body).await, Some(Ok(_))));
        // The next message stops half way: the wait for it fails.
        let third = message(100);
        feed.send(Bytes::copy_from_slice(&third[..50])).unwrap();
        assert!(matches!(next(&mut body).await, Some(Ok(_))));
        let refused = next(&mut body).await;
        match refused {
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(
                    status.message().contains("message_receive_timeout_ms"),
                    "{status:?}"
                );
            }
            other => panic!("expected the slow message refused, got {other:?}"),
        }
    }
}
