//! Consumer groups: [`GroupConsumer`], a member of a group whose partitions
//! the broker assigns, and [`GroupClient`], which administers groups.
//!
//! Layout: `client` holds the group calls and their types; `session` the
//! task that keeps the member's session (join, heartbeats, re-join);
//! `member` the member's state and what each rebalance does; `run` the
//! handler loop with at-least-once commits.
//!
//! Invariants: a record is handed out only while its partition is owned
//! (revocation first takes the partition off the internal [`Consumer`]);
//! an offset is committed only when every record before it was disposed
//! of; a revocation is acknowledged only after the work on the partition
//! ended and was committed.

mod client;
mod config;
mod error;
mod member;
mod run;
mod session;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brook_proto as proto;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

pub use self::client::{
    GroupClient, GroupDescription, GroupSummary, MemberDescription, PartitionLag, PartitionOffset,
    ResetTo, TopicPartition,
};
pub use self::config::{FailurePolicy, GroupConfig};
pub use self::error::GroupError;
use self::member::{Callbacks, Committer, Identity, Member, Stop};
use self::run::{DynHandler, Runner};
use self::session::{EVENTS_MAX, Latest, SessionEvent, SessionHandle};
use crate::consumer::{ConsumedRecord, Consumer};
use crate::undecodable::{SkipCounters, SkippedBatch};

/// The stream's item.
type Item = Result<ConsumedRecord, GroupError>;
/// The member, moved into the future that waits for its next item.
type NextFuture = Pin<Box<dyn Future<Output = (Box<Member>, Option<Item>)> + Send>>;

enum State {
    Idle(Box<Member>),
    Polling(NextFuture),
    Ended,
}

/// A member of a consumer group: the broker assigns it partitions of the
/// group's topics, and moves them between members as members come and go
/// (incrementally: a member keeps what it does not lose).
///
/// Consume in one of two ways:
///
/// - [`GroupConsumer::run`] with an async handler: at-least-once, commits
///   after success, retries and a [`FailurePolicy`];
/// - as a [`Stream`] of records, committing with [`GroupConsumer::commit`]
///   (manual mode). Rebalances happen while the stream is polled, so when
///   the application asks for the next record it has finished (and
///   committed) the previous ones; records of a revoked partition are not
///   handed out after the revocation.
///
/// The session (heartbeats, assignments) runs in a background task: a
/// member that stops polling stays in the group. If the session breaks,
/// the member loses its partitions and joins again under a new member id.
///
/// Partitions without a committed offset start where
/// [`GroupConfig::auto_offset_reset`] says. A batch whose records do not
/// decode stops the member, or is skipped: see [`GroupConfig::undecodable`].
pub struct GroupConsumer {
    state: State,
    session: SessionHandle,
    committer: Committer,
    /// The internal consumer's, readable while it is busy in `state`.
    skipped: Arc<SkipCounters>,
    /// Shared with every [`GroupHandle`]; kept here so that it never closes.
    stop: Arc<watch::Sender<Stop>>,
    config: GroupConfig,
}

impl fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = self.committer.identity.lock();
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group)
            .field("member_id", &identity.member_id)
            .field("generation", &identity.generation)
            .field("owned", &identity.owned)
            .finish_non_exhaustive()
    }
}

/// Stops a [`GroupConsumer`] from elsewhere, e.g. while it is in
/// [`GroupConsumer::run`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupHandle {
    stop: Arc<watch::Sender<Stop>>,
    skipped: Arc<SkipCounters>,
}

impl GroupHandle {
    /// Asks the member to stop: `run` lets the handlers in flight finish,
    /// commits, leaves the group and returns `Ok`; the stream ends.
    pub fn shutdown(&self) {
        self.stop.send_if_modified(|stop| {
            let run = *stop == Stop::Run;
            if run {
                *stop = Stop::Shutdown;
            }
            run
        });
    }

    /// [`GroupConsumer::skipped_batches`], readable while the member is in
    /// [`GroupConsumer::run`].
    pub fn skipped_batches(&self) -> u64 {
        self.skipped.batches()
    }

    /// [`GroupConsumer::skipped_records`], readable while the member is in
    /// [`GroupConsumer::run`].
    pub fn skipped_records(&self) -> u64 {
        self.skipped.records()
    }

    /// Test hook: `run` returns at once, abandoning its handlers, without
    /// committing or leaving; the session stream is dropped as if the
    /// process had died.
    #[doc(hidden)]
    pub fn abort(&self) {
        self.stop.send_replace(Stop::Abort);
    }
}

