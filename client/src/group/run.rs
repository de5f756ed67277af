//! `run`: at-least-once consumption with handlers. One worker task per owned
//! partition runs the handler on its records in order, one at a time; a
//! semaphore bounds the handlers running at once across partitions. The
//! dispatcher (the `run` future) hands records to the workers, follows the
//! session's events and commits.
//!
//! Invariants: a partition's committable offset (`done`) is one past the
//! last record whose handler succeeded (or that the failure policy disposed
//! of), or past the last batch skipped as undecodable, and every record
//! before it was disposed of too, because a worker takes its partition's
//! deliveries (records and skipped batches) in offset order and one at a
//! time; only such offsets are committed. On revocation, shutdown or failure a worker
//! finishes the handler in flight and starts no other. Each worker queue
//! holds at most `max_poll_records`; the dispatcher holds one record more.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::client::{PartitionOffset, TopicPartition};
use super::config::{FailurePolicy, GroupConfig};
use super::error::{GroupError, HandlerError};
use super::member::{Committer, Member, Stop, Work};
use super::session::SessionHandle;
use crate::consumer::{ConsumedRecord, Delivery};
use crate::producer::{Producer, ProducerConfig, ProducerRecord};
use crate::resilience::Backoff;
use crate::undecodable::SkippedCallback;

/// A handler, type-erased.
pub(crate) type DynHandler = Arc<
    dyn Fn(ConsumedRecord) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// Nothing handled yet on a partition.
const NOTHING: i64 = -1;

/// What every worker shares.
struct Context {
    handler: DynHandler,
    retries: u32,
    backoff: Backoff,
    policy: FailurePolicy,
    dead_letters: Option<Producer>,
    /// Told of each skipped batch, in order with the partition's handlers.
    on_skipped: Option<SkippedCallback>,
    /// Handlers running at once, across partitions: `max_concurrency`.
    running: Semaphore,
    /// The first `Fail` of any worker; the dispatcher stops on it.
    failure: Mutex<Option<GroupError>>,
    /// Wakes the dispatcher when `failure` was set.
    failed: Notify,
}

/// One partition's worker.
struct Worker {
    /// Its records and skipped batches; bounded by `max_poll_records`.
    records: mpsc::Sender<Delivery>,
    stop: watch::Sender<bool>,
    /// One past the last record disposed of; `NOTHING` before the first.
    done: Arc<AtomicI64>,
    task: JoinHandle<()>,
}

/// The workers of the owned partitions and their commit state.
struct Workers {
    context: Arc<Context>,
    queue_records: usize,
    active: HashMap<TopicPartition, Worker>,
    /// The last offset committed per owned partition, where known.
    committed: HashMap<TopicPartition, i64>,
    /// A delivery taken from the consumer whose worker queue was full.
    pending: Option<Delivery>,
}

pub(crate) struct Runner {
    member: Member,
    session: SessionHandle,
    stop: watch::Receiver<Stop>,
    /// Kept so that `stop` never closes (a closed watch is always "changed").
    _stop_sender: Arc<watch::Sender<Stop>>,
    commit_interval: Duration,
    workers: Workers,
}

/// How the dispatcher loop ended.
enum Exit {
    Done(Result<(), GroupError>),
    Abort,
}

impl Runner {
    pub fn new(
        member: Member,
        session: SessionHandle,
        stop: Arc<watch::Sender<Stop>>,
        config: &GroupConfig,
        handler: DynHandler,
        first: Option<ConsumedRecord>,
    ) -> Self {
        let dead_letters = match &config.failure_policy {
            FailurePolicy::DeadLetter { .. } => Some(Producer::new(
                member.committer.client.client().clone(),
                ProducerConfig::default(),
            )),
            FailurePolicy::Skip | FailurePolicy::Fail => None,
        };
        let on_skipped = member.committer.callbacks.lock().skipped.clone();
        let context = Arc::new(Context {
            handler,
            retries: config.handler_retries,
            backoff: config.retry_backoff,
            policy: config.failure_policy.clone(),
            dead_letters,
            on_skipped,
            running: Semaphore::new(config.max_concurrency),
            failure: Mutex::new(None),
            failed: Notify::new(),
        });
        let mut workers = Workers {
            context,
            queue_records: config.max_poll_records,
            active: HashMap::new(),
            committed: HashMap::new(),
            pending: None,
        };
        // Partitions assigned while the member was used as a stream.
        let owned: Vec<(TopicPartition, Option<i64>)> = member
            .committer
            .identity
            .lock()
            .owned
            .iter()
            .map(|p| (p.clone(), None))
            .collect();
        workers.assign(&owned);
        workers.pending = first.map(Delivery::Record);
        Self {
            member,
            session,
            stop: stop.subscribe(),
            _stop_sender: stop,
            commit_interval: config.commit_interval,
            workers,
        }
    }

