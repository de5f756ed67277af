//! The background task that owns the partition queues and the producer's
//! produce streams: it takes batches from the accumulator when they fill
//! up or are due, sends them in multi-partition requests over one ordered
//! stream per broker (`connection.rs`; a broker alone has one), reads the
//! answers and applies them.
//!
//! In a cluster each partition's batches go to the broker that leads it
//! (`crate::routing`): a broker that does not lead a partition refuses its
//! batches naming the leader, and they are sent again there. A partition
//! moves to another broker only while none of its batches is in flight,
//! so its batches never race each other on two streams.
//!
//! Invariants: at most `max_in_flight` produce requests are awaiting an
//! answer on each stream; a request holds at most one batch per partition, and at most
//! `REQUEST_BATCHES_MAX` batches; only this task touches closed batches,
//! so no lock is held around them. A partition's queue exists while it
//! holds batches, or sequence numbers the broker remembers (then until it
//! has been idle for `QUEUE_IDLE_MAX`). The task ends once the producer is
//! closed (`close`, or every `Producer` dropped) and every accepted record
//! is answered; `finished` is set however it ends, a panic included.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brook_proto::ProduceResponse;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::accumulator::{Due, OpenBatch};
use super::batch::Identity;
use super::connection::{self, OPERATION, ProducerStream, Unsent, WireBatch};
use super::error::{acknowledgement_dropped, closed};
use super::queue::{Outcome, PartitionQueue, Timing};
use super::{Shared, TopicPartition};
use crate::error::ClientError;
use crate::produce::{ProduceAck, acks};
use crate::resilience::Backoff;
use crate::stream::stream_closed;

/// The answers to one request of several batches, in request order, or
/// the error that refused (or lost) the request as a whole.
type ManyAcks = Result<Vec<Result<ProduceAck, ClientError>>, ClientError>;

/// How much one produce request carries.
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    /// Bytes of a request: its batches and what frames each (at least one
    /// batch goes, whatever its size).
    bytes_max: usize,
    /// Batches.
    batches_max: usize,
}

/// Bytes a request aims at: big enough to carry many batches per round
/// trip, well under the default message limit.
const REQUEST_BYTES_TARGET: usize = 16 * 1024 * 1024;
/// What a request spends on each batch besides the batch and its topic's
/// name: field tags, lengths and the partition.
const BATCH_FRAMING_BYTES: usize = 32;
/// What a request spends besides its batches (tags, the correlation id),
/// with room to spare.
const REQUEST_FRAMING_BYTES: usize = 64;

const REQUEST_LIMITS: RequestLimits = RequestLimits {
    bytes_max: REQUEST_BYTES_TARGET,
    // The broker's default `produce_batches_max`: it refuses a request
    // with more as a whole.
    batches_max: REQUEST_BATCHES_MAX,
};

impl RequestLimits {
    /// The limits of a request under a gRPC message bound of
    /// `message_bytes_max`: a request that outgrew it could never be sent,
    /// only retried until its batches' delivery timeouts.
    fn within_message(message_bytes_max: usize) -> Self {
        Self {
            bytes_max: REQUEST_LIMITS
                .bytes_max
                .min(message_bytes_max.saturating_sub(REQUEST_FRAMING_BYTES)),
            ..REQUEST_LIMITS
        }
    }
}

/// Batches in one produce request: what a broker takes by default.
const REQUEST_BATCHES_MAX: usize = brook_record::protocol::PRODUCE_BATCHES_MAX_DEFAULT;

/// How long an empty partition queue that remembers sequence numbers is
/// kept after its last batch was queued or answered. Forgetting it costs
/// the default identity (the broker would refuse the partition's sequence
/// starting over), so queues are forgotten in sweeps this far apart: at
/// most one new producer id per sweep.
const QUEUE_IDLE_MAX: Duration = Duration::from_secs(300);

/// How often the leaders may be asked of the cluster, at most.
const DESCRIBE_EVERY: Duration = Duration::from_millis(250);

/// Requests from the producer's handles to the task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Answer once every batch with an id below `covers_below` is answered.
    Flush {
        covers_below: u64,
        waiter: oneshot::Sender<()>,
    },
    /// Test hook: the task panics.
    #[cfg(test)]
    Panic,
}

/// A call the task waits for besides the streams' answers.
enum Event {
    Identity(Result<(i64, i16), ClientError>),
    Connected(Arc<str>, Result<Box<ProducerStream>, ClientError>),
    /// What a broker said of the cluster (leaders learnt as it came).
    Described,
}

