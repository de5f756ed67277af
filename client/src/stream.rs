//! The pipelined producer over `ProduceStream`: requests go out without
//! waiting for earlier answers; the broker appends and acknowledges them in
//! arrival order, and a reader task hands each acknowledgement to the
//! [`PendingAck`] of its request.
//!
//! Invariants: at most `produce_in_flight_max` requests are unacknowledged
//! (a semaphore permit travels with each one until its answer arrives);
//! the queue of awaited answers holds the requests in the order they were
//! sent, and each answer's correlation id is checked against its head. An
//! answer is awaited at most `request_timeout` after its request was sent:
//! then the stream ends and every request still awaited fails, so a broker
//! that stopped answering (or a half-open connection) cannot hang callers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_proto::{ProduceRequest, ProduceResponse};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::Client;
use crate::error::ClientError;
use crate::produce::{ProduceAck, acks, request};

/// The call, in the errors of produce streams (the producer's too).
pub(crate) const OPERATION: &str = "produce_stream";

/// The error of a request the stream can no longer answer: it ended before
/// the answer came, so the request may or may not have been applied.
pub(crate) fn stream_closed() -> ClientError {
    ClientError::StreamClosed {
        operation: OPERATION,
    }
}

/// A pipelined produce stream, from [`Client::produce_stream`].
///
/// [`send`](Self::send) returns once the request is on its way; await the
/// returned [`PendingAck`] for the broker's answer. Acknowledgements arrive
/// in the order requests were sent. If an answer does not arrive within the
/// client's `request_timeout` of its request, the stream ends: that request
/// and every later one fail with a (retryable) [`ClientError::Timeout`],
/// though the broker may have appended them. Dropping the stream ends it after the
/// requests already sent; their acknowledgements are still delivered.
///
/// ```no_run
/// # async fn example(client: brook_client::Client, batches: Vec<bytes::Bytes>)
/// # -> Result<(), brook_client::ClientError> {
/// let mut stream = client.produce_stream().await?;
/// let mut pending = Vec::new();
/// for batch in batches {
///     pending.push(stream.send("events", 0, batch).await?);
/// }
/// for ack in pending {
///     println!("appended at {}", ack.await?.base_offset);
/// }
/// stream.finish().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ProduceStream {
    /// Requests for the broker. Never full: a permit is taken first and the
    /// capacity equals the permit count.
    requests: mpsc::Sender<ProduceRequest>,
    /// Answers the reader task owes, in send order; bounded like `requests`.
    awaiting: mpsc::Sender<Awaiting>,
    /// One permit per unacknowledged request: the in-flight bound.
    permits: Arc<Semaphore>,
    in_flight_max: usize,
    next_correlation_id: u64,
    reader: JoinHandle<()>,
}

/// A request sent and not yet answered.
#[derive(Debug)]
struct Awaiting {
    correlation_id: u64,
    reply: Reply,
    /// When the request was handed to the stream: its answer is due
    /// `request_timeout` later.
    sent_at: Instant,
    /// Returned to the semaphore when the answer is handed over.
    _permit: OwnedSemaphorePermit,
}

/// Where the answer to a request goes.
#[derive(Debug)]
struct Reply {
    topic: String,
    partition: u32,
    sender: oneshot::Sender<Result<ProduceAck, ClientError>>,
}

impl Reply {
    // The caller may have stopped waiting; nothing to tell then.
    fn answer(self, response: ProduceResponse) {
        let _ = self
            .sender
            .send(outcome(self.topic, self.partition, response));
    }

    fn fail(self, error: ClientError) {
        let _ = self.sender.send(Err(error));
    }
}

/// The broker's answer to one [`ProduceStream::send`], to be awaited.
#[derive(Debug)]
#[must_use = "the acknowledgement tells whether the batch was appended"]
pub struct PendingAck {
    correlation_id: u64,
    reply: oneshot::Receiver<Result<ProduceAck, ClientError>>,
}

impl PendingAck {
    /// The id the request was sent with; the broker's answer echoes it.
    pub fn correlation_id(&self) -> u64 {
        self.correlation_id
    }
}

impl Future for PendingAck {
    type Output = Result<ProduceAck, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply).poll(cx).map(|answer| {
            // The reader answers every request it dequeues; a dropped sender
            // means it is gone (runtime shut down).
            answer.unwrap_or(Err(stream_closed()))
        })
    }
}

impl Client {
    /// Opens a pipelined produce stream; see [`ProduceStream`].
    pub async fn produce_stream(&self) -> Result<ProduceStream, ClientError> {
        let in_flight_max = self.options.produce_in_flight_max;
        let (requests, outbound) = mpsc::channel(in_flight_max);
        let responses = self
            .rpc(
                OPERATION,
                self.options.request_timeout,
                self.produce
                    .clone()
                    .produce_stream(ReceiverStream::new(outbound)),
            )
            .await?;
        let (awaiting, queue) = mpsc::channel(in_flight_max);
        let reader = tokio::spawn(read_acks(responses, queue, self.options.request_timeout));
        Ok(ProduceStream {
            requests,
            awaiting,
            permits: Arc::new(Semaphore::new(in_flight_max)),
            in_flight_max,
            next_correlation_id: 1,
            reader,
        })
    }
}