    pub async fn run(mut self) -> Result<(), GroupError> {
        let result = match self.dispatch().await {
            Exit::Abort => {
                for worker in self.workers.active.values() {
                    worker.task.abort();
                }
                self.session.abort();
                return Ok(());
            }
            Exit::Done(result) => result,
        };
        let owned: Vec<TopicPartition> = self.workers.active.keys().cloned().collect();
        self.workers
            .revoke(&self.member.committer, &owned, false)
            .await;
        self.session.leave().await;
        if let Some(producer) = &self.workers.context.dead_letters {
            producer.close().await;
        }
        result
    }

    /// Hands records to workers and follows the session until asked to
    /// stop or something fails.
    async fn dispatch(&mut self) -> Exit {
        let mut tick = tokio::time::interval_at(
            crate::deadline::after_tokio(tokio::time::Instant::now(), self.commit_interval),
            self.commit_interval,
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let context = self.workers.context.clone();
        loop {
            match *self.stop.borrow_and_update() {
                Stop::Run => {}
                Stop::Shutdown => return Exit::Done(Ok(())),
                Stop::Abort => return Exit::Abort,
            }
            let target = self.workers.pending_target();
            tokio::select! {
                biased;
                _ = self.stop.changed() => {}
                error = failure(&context) => return Exit::Done(Err(error)),
                event = self.member.events.recv() => {
                    let Some(event) = event else {
                        return Exit::Done(Err(GroupError::Closed));
                    };
                    if let Err(error) = self.member.handle_event(event, &mut self.workers).await {
                        return Exit::Done(Err(error));
                    }
                }
                _ = tick.tick() => self.workers.commit(&self.member.committer).await,
                permit = reserve(target.clone()), if target.is_some() => {
                    let record = self.workers.pending.take().expect("a pending record has a target");
                    if let Ok(permit) = permit {
                        permit.send(record);
                    }
                }
                delivery = self.member.consumer.next_delivery(), if self.workers.pending.is_none() => {
                    match delivery {
                        Some(Ok(delivery)) => self.workers.pending = Some(delivery),
                        Some(Err(error)) => return Exit::Done(Err(error.into())),
                        None => return Exit::Done(Err(GroupError::Closed)),
                    }
                }
            }
        }
    }
}

/// The first failure a worker reported.
async fn failure(context: &Context) -> GroupError {
    loop {
        let notified = context.failed.notified();
        if let Some(error) = context.failure.lock().take() {
            return error;
        }
        notified.await;
    }
}

/// Room in a worker's queue; never ready without a target.
async fn reserve(
    target: Option<mpsc::Sender<Delivery>>,
) -> Result<mpsc::OwnedPermit<Delivery>, mpsc::error::SendError<()>> {
    match target {
        Some(sender) => sender.reserve_owned().await,
        None => std::future::pending().await,
    }
}

impl Workers {
    /// The queue of the pending record's partition. A record of a partition
    /// without a worker cannot be (records come only from owned
    /// partitions); it would be dropped, as one of a revoked partition is.
    fn pending_target(&mut self) -> Option<mpsc::Sender<Delivery>> {
        let (topic, partition) = delivered_from(self.pending.as_ref()?);
        let key = TopicPartition::new(topic, partition);
        let target = self.active.get(&key).map(|w| w.records.clone());
        if target.is_none() {
            self.pending = None;
        }
        target
    }

    /// Offsets of `partitions` (all if `None`) finished since their last commit.
    fn finished(&self, partitions: Option<&[TopicPartition]>) -> Vec<PartitionOffset> {
        let mut offsets = Vec::new();
        for (partition, worker) in &self.active {
            if partitions.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            let done = worker.done.load(Ordering::Acquire);
            if done != NOTHING && self.committed.get(partition) != Some(&done) {
                offsets.push(PartitionOffset {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    offset: done,
                });
            }
        }
        offsets
    }

