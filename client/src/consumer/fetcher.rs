//! The consumer's background task: one fetch long poll at a time over
//! every assigned partition, each answer queued as one chunk of checked
//! batches (the stream decodes their records as it hands them out).
//!
//! Invariants: a prefetch slot is taken before a fetch starts and travels
//! with the chunk until the stream has handed it out, so fetched data never
//! exceeds `prefetch` chunks whatever the reader's pace; the queue can hold
//! every slot, so sending never waits. A fetch answer moves a partition's
//! fetch offset only if nothing (a seek, a reset) moved it meanwhile. A
//! round that made no progress because of a failure ends in a backoff, never
//! straight into the next round.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::cursor::{ChunkSlot, FetchFrom, PartitionCell, Shared};
use super::streams::STREAMED_PARTITIONS_MAX;
use super::{ConsumerConfig, OffsetReset};
use crate::client::{Client, without_scheme};
use crate::error::{ClientError, ErrorKind};
use crate::fetch::{Checked, CheckedFetch, FetchOptions, FetchTarget, FetchedRecords, OffsetSpec};
use crate::undecodable::SkippedBatch;

/// What one fetch round queues for the stream.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub items: VecDeque<Item>,
    pub _slot: ChunkSlot,
}

/// One partition's share of a chunk, or an error for the stream to report.
#[derive(Debug)]
pub(crate) enum Item {
    /// Records fetched under `epoch`, in offset order, decoded as the
    /// stream hands them out.
    Records {
        cell: Arc<PartitionCell>,
        epoch: u64,
        records: FetchedRecords,
    },
    /// A batch that did not decode was skipped (its records come before
    /// the partition's next `Records`): the position moves past it.
    Skipped {
        cell: Arc<PartitionCell>,
        epoch: u64,
        batch: SkippedBatch,
    },
    /// The fetch offset was reset (out of range): the position moves there,
    /// after the records queued before the reset were handed out.
    Reset {
        cell: Arc<PartitionCell>,
        epoch: u64,
        offset: i64,
    },
    /// The partition's fetch failed for good under `epoch`; reported only
    /// if the partition is still assigned and was not sought since.
    Error {
        cell: Arc<PartitionCell>,
        epoch: u64,
        error: ClientError,
    },
}

/// What became of a partition whose fetch failed for good.
pub(super) enum Settled {
    /// Reset, or parked with the error: queue the item.
    Item(Item),
    /// The partition moved meanwhile (a seek, a new assignment): nothing to do.
    Moved,
    /// Resetting it failed for a passing reason: try again after a backoff.
    RetryLater,
}

/// A partition as it was when the fetch started.
pub(super) struct Target {
    pub cell: Arc<PartitionCell>,
    pub epoch: u64,
    pub offset: i64,
}

/// Moves `target`'s fetch offset past what was `checked` there and adds
/// the items it makes, unless something (a seek, a reset) moved the
/// partition since `target` was taken: then `checked` is stale, nothing is
/// done, and it answers `false`.
pub(super) fn take_checked(target: &Target, checked: Checked, items: &mut Vec<Item>) -> bool {
    {
        let mut cursor = target.cell.cursor.lock();
        if cursor.epoch != target.epoch || cursor.fetch != FetchFrom::At(target.offset) {
            return false;
        }
        cursor.fetch = FetchFrom::At(checked.next_offset);
    }
    if let Some(batch) = checked.skipped {
        items.push(Item::Skipped {
            cell: target.cell.clone(),
            epoch: target.epoch,
            batch,
        });
    }
    if !checked.batches.is_empty() {
        items.push(Item::Records {
            cell: target.cell.clone(),
            epoch: target.epoch,
            records: FetchedRecords::new(checked.batches, target.offset),
        });
    }
    true
}

pub(crate) struct Fetcher {
    pub client: Client,
    pub config: ConsumerConfig,
    pub shared: Arc<Shared>,
    pub chunks: mpsc::Sender<Chunk>,
    /// When the brokers were last asked who leads what (at most every
    /// `DESCRIBE_EVERY`).
    pub described_at: Mutex<Option<Instant>>,
    /// A broker answered that it does not know `Subscribe` (it is older
    /// than this client): every lane fetches from then on.
    pub fetch_only: std::sync::atomic::AtomicBool,
}

/// A round that needs no more than waiting for a change.
pub(super) enum Round {
    /// Something was done; go again.
    Again,
    /// Nothing to fetch: wait for an assignment or a seek.
    Idle,
    /// A retryable failure: back off.
    Failed,
    /// The consumer is gone.
    Closed,
}