/// A broker's produce stream, and the failed attempts to open one since
/// one last answered.
struct Link {
    connection: Connection,
    failures: u32,
}

/// The produce stream requests travel on. The broker appends the requests
/// of one stream in the order they were sent, so a partition's batches in
/// flight together arrive in sequence order (separate calls would race on
/// the broker, and a batch overtaken by a later one is refused as out of
/// order).
enum Connection {
    /// None open: the last one ended, or opening it failed. Opened again
    /// once batches wait and `retry_at` (if any) has passed.
    Closed {
        retry_at: Option<Instant>,
    },
    Opening,
    Open(Box<ProducerStream>),
}

impl Connection {
    /// Whether more requests may be in flight: batches may then leave the
    /// accumulator for their queues, and queued ones be sent once a stream
    /// is open.
    fn has_room(&self) -> bool {
        match self {
            Connection::Open(stream) => stream.has_room(),
            Connection::Closed { .. } | Connection::Opening => true,
        }
    }
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

/// What the task saw of the accumulator when it last took batches.
#[derive(Debug, Clone, Copy, Default)]
struct AccumulatorView {
    /// The producer accepts nothing more.
    closed: bool,
    /// No open batch is left.
    empty: bool,
    /// The smallest id of a batch still in it.
    oldest_id: Option<u64>,
    /// When an open batch's linger or delivery timeout runs out.
    next_wake: Option<Instant>,
}

pub(crate) struct Sender {
    shared: Arc<Shared>,
    /// Flush requests; closed once every handle is gone.
    control: mpsc::Receiver<Control>,
    control_open: bool,
    accumulator: AccumulatorView,
    queues: HashMap<TopicPartition, PartitionQueue>,
    /// Identity calls and the opening of the stream, awaiting their answer.
    events: FuturesUnordered<BoxFuture<'static, Event>>,
    /// A stream per broker address.
    links: HashMap<Arc<str>, Link>,
    /// Where each partition's batches go now.
    targets: HashMap<TopicPartition, Arc<str>>,
    /// Partitions whose target refused a batch naming another leader:
    /// nothing more goes to the target, and each is pointed at its leader
    /// once its requests in flight are answered. (Sent at once to the
    /// target, a refused batch was refused again behind the requests still
    /// in flight there, and again, until its delivery timeout.)
    led_elsewhere: HashSet<TopicPartition>,
    /// A `DescribeCluster` is on its way, or may be asked again after this.
    describing: bool,
    describe_after: Option<Instant>,
    identities: Identities,
    /// Flush callers, with the first batch id their flush does not cover.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    backoff: Backoff,
    /// Set once the producer is fenced.
    fenced: bool,
    /// When idle queues that remember sequence numbers are next forgotten.
    next_sweep: Instant,
}

/// Closes the producer and answers what the accumulator holds when the
/// task ends, however it ends (the queues answer their batches as they
/// drop), then sets `finished`: `flush` and `close` wait for it, and must
/// not wait forever after a panic.
struct FinishedOnDrop(Arc<Shared>);

impl Drop for FinishedOnDrop {
    fn drop(&mut self) {
        {
            let mut state = self.0.state.lock();
            state.closed = true;
            state.accumulator.fail_all(&closed());
        }
        self.0.finished.send_replace(true);
    }
}

/// One request's worth of batches.
struct Request {
    batches: Vec<WireBatch>,
    /// How many of them were sent before.
    resent: usize,
    /// The partition and id of each batch, in request order.
    sent: Vec<(TopicPartition, u64)>,
    /// The latest delivery deadline of its batches.
    latest_deadline: Instant,
}

impl Sender {
    pub(crate) fn new(shared: Arc<Shared>, control: mpsc::Receiver<Control>) -> Self {
        let config = shared.config;
        Self {
            control,
            control_open: true,
            accumulator: AccumulatorView::default(),
            queues: HashMap::new(),
            events: FuturesUnordered::new(),
            links: HashMap::new(),
            targets: HashMap::new(),
            led_elsewhere: HashSet::new(),
            describing: false,
            describe_after: None,
            identities: Identities::default(),
            flushes: Vec::new(),
            backoff: config.backoff(),
            fenced: false,
            next_sweep: Instant::now() + QUEUE_IDLE_MAX,
            shared,
        }
    }

