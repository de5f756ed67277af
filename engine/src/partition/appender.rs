//! A broker's own appender: group commit for a partition that is not
//! replicated.
//!
//! Producers queue append requests; the appender takes every request
//! waiting at the start of a round, writes them all, pays one fsync for the
//! lot (shared with other partitions' rounds through the broker's
//! `SyncGroup` when many sync at once), and only then acknowledges them and
//! makes them visible. Every so often, after a round, it also takes the
//! log's recovery point, which bounds the work of a crash recovery.

use std::sync::Arc;
use std::time::Instant;

use brook_record::BatchHeader;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::AppendFailure;
use crate::config::FsyncPolicy;
use crate::metrics::Metrics;
use brook_storage::{BatchOutcome, LogError, PartitionLog, SyncGroup, WrittenMark};

/// Append requests a partition queues before producers wait (backpressure).
pub(super) const APPEND_QUEUE_LEN: usize = 1024;
/// Requests written in one round at most, so one round's latency stays bounded.
const ROUND_REQUESTS_MAX: usize = 512;

/// One producer's batches for this partition, appended together.
pub(super) struct AppendRequest {
    pub(super) batches: Vec<(Bytes, BatchHeader)>,
    pub(super) reply: oneshot::Sender<Result<Vec<BatchOutcome>, AppendFailure>>,
}

impl std::fmt::Debug for AppendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendRequest")
            .field("batches", &self.batches.len())
            .finish_non_exhaustive()
    }
}

pub(super) async fn run_appender(
    log: Arc<PartitionLog>,
    mut queue: mpsc::Receiver<AppendRequest>,
    fsync: FsyncPolicy,
    sync_group: Arc<SyncGroup>,
    watermark: watch::Sender<i64>,
    metrics: Arc<Metrics>,
) {
    let mut round = Vec::with_capacity(ROUND_REQUESTS_MAX);
    while queue.recv_many(&mut round, ROUND_REQUESTS_MAX).await > 0 {
        let requests = std::mem::take(&mut round);
        let log_for_round = log.clone();
        let metrics_for_round = metrics.clone();
        let watermark_for_round = watermark.clone();
        let sync_group = sync_group.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            write_round(
                &log_for_round,
                requests,
                fsync,
                &sync_group,
                &metrics_for_round,
            );
            // Readers wake as the producers do, not a task switch later.
            watermark_for_round.send_replace(log_for_round.high_watermark());
            // After the answers, so the producers do not wait for it.
            take_recovery_point_if_due(&log_for_round);
        })
        .await;
        match outcome {
            Ok(()) => {}
            Err(join_error) => {
                log.poison(format!("append task failed: {join_error}"));
                watermark.send_replace(log.high_watermark());
            }
        }
    }
}

/// Bounds how much of the active segment a crash recovery has to check.
fn take_recovery_point_if_due(log: &PartitionLog) {
    let now_ms = brook_storage::now_ms();
    // A poisoned log takes no more points (and said why when poisoned).
    if log.poisoned().is_some() || log.damage().is_some() || !log.recovery_point_due(now_ms) {
        return;
    }
    match log.write_recovery_point(now_ms) {
        // Poisoned meanwhile: deleted, or a sync failed and was logged.
        Ok(()) | Err(LogError::Poisoned { .. } | LogError::Deleted | LogError::Damaged { .. }) => {}
        Err(e) => {
            tracing::warn!(dir = %log.dir().display(), error = %e, "recovery point not written");
        }
    }
}

/// Writes every request of a round, makes them durable with one fsync
/// (under the `always` policy), publishes them and answers each producer.
fn write_round(
    log: &PartitionLog,
    requests: Vec<AppendRequest>,
    fsync: FsyncPolicy,
    sync_group: &SyncGroup,
    metrics: &Metrics,
) {
    let now_ms = brook_storage::now_ms();
    let started = Instant::now();
    let batches: usize = requests.iter().map(|r| r.batches.len()).sum();
    let mut results = Vec::with_capacity(requests.len());
    let mut last_mark: Option<WrittenMark> = None;
    for request in &requests {
        match log.append(&request.batches, now_ms) {
            Ok((offsets, mark)) => {
                results.push(Ok(offsets));
                last_mark = Some(mark);
            }
            Err(e) => results.push(Err(AppendFailure::Log(Arc::new(e)))),
        }
    }
    metrics
        .append_duration
        .observe(started.elapsed().as_secs_f64());
    if let Some(mark) = last_mark {
        let published = match fsync {
            FsyncPolicy::Always => {
                let syncing = Instant::now();
                let synced = log.sync_in(sync_group);
                metrics
                    .fsync_duration
                    .observe(syncing.elapsed().as_secs_f64());
                metrics.group_commit_batches.observe(batches as f64);
                synced.map(|synced| log.publish(&synced))
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {
                log.publish(&mark);
                Ok(())
            }
        };
        if let Err(e) = published {
            // The batches were written but are not known to be durable.
            let failure = AppendFailure::Log(Arc::new(e));
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(failure.clone());
                }
            }
        }
    }
    for (request, result) in requests.into_iter().zip(results) {
        // A producer that went away no longer needs its answer.
        let _ = request.reply.send(result);
    }
}
