//! A partition at run time: its log, where its appends go, and the watch
//! that wakes long polls and subscriptions when the high watermark moves.
//!
//! A broker alone appends through its own appender (group commit and
//! fsync, `appender`). In a cluster, appends go through the partition's
//! replicas (`Replication`, implemented outside the engine), and the high
//! watermark is what they committed and applied to the log; until its
//! replicas are started, or on a broker that holds no replica of it, a
//! partition takes no appends and says where to send them.

mod appender;
mod replication;

pub use replication::{Acknowledgement, Leader, Replication};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use brook_record::BatchHeader;
use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::FsyncPolicy;
use crate::error::PartitionError;
use crate::metrics::Metrics;
use appender::{APPEND_QUEUE_LEN, AppendRequest, run_appender};
use brook_storage::{BatchOutcome, LogError, OpenSegments, PartitionLog, SyncGroup};

/// Why a request's batches were not appended (or not made durable).
#[derive(Debug, Clone)]
pub enum AppendFailure {
    /// The log refused or failed the write, or the fsync after it. Shared:
    /// one failed fsync fails every request of its round.
    Log(Arc<LogError>),
    /// The appender is gone: the broker is stopping.
    Closed,
    /// In a cluster: this broker does not lead the partition. Nothing was
    /// appended; the leader, when known, takes it.
    NotLeader(Option<Leader>),
    /// In a cluster: the partition's replicas cannot take appends now (they
    /// are starting, or the group stopped); the reason says which.
    Unavailable(String),
}

impl AppendFailure {
    /// The error a producer sees for a batch of `topic`/`partition`.
    pub fn into_partition_error(self, topic: &str, partition: u32) -> PartitionError {
        let topic = topic.to_owned();
        match self {
            Self::Log(e) => PartitionError::from_shared_log(&topic, partition, e),
            Self::Closed => PartitionError::Closed { topic, partition },
            Self::NotLeader(leader) => PartitionError::NotLeader {
                topic,
                partition,
                leader,
            },
            Self::Unavailable(reason) => PartitionError::Unavailable {
                topic,
                partition,
                reason,
            },
        }
    }
}

/// Where a partition's appends go.
#[derive(Debug, Clone)]
enum Route {
    /// The broker's own appender.
    Local(mpsc::Sender<AppendRequest>),
    /// The partition's replicas, of which this broker holds one.
    Replicated(Arc<dyn Replication>),
    /// Nowhere on this broker: its replicas are not started yet.
    Starting,
    /// Another broker: this one holds no replica of the partition.
    Elsewhere(Option<Leader>),
}

#[derive(Debug)]
pub struct Partition {
    topic: String,
    index: u32,
    log: Arc<PartitionLog>,
    route: RwLock<Route>,
    /// Carries the high watermark; every change wakes waiting readers.
    watermark: watch::Sender<i64>,
}

impl Partition {
    /// Wraps an opened log. Alone (`clustered` false) it starts the
    /// partition's appender on the current runtime; in a cluster the
    /// partition takes appends once its replicas are routed to.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        topic: &str,
        index: u32,
        log: PartitionLog,
        fsync: FsyncPolicy,
        sync_group: Arc<SyncGroup>,
        open_segments: &Arc<OpenSegments>,
        metrics: Arc<Metrics>,
        clustered: bool,
    ) -> Arc<Self> {
        log.share_open_segments(open_segments.clone());
        let log = Arc::new(log);
        let (watermark, _) = watch::channel(log.high_watermark());
        let route = if clustered {
            Route::Starting
        } else {
            let (appends, queue) = mpsc::channel(APPEND_QUEUE_LEN);
            tokio::spawn(run_appender(
                log.clone(),
                queue,
                fsync,
                sync_group,
                watermark.clone(),
                metrics,
            ));
            Route::Local(appends)
        };
        Arc::new(Self {
            topic: topic.to_owned(),
            index,
            log,
            route: RwLock::new(route),
            watermark,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Sends appends through `replication` from now on.
    pub fn route_through(&self, replication: Arc<dyn Replication>) {
        *self.route.write() = Route::Replicated(replication);
    }

    /// Refuses appends and reads from now on, naming the broker that
    /// serves the partition when known: this broker holds no replica.
    pub fn route_elsewhere(&self, leader: Option<Leader>) {
        *self.route.write() = Route::Elsewhere(leader);
    }

    /// What moves the high watermark readers wait on: in a cluster, the
    /// replica that applies committed entries to the log sends its new
    /// high watermark here.
    pub fn watermark_sender(&self) -> watch::Sender<i64> {
        self.watermark.clone()
    }

    /// Queues validated batches; the returned future resolves once they
    /// are acknowledged (durable under the `always` fsync policy; in a
    /// cluster, committed by a majority of the replicas). Queuing order is
    /// append order.
    pub async fn enqueue(&self, batches: Vec<(Bytes, BatchHeader)>) -> Acknowledgement {
        let route = self.route.read().clone();
        match route {
            Route::Local(appends) => {
                let (reply, receiver) = oneshot::channel();
                let request = AppendRequest { batches, reply };
                if let Err(mpsc::error::SendError(request)) = appends.send(request).await {
                    // The appender is gone (broker shutting down); answer here.
                    let _ = request.reply.send(Err(AppendFailure::Closed));
                }
                // The appender answers every request it takes; a dropped
                // answer means it stopped.
                Box::pin(async move { receiver.await.unwrap_or(Err(AppendFailure::Closed)) })
            }
            Route::Replicated(replication) => {
                replication
                    .submit(batches.into_iter().map(|(batch, _)| batch).collect())
                    .await
            }
            Route::Starting => failed(AppendFailure::Unavailable(
                "its replicas on this broker are starting".to_owned(),
            )),
            Route::Elsewhere(leader) => failed(AppendFailure::NotLeader(leader)),
        }
    }

    /// Refuses reads on a broker that holds no replica of the partition
    /// (its local log is empty, not the partition's), and on a replica
    /// that says it may not serve them now (a leader cut off from the
    /// others).
    pub fn check_readable(&self) -> Result<(), PartitionError> {
        match &*self.route.read() {
            Route::Elsewhere(leader) => Err(PartitionError::NotLeader {
                topic: self.topic.clone(),
                partition: self.index,
                leader: leader.clone(),
            }),
            Route::Replicated(replication) => match replication.read_refusal() {
                Some(reason) => Err(PartitionError::NotReadable {
                    topic: self.topic.clone(),
                    partition: self.index,
                    reason,
                }),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A receiver that sees every high watermark change.
    pub fn watch(&self) -> watch::Receiver<i64> {
        self.watermark.subscribe()
    }
}

fn failed(failure: AppendFailure) -> Acknowledgement {
    Box::pin(std::future::ready(Err(failure)))
}

/// A future of the acknowledgement a [`Replication`] gives.
pub type AcknowledgementFuture<'a> = Pin<Box<dyn Future<Output = Acknowledgement> + Send + 'a>>;

/// What an append ends in: the outcome of each batch, or why none was
/// appended.
pub type AppendResult = Result<Vec<BatchOutcome>, AppendFailure>;