    /// Commits what was finished; a failure is logged, and the offsets are
    /// tried again at the next commit.
    async fn commit_some(&mut self, committer: &Committer, partitions: Option<&[TopicPartition]>) {
        let offsets = self.finished(partitions);
        if offsets.is_empty() {
            return;
        }
        match committer.commit(&offsets).await {
            Ok(()) => {
                for offset in offsets {
                    self.committed
                        .insert(offset.topic_partition(), offset.offset);
                }
            }
            Err(error) if error.is_fenced() => {
                tracing::debug!(group = %committer.group, %error, "commit fenced; a rebalance is under way");
            }
            Err(error) => {
                tracing::warn!(group = %committer.group, %error, "commit failed; retrying at the next");
            }
        }
    }

    async fn commit(&mut self, committer: &Committer) {
        self.commit_some(committer, None).await;
    }
}

impl Work for Workers {
    async fn revoke(&mut self, committer: &Committer, partitions: &[TopicPartition], lost: bool) {
        if self.pending.as_ref().is_some_and(|delivery| {
            let (topic, partition) = delivered_from(delivery);
            partitions.contains(&TopicPartition::new(topic, partition))
        }) {
            self.pending = None;
        }
        for partition in partitions {
            if let Some(worker) = self.active.get(partition) {
                worker.stop.send_replace(true);
            }
        }
        for partition in partitions {
            if let Some(worker) = self.active.get_mut(partition)
                && let Err(error) = (&mut worker.task).await
                && error.is_panic()
            {
                tracing::error!(%partition, "partition worker panicked");
            }
        }
        if !lost {
            self.commit_some(committer, Some(partitions)).await;
        }
        for partition in partitions {
            self.active.remove(partition);
            self.committed.remove(partition);
        }
    }

    fn assign(&mut self, partitions: &[(TopicPartition, Option<i64>)]) {
        for (partition, committed) in partitions {
            let (records, records_rx) = mpsc::channel(self.queue_records);
            let (stop, stop_rx) = watch::channel(false);
            let done = Arc::new(AtomicI64::new(NOTHING));
            let task = tokio::spawn(work(
                self.context.clone(),
                records_rx,
                stop_rx,
                done.clone(),
            ));
            if let Some(old) = self.active.insert(
                partition.clone(),
                Worker {
                    records,
                    stop,
                    done,
                    task,
                },
            ) {
                // Cannot be (a partition is revoked before it is assigned
                // again); the old worker must not keep going.
                old.task.abort();
            }
            match committed {
                Some(offset) => self.committed.insert(partition.clone(), *offset),
                None => self.committed.remove(partition),
            };
        }
    }
}

/// The partition a delivery comes from.
fn delivered_from(delivery: &Delivery) -> (&str, u32) {
    match delivery {
        Delivery::Record(record) => (&record.topic, record.partition),
        Delivery::Skipped(batch) => (&batch.topic, batch.partition),
    }
}

/// What became of one record.
enum Disposed {
    /// Handled, skipped or dead-lettered: its offset may be committed.
    Done,
    /// Asked to stop before it was disposed of.
    Stopped,
    /// `Fail` policy, or a failed dead-letter send.
    Failed(GroupError),
}

/// One partition's worker: its records in order, one at a time; a skipped
/// batch is reported and counts as done.
async fn work(
    context: Arc<Context>,
    mut records: mpsc::Receiver<Delivery>,
    mut stop: watch::Receiver<bool>,
    done: Arc<AtomicI64>,
) {
    loop {
        let record = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            delivery = records.recv() => match delivery {
                Some(Delivery::Record(record)) => record,
                Some(Delivery::Skipped(batch)) => {
                    if let Some(callback) = &context.on_skipped {
                        callback(&batch);
                    }
                    done.store(batch.last_offset + 1, Ordering::Release);
                    continue;
                }
                None => return,
            },
        };
        let offset = record.record.offset;
        match dispose(&context, record, &mut stop).await {
            Disposed::Done => done.store(offset + 1, Ordering::Release),
            Disposed::Stopped => return,
            Disposed::Failed(error) => {
                let mut failure = context.failure.lock();
                if failure.is_none() {
                    *failure = Some(error);
                }
                drop(failure);
                context.failed.notify_one();
                return;
            }
        }
    }
}