impl GroupConsumer {
    /// Joins `config.group`: returns once the broker accepted the member
    /// (partitions are assigned afterwards, while the member consumes).
    /// Fails if the broker is unreachable or refuses (e.g. a topic does not
    /// exist). Must be called within a Tokio runtime.
    ///
    /// # Panics
    ///
    /// When `config` cannot work (see [`GroupConfig`]'s fields).
    pub async fn join(client: GroupClient, config: GroupConfig) -> Result<Self, GroupError> {
        config.check();
        let join = proto::JoinGroup {
            group: config.group.clone(),
            topics: config.topics.clone(),
            session_timeout_ms: u32::try_from(config.session_timeout.as_millis())
                .expect("checked to fit"),
            client_id: config.client_id.clone(),
        };
        let (events_tx, mut events) = mpsc::channel(EVENTS_MAX);
        let (latest_tx, latest) = watch::channel(Latest::default());
        let session = SessionHandle::spawn(
            client.clone(),
            join,
            config.retry_backoff,
            events_tx,
            latest_tx,
        );
        let identity = match events.recv().await {
            Some(SessionEvent::Joined {
                session,
                member_id,
                generation,
            }) => Identity {
                session,
                member_id: Some(member_id),
                generation,
                owned: std::collections::BTreeSet::new(),
            },
            Some(SessionEvent::Failed(error)) => return Err(error.into()),
            Some(_) | None => return Err(GroupError::Closed),
        };
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let committer = Committer {
            client: client.clone(),
            group: Arc::from(config.group.as_str()),
            identity: Arc::new(Mutex::new(identity)),
            callbacks: Arc::new(Mutex::new(Callbacks::default())),
            latest,
        };
        let consumer = Consumer::new(client.client().clone(), config.consumer_config());
        let skipped = consumer.skip_counters();
        let member = Member {
            consumer,
            events,
            commands: session.commands.clone(),
            committer: committer.clone(),
            stop: stop_rx,
            backoff: config.retry_backoff,
        };
        Ok(Self {
            state: State::Idle(Box::new(member)),
            session,
            committer,
            skipped,
            stop: Arc::new(stop),
            config,
        })
    }

    /// Calls `callback` with the partitions newly assigned, after they were
    /// sought to their committed offsets and before any of their records.
    #[must_use]
    pub fn on_assigned(self, callback: impl Fn(&[TopicPartition]) + Send + Sync + 'static) -> Self {
        self.committer.callbacks.lock().assigned = Some(Arc::new(callback));
        self
    }

    /// Calls `callback` with partitions taken away (revoked, or lost with a
    /// broken session), after their work ended and was committed and
    /// before the revocation is acknowledged.
    #[must_use]
    pub fn on_revoked(self, callback: impl Fn(&[TopicPartition]) + Send + Sync + 'static) -> Self {
        self.committer.callbacks.lock().revoked = Some(Arc::new(callback));
        self
    }

    /// Calls `callback` with the offsets of every commit the broker accepted.
    #[must_use]
    pub fn on_committed(
        self,
        callback: impl Fn(&[PartitionOffset]) + Send + Sync + 'static,
    ) -> Self {
        self.committer.callbacks.lock().committed = Some(Arc::new(callback));
        self
    }

    /// Calls `callback` with each batch skipped under
    /// [`crate::UndecodablePolicy::Skip`], in order with the partition's
    /// records: as a stream, when the stream passes it; in
    /// [`Self::run`], after the handlers of the records before it finished
    /// (its offsets then count as done, so the next commit moves past it).
    #[must_use]
    pub fn on_skipped(self, callback: impl Fn(&SkippedBatch) + Send + Sync + 'static) -> Self {
        self.committer.callbacks.lock().skipped = Some(Arc::new(callback));
        self
    }

    /// Batches skipped because their records did not decode, since the
    /// member joined.
    pub fn skipped_batches(&self) -> u64 {
        self.skipped.batches()
    }

    /// Records (offsets) in those batches.
    pub fn skipped_records(&self) -> u64 {
        self.skipped.records()
    }

    /// The settings this member was made with.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The member id the broker gave; `None` while re-joining.
    pub fn member_id(&self) -> Option<String> {
        self.committer.identity.lock().member_id.clone()
    }

    /// The generation of the member's latest assignment.
    pub fn generation(&self) -> u64 {
        self.committer.identity.lock().generation
    }