/// How often the fetcher looks again where its partitions' leaders are,
/// while it fetches (a lane per broker it reads from).
const LANES_CHECKED_EVERY: Duration = Duration::from_millis(250);
/// The least time between two questions to the brokers about leaders.
const DESCRIBE_EVERY: Duration = Duration::from_millis(250);

impl Fetcher {
    /// Fetches in one lane per broker that leads assigned partitions (the
    /// broker connected to, for a broker alone): each lane is one long poll
    /// at a time over its broker's partitions, so a broker that has data
    /// is never held up by another's long poll. Lanes start when a
    /// partition is led by a broker without one, and end when theirs have
    /// nothing left to fetch.
    pub async fn run(self) {
        self.learn_leaders().await;
        let mut changes = self.shared.changed.subscribe();
        let mut lanes = FuturesUnordered::new();
        let mut running: HashSet<Arc<str>> = HashSet::new();
        loop {
            for broker in self.brokers_to_fetch_from() {
                if running.insert(broker.clone()) {
                    lanes.push(self.lane(broker));
                }
            }
            if lanes.is_empty() {
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            tokio::select! {
                Some((broker, ended)) = lanes.next() => {
                    running.remove(&broker);
                    if matches!(ended, Round::Closed) {
                        return;
                    }
                }
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(LANES_CHECKED_EVERY) => {}
            }
        }
    }

    /// The broker each assigned partition is read from: its leader, as far
    /// as the client knows, else the broker connected to.
    pub(super) fn broker_of(&self, cell: &PartitionCell) -> Arc<str> {
        let broker = self
            .client
            .routing
            .target(&(cell.topic.clone(), cell.partition), &self.client.endpoint);
        // The broker connected to, under the name it was given.
        if without_scheme(&broker) == without_scheme(&self.client.endpoint) {
            return self.client.endpoint.clone();
        }
        broker
    }

    /// The brokers of the partitions that have something to fetch.
    fn brokers_to_fetch_from(&self) -> HashSet<Arc<str>> {
        self.shared
            .cells()
            .iter()
            .filter(|cell| cell.cursor.lock().fetch != FetchFrom::Parked)
            .map(|cell| self.broker_of(cell))
            .collect()
    }

    /// Asks a broker who leads what, unless one was asked a moment ago.
    /// A broker alone answers that it is not in a cluster: every
    /// partition stays with it.
    async fn learn_leaders(&self) {
        {
            let mut described_at = self.described_at.lock();
            let now = Instant::now();
            if described_at.is_some_and(|at| now.duration_since(at) < DESCRIBE_EVERY) {
                return;
            }
            *described_at = Some(now);
        }
        let broker = self.client.routing.any_broker(&self.client.endpoint);
        if let Ok(client) = self.client.at(&broker).await
            && let Ok(cluster) = client.describe_cluster().await
        {
            self.client.routing.learn_cluster(&cluster);
        }
    }

    /// One broker's lane: its partitions fetched one long poll at a time,
    /// until none of them is left to fetch there or the consumer is gone.
    async fn lane(&self, broker: Arc<str>) -> (Arc<str>, Round) {
        let mut changes = self.shared.changed.subscribe();
        let mut backoff = self.config.retry_backoff;
        let mut rotation = 0_usize;
        loop {
            let round = match self.client.at(&broker).await {
                Ok(client) => {
                    let Ok(permit) = self.shared.slots.clone().acquire_owned().await else {
                        return (broker, Round::Closed);
                    };
                    let slot = self.shared.chunk_buffered(permit);
                    changes.mark_unchanged();
                    self.round(&client, &broker, slot, rotation, &mut changes)
                        .await
                }
                Err(e) => {
                    tracing::warn!(error = %e, %broker, "consumer cannot connect to a broker; retrying");
                    Round::Failed
                }
            };
            rotation = rotation.wrapping_add(1);
            match round {
                Round::Again => backoff = self.config.retry_backoff,
                Round::Closed | Round::Idle => return (broker, round),
                Round::Failed => {
                    // The broker may be down, or no longer lead: ask where
                    // the partitions are now, then wait.
                    self.learn_leaders().await;
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = changes.changed() => {}
                    }
                }
            }
        }
    }

