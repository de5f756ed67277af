//! A lane's partitions read over subscriptions (`Subscribe`) instead of
//! one fetch at a time: the broker pushes each partition's batches as it
//! reads them, a couple of chunks ahead and within the connection's HTTP/2
//! window, so its reads and copies overlap this client's transfer and
//! checks. With one fetch in flight they follow each other: 1 KiB records
//! were read back at about 1.2 GB/s by fetches and 1.65–1.98 GB/s through
//! a subscription.
//!
//! Invariants: a message is taken from a subscription only with a prefetch
//! slot in hand, so while none is free nothing is read and the broker
//! stops at the window; a message moves a partition's fetch offset only if
//! nothing (a seek, a reset) moved it meanwhile, and only from where the
//! subscription was expected to be; anything else (a seek, an assignment,
//! a batch that does not decode, a failure) ends the round, and the next
//! one subscribes again from the offsets the cursors hold.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;
use tokio::sync::watch;

use super::cursor::FetchFrom;
use super::fetcher::{Fetcher, Round, Settled, Target, take_checked};
use crate::client::Client;
use crate::error::{ClientError, StatusCode};
use crate::fetch::check_pushed;

/// A lane reads over subscriptions when it has at most this many
/// partitions; with more, one fetch for all of them costs the broker less
/// than a subscription each (each holds a couple of chunks read ahead).
pub(super) const STREAMED_PARTITIONS_MAX: usize = 16;

/// How often a streaming round looks whether the partitions its broker
/// leads, as far as the client knows, are still the ones it streams (a
/// leader moved here or away).
const LANE_CHECKED_EVERY: Duration = Duration::from_millis(250);

impl Fetcher {
    /// Subscribes to each of `targets` at its offset and queues what is
    /// pushed, until something ends the round (see the module's
    /// invariants).
    pub(super) async fn stream_round(
        &self,
        client: &Client,
        broker: &Arc<str>,
        targets: Vec<Target>,
        changes: &mut watch::Receiver<u64>,
    ) -> Round {
        let mut streams = SelectAll::new();
        for (index, target) in targets.iter().enumerate() {
            let opened = tokio::select! {
                opened = client.subscribe_raw(
                    &target.cell.topic,
                    target.cell.partition,
                    target.offset,
                    self.config.max_bytes,
                ) => opened,
                // A seek or a new assignment: these offsets are stale.
                _ = changes.changed() => return Round::Again,
            };
            match opened {
                Ok(stream) => streams.push(stream.map(move |message| (index, message))),
                Err(e) => return self.stream_failed(client, broker, target, e).await,
            }
        }
        let mut expected: Vec<i64> = targets.iter().map(|t| t.offset).collect();
        let mut checks = tokio::time::interval(LANE_CHECKED_EVERY);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let permit = tokio::select! {
                permit = self.shared.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => return Round::Closed,
                },
                _ = changes.changed() => return Round::Again,
            };
            let slot = self.shared.chunk_buffered(permit);
            let (index, message) = loop {
                tokio::select! {
                    next = streams.next() => match next {
                        Some(next) => break next,
                        // Every subscription ends with a status; none left
                        // is a broker that went away: subscribe again.
                        None => return Round::Failed,
                    },
                    _ = changes.changed() => return Round::Again,
                    _ = checks.tick() => {
                        if self.lane_changed(broker, &targets) {
                            return Round::Again;
                        }
                    }
                }
            };
            let target = &targets[index];
            let pushed = match message {
                Ok(pushed) => pushed,
                Err(status) => {
                    drop(slot);
                    let error = ClientError::status("subscribe", status);
                    return self.stream_failed(client, broker, target, error).await;
                }
            };
            let pushed_end = pushed.next_offset;
            let at = Target {
                cell: target.cell.clone(),
                epoch: target.epoch,
                offset: expected[index],
            };
            let checked = check_pushed(
                &at.cell.topic,
                at.cell.partition,
                pushed,
                at.offset,
                self.config.undecodable,
            );
            let checked = match checked {
                Ok(checked) => checked,
                // The first batch does not decode: as a fetch's would.
                Err(e) => {
                    drop(slot);
                    return self.stream_failed(client, broker, &at, e).await;
                }
            };
            let next_offset = checked.next_offset;
            let mut items = Vec::new();
            if !take_checked(&at, checked, &mut items) {
                return Round::Again;
            }
            match self.queue(items, slot).await {
                Round::Again => {}
                ended => return ended,
            }
            if next_offset != pushed_end {
                // Checking stopped at a batch that does not decode, which
                // the subscription is past: the next round starts there.
                return Round::Again;
            }
            expected[index] = next_offset;
        }
    }

    /// Whether the partitions to read from `broker` are no longer exactly
    /// `targets`.
    fn lane_changed(&self, broker: &Arc<str>, targets: &[Target]) -> bool {
        let mine: Vec<_> = self
            .shared
            .cells()
            .into_iter()
            .filter(|cell| cell.cursor.lock().fetch != FetchFrom::Parked)
            .filter(|cell| self.broker_of(cell) == *broker)
            .collect();
        mine.len() != targets.len()
            || targets
                .iter()
                .any(|t| !mine.iter().any(|cell| Arc::ptr_eq(cell, &t.cell)))
    }

    /// A subscription could not open, or ended: a broker that does not know
    /// `Subscribe` has every lane fetch instead; a retryable failure backs
    /// the lane off (and has the client look for the leaders again when the
    /// broker is gone or cut off); any other is the partition's, dealt with
    /// as a failed fetch of it is.
    async fn stream_failed(
        &self,
        client: &Client,
        broker: &Arc<str>,
        target: &Target,
        error: ClientError,
    ) -> Round {
        if error.code() == Some(StatusCode::Unimplemented) {
            tracing::info!(%broker, "the broker does not push records (Subscribe); the consumer fetches instead");
            self.fetch_only.store(true, Ordering::Relaxed);
            return Round::Again;
        }
        if error.is_retryable() {
            return self.retry_later(broker, &error, "subscription");
        }
        match self.fail(client, target, error).await {
            Settled::Item(item) => {
                let Ok(permit) = self.shared.slots.clone().acquire_owned().await else {
                    return Round::Closed;
                };
                let slot = self.shared.chunk_buffered(permit);
                self.queue(vec![item], slot).await
            }
            Settled::Moved => Round::Again,
            Settled::RetryLater => Round::Failed,
        }
    }
}