    /// The partitions the member owns, in order.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.committer
            .identity
            .lock()
            .owned
            .iter()
            .cloned()
            .collect()
    }

    /// A handle to stop the member from another task.
    pub fn handle(&self) -> GroupHandle {
        GroupHandle {
            stop: self.stop.clone(),
            skipped: self.skipped.clone(),
        }
    }

    /// Commits `record`'s partition up to and including it (manual mode).
    /// Fails with a fenced error ([`GroupError::is_fenced`]) if the
    /// partition was revoked meanwhile; its new owner consumes it from the
    /// last commit.
    pub async fn commit(&self, record: &ConsumedRecord) -> Result<(), GroupError> {
        self.commit_offsets(&[PartitionOffset {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.record.offset + 1,
        }])
        .await
    }

    /// Commits `offsets` (each the next offset to consume) under the
    /// member's current id and generation.
    pub async fn commit_offsets(&self, offsets: &[PartitionOffset]) -> Result<(), GroupError> {
        self.committer.commit(offsets).await
    }

    /// Consumes with `handler` until [`GroupHandle::shutdown`] or a failure,
    /// at least once: an offset is committed (every `commit_interval`, on
    /// revocation and at the end) only after the handler succeeded on every
    /// record before it in its partition. A partition's records are handled
    /// in order, one at a time; up to `max_concurrency` partitions at once.
    /// A failing handler is retried `handler_retries` times with backoff,
    /// then [`GroupConfig::failure_policy`] applies. At the end it lets the
    /// handlers in flight finish, commits, and leaves the group.
    ///
    /// Returns `Ok` after a shutdown; the handler's error (as
    /// [`GroupError::Handler`]) under [`FailurePolicy::Fail`]; or the error
    /// that stopped the member (a partition that cannot be read, a batch
    /// that does not decode under [`crate::UndecodablePolicy::Stop`], a
    /// join refused).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use brook_client::{ConsumedRecord, GroupClient, GroupConfig, GroupConsumer, OffsetReset};
    ///
    /// let client = GroupClient::connect("http://127.0.0.1:9420").await?;
    /// let config = GroupConfig::new("billing", ["orders"])
    ///     .with_auto_offset_reset(OffsetReset::Earliest)
    ///     .with_handler_retries(3);
    /// let member = GroupConsumer::join(client, config)
    ///     .await?
    ///     .on_assigned(|partitions| println!("assigned {partitions:?}"));
    /// let stop = member.handle();
    /// tokio::spawn(async move {
    ///     tokio::signal::ctrl_c().await.ok();
    ///     stop.shutdown();
    /// });
    /// member
    ///     .run(|consumed: ConsumedRecord| async move {
    ///         let value = consumed.record.value.unwrap_or_default();
    ///         println!("{}/{}@{}: {value:?}", consumed.topic, consumed.partition, consumed.record.offset);
    ///         Ok::<(), std::io::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<F, Fut, E>(self, handler: F) -> Result<(), GroupError>
    where
        F: Fn(ConsumedRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let Self {
            state,
            session,
            committer: _,
            skipped: _,
            stop,
            config,
        } = self;
        let (member, first) = match state {
            State::Idle(member) => (member, None),
            // The stream was polled: the record it was fetching goes first.
            State::Polling(next) => match next.await {
                (member, Some(Ok(record))) => (member, Some(record)),
                (_, Some(Err(error))) => return Err(error),
                (_, None) => return Ok(()),
            },
            State::Ended => return Ok(()),
        };
        let handler = Arc::new(handler);
        let handler: DynHandler = Arc::new(move |record| {
            let handled = handler(record);
            Box::pin(async move { handled.await.map_err(Into::into) })
        });
        Runner::new(*member, session, stop, &config, handler, first)
            .run()
            .await
    }

    /// The next record (manual mode), as the [`Stream`] gives it: `None`
    /// once the member was shut down or its session ended for good.
    /// Cancel-safe: a record being fetched when the future is dropped is
    /// the next one returned.
    pub async fn recv(&mut self) -> Option<Result<ConsumedRecord, GroupError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Leaves the group: the revocation callback gets the partitions owned,
    /// then the broker is told, so the other members get them at once.
    /// In manual mode, commit what you finished first.
    pub async fn close(self) -> Result<(), GroupError> {
        let owned = self.assignment();
        drop(self.state);
        let callback = self.committer.callbacks.lock().revoked.clone();
        if let (Some(callback), false) = (callback, owned.is_empty()) {
            callback(&owned);
        }
        self.session.leave().await;
        Ok(())
    }

    /// Test hook: ends the session without leaving or committing, as if the
    /// process had died.
    #[doc(hidden)]
    pub fn abort(self) {
        self.session.abort();
    }
}

impl Stream for GroupConsumer {
    type Item = Result<ConsumedRecord, GroupError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Ended) {
                State::Idle(mut member) => {
                    this.state = State::Polling(Box::pin(async move {
                        let item = member.next_record().await;
                        (member, item)
                    }));
                }
                State::Polling(mut next) => match next.as_mut().poll(cx) {
                    Poll::Ready((member, item)) => {
                        if item.is_some() {
                            this.state = State::Idle(member);
                        }
                        return Poll::Ready(item);
                    }
                    Poll::Pending => {
                        this.state = State::Polling(next);
                        return Poll::Pending;
                    }
                },
                State::Ended => return Poll::Ready(None),
            }
        }
    }
}
