//! The background task that owns the accumulator and the partition queues:
//! it takes accepted records from the inbox, closes batches, sends them in
//! multi-partition requests, and applies the answers.
//!
//! Invariants: at most `max_in_flight` produce requests are awaiting an
//! answer; a request holds at most one batch per partition; only this task
//! touches batches, so no lock is held around them. The task ends when the
//! inbox is closed (every `Producer` dropped, or `close`) and every
//! accepted record is answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brook_record::NewRecord;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::accumulator::Accumulator;
use super::batch::{Batch, Identity};
use super::error::{acknowledgement_dropped, replicate};
use super::partitioner::Target;
use super::queue::{Outcome, PartitionQueue, Timing};
use super::{RecordMetadata, Shared, TopicPartition};
use crate::error::ClientError;
use crate::produce::ProduceAck;
use crate::resilience::Backoff;

/// Bytes of batches in one produce request (at least one batch goes,
/// whatever its size); well under the client's message limit.
const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A record accepted by `enqueue`, on its way to the accumulator.
#[derive(Debug)]
pub(crate) struct Enqueued {
    pub(crate) topic: Arc<str>,
    pub(crate) target: Target,
    pub(crate) record: NewRecord,
    pub(crate) reply: oneshot::Sender<Result<RecordMetadata, ClientError>>,
    /// The record's share of `buffer_memory`.
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) deadline: Instant,
    /// `batch_size`, or the topic's `max_message_bytes` if smaller.
    pub(crate) batch_bytes_max: usize,
}

#[derive(Debug)]
pub(crate) enum Command {
    Record(Box<Enqueued>),
    /// Send everything accepted so far; answer once all of it is answered.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, then accept nothing more and end.
    Close,
}

/// Something the task waited for.
enum Event {
    Answer {
        batches: Vec<(TopicPartition, u64)>,
        answer: Result<Vec<Result<ProduceAck, ClientError>>, ClientError>,
    },
    Identity(Result<(i64, i16), ClientError>),
}

/// Where idempotent identities come from: one `InitProducerId` call at a
/// time, retried with backoff.
#[derive(Debug, Default)]
struct Identities {
    /// The identity every partition uses unless its sequence broke.
    default: Option<Identity>,
    fetching: bool,
    retry_at: Option<Instant>,
    failures: u32,
}

pub(crate) struct Sender {
    shared: Arc<Shared>,
    /// Accepted records and commands; bounded (see `INBOX_CAPACITY`).
    inbox: mpsc::Receiver<Command>,
    inbox_open: bool,
    accumulator: Accumulator,
    queues: HashMap<TopicPartition, PartitionQueue>,
    /// Produce requests and identity calls awaiting their answer.
    events: FuturesUnordered<BoxFuture<'static, Event>>,
    requests_in_flight: usize,
    identities: Identities,
    /// Flush callers, with the first batch id their flush does not cover.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    backoff: Backoff,
    /// Set once the producer is fenced: every later record fails with it.
    fenced: Option<ClientError>,
}