/// Runs the handler on `record`, retrying, then applies the failure policy.
async fn dispose(
    context: &Context,
    record: ConsumedRecord,
    stop: &mut watch::Receiver<bool>,
) -> Disposed {
    let mut attempts = 0_u32;
    let error = loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Disposed::Stopped,
            permit = context.running.acquire() => permit.expect("the semaphore is never closed"),
        };
        attempts += 1;
        let outcome = AssertUnwindSafe((context.handler)(record.clone()))
            .catch_unwind()
            .await;
        drop(permit);
        let error = match outcome {
            Ok(Ok(())) => return Disposed::Done,
            Ok(Err(error)) => error,
            Err(panic) => panic_message(&*panic).into(),
        };
        if attempts > context.retries {
            break error;
        }
        tracing::debug!(
            topic = &*record.topic,
            partition = record.partition,
            offset = record.record.offset,
            attempts,
            %error,
            "handler failed; retrying"
        );
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Disposed::Stopped,
            () = tokio::time::sleep(context.backoff.delay(attempts - 1)) => {}
        }
    };
    let (topic, partition, offset) = (
        record.topic.to_string(),
        record.partition,
        record.record.offset,
    );
    match &context.policy {
        FailurePolicy::Skip => {
            tracing::warn!(%topic, partition, offset, attempts, %error, "handler failed; record skipped");
            Disposed::Done
        }
        FailurePolicy::Fail => Disposed::Failed(GroupError::Handler {
            topic,
            partition,
            offset,
            attempts,
            source: error,
        }),
        FailurePolicy::DeadLetter {
            topic: dead_letter_topic,
        } => {
            let producer = context
                .dead_letters
                .as_ref()
                .expect("a dead-letter policy has a producer");
            let reason = error_chain(&*error);
            match producer
                .send(dead_letter_record(&record, dead_letter_topic, &reason))
                .await
            {
                Ok(_) => {
                    tracing::warn!(%topic, partition, offset, attempts, %dead_letter_topic, %reason, "handler failed; record dead-lettered");
                    Disposed::Done
                }
                Err(source) => Disposed::Failed(GroupError::DeadLetter {
                    topic,
                    partition,
                    offset,
                    dead_letter_topic: dead_letter_topic.clone(),
                    source: Box::new(source),
                }),
            }
        }
    }
}

/// The error and its causes, on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    format!("handler panicked: {message}")
}

/// The original record for `topic`, with the dead-letter headers (replacing
/// any it had from an earlier dead-lettering): the same record the
/// event router dead-letters.
pub(crate) fn dead_letter_record(
    consumed: &ConsumedRecord,
    topic: &str,
    reason: &str,
) -> ProducerRecord {
    let letter = crate::dead_letter::dead_letter_record(consumed, reason);
    ProducerRecord {
        topic: topic.to_owned(),
        partition: None,
        key: letter.key,
        value: letter.value,
        headers: letter.headers,
        timestamp: Some(letter.timestamp),
    }
}

#[cfg(test)]
mod tests {
    use brook_record::{Header, Record};
    use bytes::Bytes;

    use crate::dead_letter as headers;

    use super::*;

    fn consumed(headers: Vec<Header>) -> ConsumedRecord {
        ConsumedRecord {
            topic: Arc::from("orders"),
            partition: 3,
            record: Record {
                offset: 41,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers,
            },
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_why_and_where_from() {
        let old = Header {
            key: headers::DEAD_LETTER_REASON.to_owned(),
            value: Bytes::from_static(b"an older reason"),
        };
        let kept = Header {
            key: "traceparent".to_owned(),
            value: Bytes::from_static(b"00-x"),
        };
        let letter = dead_letter_record(&consumed(vec![old, kept.clone()]), "dlq", "boom: cause");
        assert_eq!(letter.topic, "dlq");
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(letter.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(letter.timestamp, Some(1_700_000_000_000));
        let shown: Vec<(&str, &[u8])> = letter
            .headers
            .iter()
            .map(|h| (h.key.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            shown,
            [
                ("traceparent", &b"00-x"[..]),
                ("deadLetterReason", b"boom: cause"),
                ("originalTopic", b"orders"),
                ("originalPartition", b"3"),
                ("originalOffset", b"41"),
            ]
        );
    }

    #[test]
    fn a_panic_becomes_an_error_message() {
        let payload: Box<dyn std::any::Any + Send> = Box::new("oops");
        assert_eq!(panic_message(&*payload), "handler panicked: oops");
        let payload: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(&*payload), "handler panicked: owned");
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
    }
}