    pub(crate) async fn run(self) {
        // Declared before the task's state, so dropped after it: the
        // queues answer their batches before `finished` is set.
        let _finished = FinishedOnDrop(self.shared.clone());
        let mut task = self;
        task.run_until_finished().await;
    }

    async fn run_until_finished(&mut self) {
        let shared = self.shared.clone();
        // In a cluster: every partition's leader, and the brokers to ask
        // when the one connected to goes away.
        self.describe_cluster();
        loop {
            let now = Instant::now();
            self.maintain(now);
            if self.finished() {
                break;
            }
            let wake = self.next_wake(now);
            tokio::select! {
                request = self.control.recv(), if self.control_open => self.on_control(request),
                () = shared.wake.notified() => {}
                Some(event) = self.events.next(), if !self.events.is_empty() => self.on_event(event),
                (target, message) = next_message(&mut self.links),
                    if self.links.values().any(|link| matches!(link.connection, Connection::Open(_))) =>
                {
                    self.on_message(&target, message);
                }
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
        for (_, waiter) in self.flushes.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn finished(&self) -> bool {
        self.accumulator.closed
            && self.accumulator.empty
            && self.links.values().all(|link| match &link.connection {
                Connection::Open(stream) => !stream.has_live_requests(),
                Connection::Closed { .. } | Connection::Opening => true,
            })
            && self.queues.values().all(PartitionQueue::is_empty)
    }

    /// Where `key`'s batches go: where they went while any is in flight,
    /// else its leader as known now.
    fn target_of(&self, key: &TopicPartition) -> Arc<str> {
        match self.targets.get(key) {
            Some(target) => target.clone(),
            None => self
                .shared
                .client
                .routing
                .target(key, &self.shared.client.endpoint),
        }
    }

    /// Points every partition with nothing in flight at its leader as
    /// known now.
    fn route_queues(&mut self) {
        let client = &self.shared.client;
        self.targets.retain(|key, _| self.queues.contains_key(key));
        self.led_elsewhere
            .retain(|key| self.queues.contains_key(key));
        for (key, queue) in &self.queues {
            if queue.in_flight() == 0 {
                let target = client.routing.target(key, &client.endpoint);
                self.targets.insert(key.clone(), target);
                self.led_elsewhere.remove(key);
            }
        }
    }

    /// Whether the stream `key`'s batches go to has room for more.
    fn has_room_for(&self, key: &TopicPartition) -> bool {
        self.links
            .get(&self.target_of(key))
            .is_none_or(|link| link.connection.has_room())
    }

    fn on_control(&mut self, request: Option<Control>) {
        match request {
            // Every handle is gone; it closed the producer as it went.
            None => self.control_open = false,
            Some(Control::Flush {
                covers_below,
                waiter,
            }) => self.flushes.push((covers_below, waiter)),
            #[cfg(test)]
            Some(Control::Panic) => panic!("test hook: the sender task panics"),
        }
    }

    /// Moves the batches that are full, or due and sendable now, from the
    /// accumulator to their partition queues.
    fn take_batches(&mut self, now: Instant) {
        let taken = {
            let mut state = self.shared.state.lock();
            let due = Due {
                now,
                all: state.closed || self.shared.buffer.has_waiters(),
            };
            let queues = &self.queues;
            let taken = state.accumulator.take(due, |key| {
                self.has_room_for(key) && queues.get(key).is_none_or(PartitionQueue::wants_batch)
            });
            self.accumulator = AccumulatorView {
                closed: state.closed,
                empty: state.accumulator.is_empty(),
                oldest_id: state.accumulator.oldest_id(),
                next_wake: state.accumulator.next_wake(now),
            };
            taken
        };
        for (key, open) in taken {
            self.enqueue_batch(key, open, now);
        }
    }

    fn enqueue_batch(&mut self, key: TopicPartition, open: OpenBatch, now: Instant) {
        // Encoding may fail (too large to compress): its records are answered.
        let Some(batch) = open.close() else {
            return;
        };
        let idempotent = self.shared.config.idempotence;
        self.queues
            .entry(key)
            .or_insert_with_key(|key| PartitionQueue::new(&key.0, idempotent, now))
            .push(batch, now);
    }

    fn maintain(&mut self, now: Instant) {
        self.check_answers_due(now);
        self.take_batches(now);
        let delivery_timeout = self.shared.config.delivery_timeout;
        for queue in self.queues.values_mut() {
            queue.maintain(now, delivery_timeout);
        }
        let sweep = now >= self.next_sweep;
        if sweep {
            self.next_sweep = now + QUEUE_IDLE_MAX;
        }
        if forget_queues(&mut self.queues, now, sweep) {
            // A forgotten partition may come back; under the default
            // identity it would start its sequence over, which the broker
            // refuses. Partitions from now on get a new identity.
            tracing::debug!("idle partitions forgotten; retiring the default producer identity");
            self.identities.default = None;
        }
        self.route_queues();
        self.provide_identities(now);
        self.connect(now);
        if self.send_requests(now) {
            // Room may be left: batches that waited for it may go now.
            self.take_batches(now);
            self.route_queues();
            self.send_requests(now);
        }
        self.answer_flushes();
    }

    /// Sends requests on every open stream while it has room in flight and
    /// something to send; whether any went.
    fn send_requests(&mut self, now: Instant) -> bool {
        let targets: Vec<Arc<str>> = self.links.keys().cloned().collect();
        let mut sent = false;
        for target in targets {
            while self.links.get(&target).is_some_and(
                |link| matches!(&link.connection, Connection::Open(stream) if stream.has_room()),
            ) && self.send_request(&target, now)
            {
                sent = true;
            }
        }
        sent
    }

    /// When the task must look again without an event: a linger, a retry
    /// backoff, a delivery deadline or an identity retry.
    /// Only instants after `now` count: whatever was due at `now` was done
    /// by `maintain`, or waits for an event (an answer, free room in
    /// flight), and must not make the task spin.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let queues = self.queues.values().filter_map(|q| q.next_wake(now));
        let request_timeout = self.shared.client.options.request_timeout;
        let links = self
            .links
            .values()
            .filter_map(|link| match &link.connection {
                Connection::Closed { retry_at } => *retry_at,
                Connection::Open(stream) => stream.next_deadline(request_timeout),
                Connection::Opening => None,
            });
        queues
            .chain(self.accumulator.next_wake)
            .chain(self.identities.retry_at)
            .chain(links)
            .filter(|&wake| wake > now)
            .min()
    }

    /// Builds and sends one request of every partition's next sendable
    /// batch; `false` when there was nothing to send.
    fn send_request(&mut self, target: &Arc<str>, now: Instant) -> bool {
        let Some(Link {
            connection: Connection::Open(stream),
            ..
        }) = self.links.get_mut(target)
        else {
            return false;
        };
        let targets = &self.targets;
        let led_elsewhere = &self.led_elsewhere;
        let Request {
            batches,
            resent,
            sent: keys,
            latest_deadline,
        } = gather(
            &mut self.queues,
            |key| targets.get(key) == Some(target) && !led_elsewhere.contains(key),
            now,
            RequestLimits::within_message(self.shared.client.options.message_bytes_max),
        );
        if batches.is_empty() {
            return false;
        }
        self.shared
            .resent_batches
            .fetch_add(resent as u64, Ordering::Relaxed);
        // An attempt is not awaited past its batches' delivery timeouts.
        match stream.send(batches, keys, latest_deadline, now) {
            Ok(()) => {}
            // This request did not go out; the answers to earlier ones may
            // still be on their way, so the stream is read to its end
            // (`on_message`) instead of being closed under them.
            Err(Unsent::Closed(keys)) => self.on_answer(keys, Err(stream_closed())),
            Err(Unsent::Broken(keys)) => {
                self.on_answer(keys, Err(stream_closed()));
                self.end_stream(
                    target,
                    &ClientError::Protocol(
                        "the broker answered requests it had not read".to_owned(),
                    ),
                );
            }
        }
        true
    }

    /// Applies what came on the stream: an answer to its oldest request,
    /// or the end of the stream.
    fn on_message(
        &mut self,
        target: &Arc<str>,
        message: Result<Option<ProduceResponse>, tonic::Status>,
    ) {
        let Some(Link {
            connection: Connection::Open(stream),
            failures,
        }) = self.links.get_mut(target)
        else {
            return;
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return self.end_stream(target, &stream_closed()),
            Err(status) => {
                return self.end_stream(target, &ClientError::status(OPERATION, status));
            }
        };
        let request = match stream.answered(&response) {
            Ok(request) => request,
            Err(why) => return self.end_stream(target, &ClientError::Protocol(why)),
        };
        *failures = 0;
        if request.batches.is_empty() {
            // Given up at its delivery timeouts: its batches were answered.
            return;
        }
        let answer = match response.error {
            Some(error) => Err(ClientError::refused(OPERATION, error)),
            None => acks(request.batches.len(), response.results),
        };
        let cut_off = answer.as_ref().is_ok_and(|answers| {
            answers
                .iter()
                .any(|answer| answer.as_ref().is_err_and(ClientError::is_cut_off_leader))
        });
        let target = target.clone();
        self.on_answer(request.batches, answer);
        if cut_off {
            // It may lead nothing by now, and names itself the leader
            // while it cannot hear the others: the others are asked.
            self.broker_failed(&target);
        }
    }

    /// Closes the stream, failing every request still awaiting its answer
    /// with `error` (if retryable: a stream that ended under a request
    /// never refused it; it may or may not have been appended). Another
    /// stream is opened at once if this one answered anything, else after
    /// a backoff, so a broker that ends every stream at once is not asked
    /// again at the round-trip rate.
    fn end_stream(&mut self, target: &Arc<str>, error: &ClientError) {
        let Some(link) = self.links.get_mut(target) else {
            return;
        };
        let Connection::Open(stream) =
            std::mem::replace(&mut link.connection, Connection::Closed { retry_at: None })
        else {
            return;
        };
        if !stream.answered_any() {
            let delay = self.backoff.delay(link.failures);
            link.failures += 1;
            link.connection = Connection::Closed {
                retry_at: Some(crate::deadline::after(Instant::now(), delay)),
            };
        }
        // The broker may be gone: its partitions' leaders are asked of the
        // others.
        self.broker_failed(target);
        tracing::debug!(%error, "produce stream ended; opening another");
        let error = if error.is_retryable() {
            error.clone()
        } else {
            stream_closed()
        };
        for batches in stream.close() {
            self.on_answer(batches, Err(error.clone()));
        }
    }

    /// Answers the batches of requests sent longer ago than their delivery
    /// timeouts (as timed out: they expire), and ends a stream whose oldest
    /// answer is later than the request timeout: answers come in order, so
    /// every later one waits behind it.
    fn check_answers_due(&mut self, now: Instant) {
        let targets: Vec<Arc<str>> = self.links.keys().cloned().collect();
        for target in targets {
            self.check_answers_due_on(&target, now);
        }
    }

    fn check_answers_due_on(&mut self, target: &Arc<str>, now: Instant) {
        let request_timeout = self.shared.client.options.request_timeout;
        let Some(Link {
            connection: Connection::Open(stream),
            ..
        }) = self.links.get_mut(target)
        else {
            return;
        };
        let timed_out = |after| ClientError::Timeout {
            operation: OPERATION,
            after,
        };
        let given_up = stream.give_up(now);
        let late = stream.is_late(now, request_timeout);
        // A draining stream with nothing left to answer is done.
        let drained = stream.is_draining() && stream.in_flight() == 0;
        if !given_up.is_empty() {
            let delivery_timeout = self.shared.config.delivery_timeout;
            self.on_answer(given_up, Err(timed_out(delivery_timeout)));
        }
        if late {
            self.end_stream(target, &timed_out(request_timeout));
        } else if drained {
            self.end_stream(target, &stream_closed());
        }
    }

    /// Opens a produce stream to each broker that batches wait for and
    /// that has none open (or whose last one ended).
    fn connect(&mut self, now: Instant) {
        let mut wanted: Vec<Arc<str>> = self
            .queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(key, _)| self.target_of(key))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for target in wanted {
            let link = self.links.entry(target.clone()).or_insert(Link {
                connection: Connection::Closed { retry_at: None },
                failures: 0,
            });
            let Connection::Closed { retry_at } = link.connection else {
                continue;
            };
            if retry_at.is_some_and(|at| at > now) {
                continue;
            }
            link.connection = Connection::Opening;
            let client = self.shared.client.clone();
            let capacity = self.shared.config.max_in_flight;
            self.events.push(Box::pin(async move {
                let opened = match client.at(&target).await {
                    Ok(broker) => connection::open(&broker, capacity).await,
                    Err(error) => Err(error),
                };
                Event::Connected(target, opened)
            }));
        }
    }

    fn on_connected(
        &mut self,
        target: &Arc<str>,
        opened: Result<Box<ProducerStream>, ClientError>,
    ) {
        let link = self.links.entry(target.clone()).or_insert(Link {
            connection: Connection::Closed { retry_at: None },
            failures: 0,
        });
        match opened {
            // Failures are forgotten at the stream's first answer.
            Ok(stream) => link.connection = Connection::Open(stream),
            Err(error) => {
                let delay = self.backoff.delay(link.failures);
                link.failures += 1;
                link.connection = Connection::Closed {
                    retry_at: Some(crate::deadline::after(Instant::now(), delay)),
                };
                if error.is_retryable() {
                    tracing::debug!(%error, ?delay, broker = %target, "opening the produce stream failed; retrying");
                    self.broker_failed(target);
                    return;
                }
                // The broker refuses the stream itself: waiting for the
                // delivery timeout would not change its mind.
                tracing::warn!(%error, broker = %target, "the broker refused the produce stream; failing the queued batches");
                for (key, queue) in &mut self.queues {
                    if self.targets.get(key) == Some(target) {
                        queue.fail_all(&error);
                    }
                }
            }
        }
    }

    /// A broker could not be reached: in a cluster, its partitions' leaders
    /// are asked of the others (each partition moves once its batches in
    /// flight there are answered).
    fn broker_failed(&mut self, target: &Arc<str>) {
        self.shared.client.routing.failed(target);
        self.describe_cluster();
    }

    /// Asks a broker for every partition's leader, at most every
    /// `DESCRIBE_EVERY`.
    fn describe_cluster(&mut self) {
        let now = Instant::now();
        if self.describing || self.describe_after.is_some_and(|after| after > now) {
            return;
        }
        self.describing = true;
        self.describe_after = Some(now + DESCRIBE_EVERY);
        let client = self.shared.client.clone();
        self.events.push(Box::pin(async move {
            let broker = client.routing.any_broker(&client.endpoint);
            if let Ok(broker) = client.at(&broker).await
                && let Ok(cluster) = broker.describe_cluster().await
            {
                client.routing.learn_cluster(&cluster);
            }
            Event::Described
        }));
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Identity(answer) => self.on_identity(answer),
            Event::Connected(target, opened) => self.on_connected(&target, opened),
            Event::Described => self.describing = false,
        }
    }