impl Sender {
    pub(crate) fn new(shared: Arc<Shared>, inbox: mpsc::Receiver<Command>) -> Self {
        let config = shared.config;
        Self {
            inbox,
            inbox_open: true,
            accumulator: Accumulator::new(config.compression, config.linger),
            queues: HashMap::new(),
            events: FuturesUnordered::new(),
            requests_in_flight: 0,
            identities: Identities::default(),
            flushes: Vec::new(),
            backoff: config.backoff(),
            fenced: None,
            shared,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let now = Instant::now();
            self.maintain(now);
            if self.finished() {
                break;
            }
            let wake = self.next_wake(now);
            tokio::select! {
                command = self.inbox.recv(), if self.inbox_open => self.on_command(command),
                Some(event) = self.events.next(), if !self.events.is_empty() => self.on_event(event),
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
        for (_, waiter) in self.flushes.drain(..) {
            let _ = waiter.send(());
        }
        self.shared.finished.send_replace(true);
    }

    fn finished(&self) -> bool {
        !self.inbox_open
            && self.accumulator.is_empty()
            && self.requests_in_flight == 0
            && self.queues.values().all(PartitionQueue::is_empty)
    }

    fn on_command(&mut self, command: Option<Command>) {
        let now = Instant::now();
        let mut next = command;
        // Take what is already waiting before the (linear) maintenance pass,
        // at most INBOX_BURST commands; a command taken is always handled.
        for taken in 1..=INBOX_BURST {
            match next {
                None => {
                    self.inbox_open = false;
                    return;
                }
                Some(Command::Record(enqueued)) => self.accept(*enqueued, now),
                Some(Command::Flush(waiter)) => {
                    self.close_batches_now();
                    self.flushes.push((self.accumulator.next_id(), waiter));
                }
                Some(Command::Close) => {
                    // Records already in the inbox are still taken.
                    self.inbox.close();
                }
            }
            if taken == INBOX_BURST {
                return;
            }
            match self.inbox.try_recv() {
                Ok(command) => next = Some(command),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => next = None,
            }
        }
    }

    fn accept(&mut self, enqueued: Enqueued, now: Instant) {
        if let Some(error) = &self.fenced {
            let _ = enqueued.reply.send(Err(replicate(error)));
            return;
        }
        for (key, batch) in self.accumulator.append(enqueued, now) {
            self.enqueue_batch(key, batch);
        }
    }

    fn close_batches_now(&mut self) {
        for (key, batch) in self.accumulator.close_all() {
            self.enqueue_batch(key, batch);
        }
    }

    fn enqueue_batch(&mut self, key: TopicPartition, batch: Batch) {
        let idempotent = self.shared.config.idempotence;
        self.queues
            .entry(key)
            .or_insert_with(|| PartitionQueue::new(idempotent))
            .push(batch);
    }

    fn maintain(&mut self, now: Instant) {
        if self.inbox_open {
            for (key, batch) in self.accumulator.close_lingering(now) {
                self.enqueue_batch(key, batch);
            }
        } else {
            self.close_batches_now();
        }
        let delivery_timeout = self.shared.config.delivery_timeout;
        for queue in self.queues.values_mut() {
            queue.maintain(now, delivery_timeout);
        }
        self.provide_identities(now);
        while self.requests_in_flight < self.shared.config.max_in_flight {
            if !self.send_request(now) {
                break;
            }
        }
        self.answer_flushes();
    }

    /// When the task must look again without an event: a linger, a retry
    /// backoff, a delivery deadline or an identity retry.
    /// Only instants after `now` count: whatever was due at `now` was done
    /// by `maintain`, or waits for an event (an answer, free room in
    /// flight), and must not make the task spin.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let queues = self.queues.values().filter_map(|q| q.next_wake(now));
        queues
            .chain(self.accumulator.next_linger())
            .chain(self.identities.retry_at)
            .filter(|&wake| wake > now)
            .min()
    }

    /// Builds and sends one request of every partition's next sendable
    /// batch; `false` when there was nothing to send.
    fn send_request(&mut self, now: Instant) -> bool {
        let mut batches = Vec::new();
        let mut keys = Vec::new();
        let mut bytes = 0;
        let mut latest_deadline = now;
        for (key, queue) in &mut self.queues {
            if bytes >= REQUEST_BYTES_MAX {
                break;
            }
            let Some(index) = queue.sendable(now) else {
                continue;
            };
            let (id, batch, deadline) = queue.start_attempt(index);
            bytes += batch.len();
            latest_deadline = latest_deadline.max(deadline);
            batches.push((key.0.to_string(), key.1, batch));
            keys.push((key.clone(), id));
        }
        if batches.is_empty() {
            return false;
        }
        // An attempt never outlives its batches' delivery timeouts.
        let timeout = self
            .shared
            .config
            .request_timeout
            .min(latest_deadline - now)
            .max(Duration::from_millis(1));
        let client = self.shared.client.clone();
        self.requests_in_flight += 1;
        self.events.push(Box::pin(async move {
            let answer = client.produce_many_within(batches, timeout).await;
            Event::Answer {
                batches: keys,
                answer,
            }
        }));
        true
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Answer { batches, answer } => self.on_answer(batches, answer),
            Event::Identity(answer) => self.on_identity(answer),
        }
    }