impl ProduceStream {
    /// Sends one encoded batch; waits only while the in-flight bound is
    /// reached. Cancel-safe: if this future is dropped, nothing was sent.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> Result<PendingAck, ClientError> {
        let closed = stream_closed();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // Reserve both slots before filling either, so a cancelled send
        // cannot leave an awaited answer without its request.
        let Ok(awaiting_slot) = self.awaiting.reserve().await else {
            return Err(closed);
        };
        let Ok(request_slot) = self.requests.reserve().await else {
            return Err(closed);
        };
        let (reply, answer) = oneshot::channel();
        let reply = Reply {
            topic: topic.to_owned(),
            partition,
            sender: reply,
        };
        let correlation_id = dispatch(
            &mut self.next_correlation_id,
            (permit, awaiting_slot, request_slot),
            reply,
            vec![(topic.to_owned(), partition, batch)],
        );
        Ok(PendingAck {
            correlation_id,
            reply: answer,
        })
    }

    /// Requests sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight_max - self.permits.available_permits()
    }

    /// Ends the stream and waits until every request sent has its answer
    /// (delivered to its [`PendingAck`]).
    pub async fn finish(self) {
        let Self {
            requests,
            awaiting,
            reader,
            ..
        } = self;
        drop(requests);
        drop(awaiting);
        if let Err(e) = reader.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// How a stream's answers stopped.
enum Ended {
    /// The broker ended the stream (or the client did, and all was answered).
    Closed,
    Failed(tonic::Status),
    Broken(String),
    /// The awaited answer did not come within this request timeout.
    TimedOut(Duration),
}

impl Ended {
    fn error(&self) -> ClientError {
        match self {
            Ended::Closed => stream_closed(),
            Ended::Failed(status) => ClientError::status(OPERATION, status.clone()),
            Ended::Broken(why) => ClientError::Protocol(why.clone()),
            Ended::TimedOut(after) => ClientError::Timeout {
                operation: OPERATION,
                after: *after,
            },
        }
    }
}

/// Hands each answer to the oldest request awaiting one; when answers
/// stop, or the oldest request's answer is `request_timeout` late, fails
/// every request still awaited.
async fn read_acks(
    mut responses: Streaming<ProduceResponse>,
    mut queue: mpsc::Receiver<Awaiting>,
    request_timeout: Duration,
) {
    // Requests taken from `queue`, oldest first; bounded like it by the
    // in-flight permits each holds.
    let mut pending = VecDeque::new();
    let mut queue_open = true;
    let ended = loop {
        let due = pending
            .front()
            .map(|oldest: &Awaiting| crate::deadline::after_tokio(oldest.sent_at, request_timeout));
        let response = tokio::select! {
            // Both branches are cancel-safe: a message or a request not
            // taken now is taken on the next turn.
            request = queue.recv(), if queue_open => {
                match request {
                    Some(request) => pending.push_back(request),
                    None => queue_open = false,
                }
                continue;
            }
            message = responses.message() => match message {
                Ok(Some(response)) => response,
                Ok(None) => break Ended::Closed,
                Err(status) => break Ended::Failed(status),
            },
            () = sleep_until(due), if due.is_some() => break Ended::TimedOut(request_timeout),
        };
        // The request is queued before it is sent, so it is there already.
        let oldest = match pending.pop_front() {
            Some(oldest) => Some(oldest),
            None => queue.recv().await,
        };
        let awaited = match oldest {
            Some(awaited) if awaited.correlation_id == response.correlation_id => awaited,
            oldest => {
                let expected = oldest.as_ref().map(|awaited| awaited.correlation_id);
                let ended = Ended::Broken(out_of_order(expected, response.correlation_id));
                if let Some(awaited) = oldest {
                    awaited.reply.fail(ended.error());
                }
                break ended;
            }
        };
        awaited.reply.answer(response);
    };
    if !matches!(ended, Ended::Closed) {
        tracing::debug!(error = %ended.error(), "produce stream ended");
    }
    queue.close();
    for awaited in pending {
        awaited.reply.fail(ended.error());
    }
    while let Some(awaited) = queue.recv().await {
        awaited.reply.fail(ended.error());
    }
}

/// How the broker broke the protocol when an answer to request `got` came
/// while the oldest request awaiting one was `expected` (answers come in
/// request order).
pub(crate) fn out_of_order(expected: Option<u64>, got: u64) -> String {
    match expected {
        None => format!("answer {got} arrived for no request"),
        Some(expected) => format!("expected the answer to request {expected}, got one to {got}"),
    }
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Room for one request: an in-flight permit, and the slots of its awaited
/// answer and of the request itself.
type Reserved<'a> = (
    OwnedSemaphorePermit,
    mpsc::Permit<'a, Awaiting>,
    mpsc::Permit<'a, ProduceRequest>,
);

/// Fills the reserved slots with a request of `batches` and its awaited
/// answer (both reserved before either is filled, so a cancelled sender
/// cannot leave an answer awaited without its request); returns the
/// request's correlation id.
fn dispatch(
    next_correlation_id: &mut u64,
    (permit, awaiting_slot, request_slot): Reserved<'_>,
    reply: Reply,
    batches: Vec<(String, u32, Bytes)>,
) -> u64 {
    let correlation_id = *next_correlation_id;
    *next_correlation_id += 1;
    awaiting_slot.send(Awaiting {
        correlation_id,
        reply,
        sent_at: Instant::now(),
        _permit: permit,
    });
    request_slot.send(request(correlation_id, batches));
    correlation_id
}

fn outcome(
    topic: String,
    partition: u32,
    response: ProduceResponse,
) -> Result<ProduceAck, ClientError> {
    if let Some(error) = response.error {
        return Err(ClientError::rejected(topic, partition, error));
    }
    let mut acks = acks(1, response.results)?;
    acks.pop().expect("acks checked the count")
}