    fn on_answer(&mut self, batches: Vec<(TopicPartition, u64)>, answer: ManyAcks) {
        let answers: Vec<Result<ProduceAck, ClientError>> = match answer {
            Ok(answers) => answers,
            // The broker checks every batch before appending any: one bad
            // batch refuses them all. Sent alone, only the culprit fails.
            // (Only on the broker's refusal: a garbled answer may hide
            // appends.)
            Err(error @ ClientError::Status { .. })
                if batches.len() > 1 && !error.is_retryable() =>
            {
                tracing::debug!(
                    %error,
                    batches = batches.len(),
                    "produce request refused as a whole; sending its batches one per request"
                );
                let now = Instant::now();
                for (key, id) in &batches {
                    if let Some(queue) = self.queues.get_mut(key) {
                        queue.send_alone(*id, now);
                    }
                }
                return;
            }
            Err(error) => batches.iter().map(|_| Err(error.clone())).collect(),
        };
        assert_eq!(answers.len(), batches.len(), "one answer per batch sent");
        let timing = Timing {
            now: Instant::now(),
            backoff: self.backoff,
            delivery_timeout: self.shared.config.delivery_timeout,
        };
        let mut ask_leaders = false;
        for ((key, id), mut answer) in batches.into_iter().zip(answers) {
            if answer.is_ok() && self.shared.take_dropped_acknowledgement() {
                answer = Err(acknowledgement_dropped());
            }
            if let Err(error) = &mut answer {
                // In a cluster: the broker does not lead the partition.
                match error.leader().map(Arc::<str>::from) {
                    Some(leader) if self.shared.client.routing.learn(&key.0, key.1, &leader) => {
                        if self.targets.get(&key) != Some(&leader) {
                            self.led_elsewhere.insert(key.clone());
                        }
                        // A stream to it that failed before is tried at once.
                        if let Some(link) = self.links.get_mut(&leader)
                            && matches!(link.connection, Connection::Closed { .. })
                        {
                            link.connection = Connection::Closed { retry_at: None };
                        }
                    }
                    Some(_) => {
                        // Named, and unreachable a moment ago: as if none were.
                        error.forget_leader();
                        ask_leaders = true;
                    }
                    None => ask_leaders |= error.is_not_leader(),
                }
            }
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            match queue.complete(&key.0, key.1, id, answer, timing) {
                Outcome::Done => {}
                Outcome::RefreshMetadata => {
                    self.shared.state.lock().metadata.remove(&key.0);
                }
                Outcome::Fenced(error) => self.fence(&error),
            }
        }
        if ask_leaders {
            self.describe_cluster();
        }
    }