    /// Resolves unresolved partitions read from `broker`, then fetches the
    /// others once. `slot` goes with whatever is queued, or is released.
    async fn round(
        &self,
        client: &Client,
        broker: &Arc<str>,
        slot: ChunkSlot,
        rotation: usize,
        changes: &mut watch::Receiver<u64>,
    ) -> Round {
        let cells: Vec<Arc<PartitionCell>> = self
            .shared
            .cells()
            .into_iter()
            .filter(|cell| self.broker_of(cell) == *broker)
            .collect();
        let mut targets = Vec::with_capacity(cells.len());
        let mut unresolved = Vec::new();
        for cell in cells {
            let cursor = cell.cursor.lock();
            match cursor.fetch {
                FetchFrom::At(offset) => {
                    let epoch = cursor.epoch;
                    drop(cursor);
                    targets.push(Target {
                        cell,
                        epoch,
                        offset,
                    });
                }
                FetchFrom::Unresolved => {
                    let epoch = cursor.epoch;
                    drop(cursor);
                    unresolved.push((cell, epoch));
                }
                FetchFrom::Parked => {}
            }
        }
        if !unresolved.is_empty() {
            return self.resolve(client, unresolved, slot).await;
        }
        if targets.is_empty() {
            return Round::Idle;
        }
        if targets.len() <= STREAMED_PARTITIONS_MAX
            && !self.fetch_only.load(std::sync::atomic::Ordering::Relaxed)
        {
            // Each pushed message takes a slot of its own.
            drop(slot);
            return self.stream_round(client, broker, targets, changes).await;
        }
        // The broker fills its byte budget in request order: rotate for fairness.
        let len = targets.len();
        targets.rotate_left(rotation % len);
        let request: Vec<FetchTarget> = targets
            .iter()
            .map(|t| FetchTarget {
                topic: t.cell.topic.to_string(),
                partition: t.cell.partition,
                offset: t.offset,
            })
            .collect();
        let options = FetchOptions {
            max_bytes: self.config.max_bytes,
            max_wait: self.config.max_wait,
            undecodable: self.config.undecodable,
        };
        let fetched = tokio::select! {
            fetched = client.fetch_checked(&request, options) => fetched,
            // A seek or a new assignment: this poll asks for stale offsets.
            _ = changes.changed() => return Round::Again,
        };
        match fetched {
            Ok(fetched) => self.queue_fetched(&targets, fetched, slot).await,
            Err(e) if e.is_retryable() => self.retry_later(broker, &e, "fetch"),
            Err(e) if len == 1 => match self.fail(client, &targets[0], e).await {
                Settled::Item(item) => self.queue(vec![item], slot).await,
                Settled::Moved => Round::Again,
                Settled::RetryLater => Round::Failed,
            },
            Err(e) => {
                tracing::debug!(error = %e, "consumer fetch failed; probing each partition");
                self.probe(client, &targets, slot).await
            }
        }
    }

    /// Queues the records of every partition whose fetch offset did not move meanwhile.
    async fn queue_fetched(
        &self,
        targets: &[Target],
        fetched: Vec<CheckedFetch>,
        slot: ChunkSlot,
    ) -> Round {
        let mut items = Vec::new();
        for (target, fetched) in targets.iter().zip(fetched) {
            take_checked(target, fetched.checked, &mut items);
        }
        self.queue(items, slot).await
    }

    /// A read from `broker` (`call`: fetch, subscription) failed for a
    /// passing reason: the round backs off.
    pub(super) fn retry_later(&self, broker: &Arc<str>, error: &ClientError, call: &str) -> Round {
        tracing::warn!(%error, %broker, "consumer {call} failed; retrying");
        // A leader cut off from its replicas still names itself: another
        // broker is asked where the partitions are.
        if error.is_broker_unreachable() || error.is_cut_off_leader() {
            self.client.routing.failed(broker);
        }
        Round::Failed
    }

    /// Finds which partitions of a failed multi-partition fetch fail on
    /// their own, and deals with each of those. If none does (or none can
    /// be dealt with yet), the round failed: back off before the next.
    async fn probe(&self, client: &Client, targets: &[Target], slot: ChunkSlot) -> Round {
        let mut items = Vec::new();
        let mut retry = false;
        let options = FetchOptions {
            max_bytes: 1,
            max_wait: Duration::ZERO,
            undecodable: self.config.undecodable,
        };
        for target in targets {
            let probed = client
                .fetch(
                    &target.cell.topic,
                    target.cell.partition,
                    target.offset,
                    options,
                )
                .await;
            match probed {
                Ok(_) => {}
                Err(e) if e.is_retryable() => retry = true,
                Err(e) => match self.fail(client, target, e).await {
                    Settled::Item(item) => items.push(item),
                    Settled::Moved => {}
                    Settled::RetryLater => retry = true,
                },
            }
        }
        if items.is_empty() {
            if !retry {
                tracing::warn!(
                    partitions = targets.len(),
                    "consumer fetch failed, but no partition fails alone; retrying"
                );
            }
            return Round::Failed;
        }
        self.queue(items, slot).await
    }