    fn on_answer(
        &mut self,
        batches: Vec<(TopicPartition, u64)>,
        answer: Result<Vec<Result<ProduceAck, ClientError>>, ClientError>,
    ) {
        self.requests_in_flight -= 1;
        let answers: Vec<Result<ProduceAck, ClientError>> = match answer {
            Ok(answers) => answers,
            Err(error) => batches.iter().map(|_| Err(replicate(&error))).collect(),
        };
        assert_eq!(answers.len(), batches.len(), "one answer per batch sent");
        let timing = Timing {
            now: Instant::now(),
            backoff: self.backoff,
            delivery_timeout: self.shared.config.delivery_timeout,
        };
        for ((key, id), mut answer) in batches.into_iter().zip(answers) {
            if answer.is_ok() && self.shared.take_dropped_acknowledgement() {
                answer = Err(acknowledgement_dropped());
            }
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            match queue.complete(&key.0, key.1, id, answer, timing) {
                Outcome::Done => {}
                Outcome::RefreshMetadata => {
                    self.shared.metadata.lock().remove(&*key.0);
                }
                Outcome::Fenced(error) => self.fence(&error),
            }
        }
    }

    /// The identity was refused: answer everything accepted, and every
    /// record from now on, with `error`.
    fn fence(&mut self, error: &ClientError) {
        if self.fenced.is_some() {
            return;
        }
        tracing::error!(%error, "producer fenced; failing every pending record");
        self.accumulator.fail_all(error);
        for queue in self.queues.values_mut() {
            queue.fail_all(error);
        }
        *self.shared.fenced.lock() = Some(replicate(error));
        self.fenced = Some(replicate(error));
    }

    /// Gives waiting partitions an identity, fetching one if none fits.
    fn provide_identities(&mut self, now: Instant) {
        let mut wants_fresh = false;
        for queue in self.queues.values_mut() {
            match (queue.wants_identity(), self.identities.default) {
                (Some(false), Some(default)) => queue.assign_identity(default),
                (Some(_), _) => wants_fresh = true,
                (None, _) => {}
            }
        }
        let ids = &mut self.identities;
        if !wants_fresh || ids.fetching || ids.retry_at.is_some_and(|at| at > now) {
            return;
        }
        ids.fetching = true;
        ids.retry_at = None;
        let client = self.shared.client.clone();
        self.events.push(Box::pin(async move {
            Event::Identity(client.init_producer_id(-1).await)
        }));
    }

    fn on_identity(&mut self, answer: Result<(i64, i16), ClientError>) {
        self.identities.fetching = false;
        let (producer_id, producer_epoch) = match answer {
            Ok(identity) => identity,
            Err(error) if error.is_retryable() => {
                let delay = self.backoff.delay(self.identities.failures);
                self.identities.failures += 1;
                tracing::debug!(%error, ?delay, "init_producer_id failed; retrying");
                self.identities.retry_at = Some(Instant::now() + delay);
                return;
            }
            Err(error) => return self.fence(&error),
        };
        self.identities.failures = 0;
        let identity = Identity {
            producer_id,
            producer_epoch,
        };
        tracing::debug!(producer_id, producer_epoch, "producer identity assigned");
        if self.identities.default.is_none() {
            self.identities.default = Some(identity);
            return;
        }
        if let Some(queue) = self
            .queues
            .values_mut()
            .find(|q| q.wants_identity() == Some(true))
        {
            queue.assign_identity(identity);
        }
    }

    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest = self
            .queues
            .values()
            .filter_map(PartitionQueue::oldest_unanswered)
            .min()
            .unwrap_or(u64::MAX);
        let (done, waiting) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(covers_below, _)| oldest >= *covers_below);
        self.flushes = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }
}

/// Commands taken from the inbox in one go.
const INBOX_BURST: usize = 256;

async fn sleep_until(wake: Option<Instant>) {
    if let Some(wake) = wake {
        tokio::time::sleep_until(wake.into()).await;
    }
}

impl Shared {
    /// Whether the test hook wants this acknowledgement dropped.
    fn take_dropped_acknowledgement(&self) -> bool {
        self.drop_acknowledgements
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