    /// The identity was refused: answer everything accepted, and every
    /// record from now on, with `error`.
    fn fence(&mut self, error: &ClientError) {
        if self.fenced {
            return;
        }
        tracing::error!(%error, "producer fenced; failing every pending record");
        self.fenced = true;
        {
            let mut state = self.shared.state.lock();
            state.fenced = Some(error.clone());
            state.accumulator.fail_all(error);
        }
        for queue in self.queues.values_mut() {
            queue.fail_all(error);
        }
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
            // Any broker hands out ids; one that answers is asked.
            let broker = client.routing.any_broker(&client.endpoint);
            let answer = match client.at(&broker).await {
                Ok(broker) => broker.init_producer_id(-1).await,
                Err(error) => Err(error),
            };
            Event::Identity(answer)
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
                self.identities.retry_at = Some(crate::deadline::after(Instant::now(), delay));
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
            .chain(self.accumulator.oldest_id)
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

/// Takes every partition's next sendable batch, within `limits`. A batch
/// that must go alone goes only in an otherwise empty request, and ends it.
fn gather(
    queues: &mut HashMap<TopicPartition, PartitionQueue>,
    belongs: impl Fn(&TopicPartition) -> bool,
    now: Instant,
    limits: RequestLimits,
) -> Request {
    let mut request = Request {
        batches: Vec::new(),
        sent: Vec::new(),
        latest_deadline: now,
        resent: 0,
    };
    let mut bytes = 0;
    for (key, queue) in queues {
        if bytes >= limits.bytes_max || request.batches.len() >= limits.batches_max {
            break;
        }
        if !belongs(key) {
            continue;
        }
        let Some(index) = queue.sendable(now) else {
            continue;
        };
        let alone = queue.goes_alone(index);
        if alone && !request.batches.is_empty() {
            continue;
        }
        let cost = queue.batch_len(index) + queue.topic().len() + BATCH_FRAMING_BYTES;
        if !request.batches.is_empty() && bytes + cost > limits.bytes_max {
            // It goes in a later request; one that fits may still come.
            continue;
        }
        request.resent += usize::from(queue.was_sent(index));
        let (id, batch, deadline) = queue.start_attempt(index);
        bytes += cost;
        request.latest_deadline = request.latest_deadline.max(deadline);
        request.batches.push(WireBatch {
            topic: queue.topic().clone(),
            partition: key.1,
            batch,
        });
        request.sent.push((key.clone(), id));
        if alone {
            break;
        }
    }
    request
}

/// Drops the queues not worth keeping: empty ones that remember nothing,
/// and, when `sweep`, empty ones idle for `QUEUE_IDLE_MAX`. Returns whether
/// a queue that remembered sequence numbers was dropped.
fn forget_queues(
    queues: &mut HashMap<TopicPartition, PartitionQueue>,
    now: Instant,
    sweep: bool,
) -> bool {
    let mut forgot_sequences = false;
    queues.retain(|_, queue| {
        if !queue.is_empty() {
            return true;
        }
        if !queue.holds_sequence_state() {
            return false;
        }
        let idle = sweep && now.duration_since(queue.last_active()) >= QUEUE_IDLE_MAX;
        forgot_sequences |= idle;
        !idle
    });
    forgot_sequences
}

/// The next message of any open stream, with its broker; never, without
/// an open stream.
async fn next_message(
    links: &mut HashMap<Arc<str>, Link>,
) -> (Arc<str>, Result<Option<ProduceResponse>, tonic::Status>) {
    let messages: Vec<_> = links
        .iter_mut()
        .filter_map(|(target, link)| match &mut link.connection {
            Connection::Open(stream) => {
                Some(Box::pin(
                    async move { (target.clone(), stream.message().await) },
                ))
            }
            Connection::Closed { .. } | Connection::Opening => None,
        })
        .collect();
    if messages.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(messages).await.0
}

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

#[cfg(test)]
mod tests;