    /// A partition's fetch failed for good: reset it if it was out of range
    /// and the policy allows, else park it and report the error.
    pub(super) async fn fail(
        &self,
        client: &Client,
        target: &Target,
        error: ClientError,
    ) -> Settled {
        let spec = match (error.kind(), self.config.auto_offset_reset) {
            (ErrorKind::OutOfRange, OffsetReset::Earliest) => Some(OffsetSpec::Earliest),
            (ErrorKind::OutOfRange, OffsetReset::Latest) => Some(OffsetSpec::Latest),
            _ => None,
        };
        let cell = &target.cell;
        let Some(spec) = spec else {
            return Self::park(target, error);
        };
        let offset = match client.list_offsets(&cell.topic, cell.partition, spec).await {
            Ok(offset) => offset,
            // Retried after a backoff: the fetch offset did not move.
            Err(e) if e.is_retryable() => {
                tracing::warn!(
                    topic = &*cell.topic,
                    partition = cell.partition,
                    error = %e,
                    "consumer offset out of range, and looking up the reset offset failed; retrying"
                );
                return Settled::RetryLater;
            }
            Err(e) => return Self::park(target, e),
        };
        let mut cursor = cell.cursor.lock();
        if cursor.epoch != target.epoch || cursor.fetch != FetchFrom::At(target.offset) {
            return Settled::Moved;
        }
        tracing::info!(
            topic = &*cell.topic,
            partition = cell.partition,
            from = target.offset,
            offset,
            "consumer offset out of range; reset"
        );
        // Same epoch: the records queued before the reset are still handed out.
        cursor.fetch = FetchFrom::At(offset);
        Settled::Item(Item::Reset {
            cell: cell.clone(),
            epoch: cursor.epoch,
            offset,
        })
    }

    fn park(target: &Target, error: ClientError) -> Settled {
        let mut cursor = target.cell.cursor.lock();
        if cursor.epoch != target.epoch || cursor.fetch != FetchFrom::At(target.offset) {
            return Settled::Moved;
        }
        cursor.fetch = FetchFrom::Parked;
        Settled::Item(Item::Error {
            cell: target.cell.clone(),
            epoch: target.epoch,
            error,
        })
    }

    /// Gives partitions without an offset the one `auto_offset_reset` names.
    async fn resolve(
        &self,
        client: &Client,
        unresolved: Vec<(Arc<PartitionCell>, u64)>,
        slot: ChunkSlot,
    ) -> Round {
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            // Such partitions wait for a seek.
            OffsetReset::Error => {
                for (cell, epoch) in unresolved {
                    let mut cursor = cell.cursor.lock();
                    if cursor.epoch == epoch && cursor.fetch == FetchFrom::Unresolved {
                        cursor.fetch = FetchFrom::Parked;
                    }
                }
                drop(slot);
                return Round::Again;
            }
        };
        let mut items = Vec::new();
        let mut retry = false;
        for (cell, epoch) in unresolved {
            match client.list_offsets(&cell.topic, cell.partition, spec).await {
                Ok(offset) => {
                    let mut cursor = cell.cursor.lock();
                    if cursor.epoch == epoch && cursor.fetch == FetchFrom::Unresolved {
                        cursor.fetch = FetchFrom::At(offset);
                        cursor.position = Some(offset);
                    }
                }
                Err(e) if e.is_retryable() => retry = true,
                Err(e) => {
                    let mut cursor = cell.cursor.lock();
                    if cursor.epoch == epoch && cursor.fetch == FetchFrom::Unresolved {
                        cursor.fetch = FetchFrom::Parked;
                        drop(cursor);
                        items.push(Item::Error {
                            cell,
                            epoch,
                            error: e,
                        });
                    }
                }
            }
        }
        if items.is_empty() && retry {
            return Round::Failed;
        }
        self.queue(items, slot).await
    }

    pub(super) async fn queue(&self, items: Vec<Item>, slot: ChunkSlot) -> Round {
        if items.is_empty() {
            return Round::Again;
        }
        let chunk = Chunk {
            items: items.into(),
            _slot: slot,
        };
        match self.chunks.send(chunk).await {
            Ok(()) => Round::Again,
            Err(_closed) => Round::Closed,
        }
    }
}
