//! Produce: every batch of a request is validated before any is queued
//! (nothing is partially appended because of bad input); then the batches
//! are queued to their partitions in request order and acknowledged once
//! the partitions' appenders report them written (and fsynced).
//!
//! Validation reads every record, as consumers will decode it, so a batch
//! that would stop every consumer at its offset is refused instead of
//! stored; the topic's `validate_records` says whether compressed batches
//! are decompressed for that (`brook_record::validate_produced_batch`).

use std::collections::HashMap;
use std::sync::Arc;

use brook_record::BatchHeader;
use bytes::Bytes;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::OwnedSemaphorePermit;

use super::Broker;
use crate::error::{Invalid, ProduceError};
use crate::metrics::Metrics;
use crate::partition::{Acknowledgement, Partition};
use brook_storage::BatchOutcome;

/// One encoded record batch for one partition.
#[derive(Debug, Clone)]
pub struct ProduceBatch {
    pub topic: String,
    pub partition: u32,
    pub batch: Bytes,
}

/// Where an acknowledged batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAppended {
    pub base_offset: i64,
    pub log_start_offset: i64,
    /// A retry of a batch already appended: `base_offset` is the original's.
    pub duplicate: bool,
}

/// Bytes of records a request's compressed batches may inflate to and
/// still be validated on the async worker without handing its other tasks
/// off: decompressing takes about a millisecond per MiB of records, far
/// more than a task should hold a worker.
const INLINE_DECOMPRESSED_BYTES_MAX: usize = 256 * 1024;

/// Bytes of records that requests being validated may inflate to at once,
/// across the broker: the bound on the memory and the threads that checking
/// compressed batches takes, whatever their headers declare (a few KiB of
/// zstd may declare 64 MiB). Requests beyond it wait their turn.
pub(super) const DECOMPRESSION_BYTES_IN_FLIGHT_MAX: usize = 256 * 1024 * 1024;

type PartitionGroup = (Arc<Partition>, Vec<(Bytes, BatchHeader)>, Vec<usize>);

/// Batches queued to one partition and where their results go in the response.
struct QueuedGroup {
    partition: Arc<Partition>,
    /// Records and bytes of each batch, counted once appended.
    sizes: Vec<(u64, u64)>,
    reply: Acknowledgement,
    positions: Vec<usize>,
}

impl std::fmt::Debug for QueuedGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedGroup")
            .field("partition", &self.partition.index())
            .field("batches", &self.positions.len())
            .finish_non_exhaustive()
    }
}

/// A produce request whose batches are queued; `wait` gives the results.
#[derive(Debug)]
pub struct PendingProduce {
    /// Held until the acknowledgements arrive.
    _memory: OwnedSemaphorePermit,
    groups: Vec<QueuedGroup>,
    batches: usize,
    metrics: Arc<Metrics>,
}

impl Broker {
    /// Validates and appends, returning one result per batch in request order.
    pub async fn produce(
        &self,
        batches: Vec<ProduceBatch>,
    ) -> Result<Vec<Result<BatchAppended, ProduceError>>, ProduceError> {
        Ok(self.enqueue_produce(batches).await?.wait().await)
    }

    /// Validates every batch, then queues them. Batches queued by one call
    /// are appended before those of any later call on the same partition,
    /// which is what keeps a pipelined stream in order.
    pub async fn enqueue_produce(
        &self,
        batches: Vec<ProduceBatch>,
    ) -> Result<PendingProduce, ProduceError> {
        if self.is_stopping() {
            return Err(ProduceError::ShuttingDown);
        }
        self.metrics.produce_requests.inc();
        let max = self.config.limits.produce_batches_max;
        if batches.is_empty() || batches.len() > max {
            return Err(Invalid::new(
                "batches",
                format!(
                    "a produce request holds 1 to {max} batches, got {}",
                    batches.len()
                ),
            )
            .into());
        }
        let count = batches.len();
        // What the compressed batches declare they inflate to, from their
        // headers: validation may decompress that much.
        let inflating: usize = batches
            .iter()
            .map(|b| brook_record::decompressed_size_bound(&b.batch))
            .sum();
        let groups = if inflating == 0 {
            self.validate_and_group(batches)?
        } else {
            let _inflating = self
                .decompression
                .clone()
                .acquire_many_owned(permits_for(inflating, DECOMPRESSION_BYTES_IN_FLIGHT_MAX))
                .await
                // Closed only when the broker drops.
                .map_err(|_closed| ProduceError::ShuttingDown)?;
            if inflating > INLINE_DECOMPRESSED_BYTES_MAX
                && Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread
            {
                // Decompressing megabytes takes milliseconds: let the
                // runtime move this worker's other tasks elsewhere meanwhile.
                tokio::task::block_in_place(|| self.validate_and_group(batches))?
            } else {
                self.validate_and_group(batches)?
            }
        };
        // Wait for room before queuing: this is where producers feel
        // backpressure when the partitions fall behind.
        let max = self.config.limits.produce_bytes_in_flight_max;
        let bytes: usize = groups.iter().flat_map(|g| &g.1).map(|(b, _)| b.len()).sum();
        let memory = self
            .produce_memory
            .clone()
            .acquire_many_owned(permits_for(bytes, max))
            .await
            // Closed only when the broker drops.
            .map_err(|_closed| ProduceError::ShuttingDown)?;
        let mut queued = Vec::with_capacity(groups.len());
        for (partition, batches, positions) in groups {
            let sizes = batches
                .iter()
                .map(|(b, h)| (u64::from(h.record_count), b.len() as u64))
                .collect();
            let reply = partition.enqueue(batches).await;
            queued.push(QueuedGroup {
                partition,
                sizes,
                reply,
                positions,
            });
        }
        Ok(PendingProduce {
            _memory: memory,
            groups: queued,
            batches: count,
            metrics: self.metrics.clone(),
        })
    }

    /// Validates every batch (records included, as the topic's
    /// `validate_records` says) and groups them by partition, keeping each
    /// batch's position in the request.
    fn validate_and_group(
        &self,
        batches: Vec<ProduceBatch>,
    ) -> Result<Vec<PartitionGroup>, ProduceError> {
        // Per partition: its batches and their positions in the request.
        let mut groups: Vec<PartitionGroup> = Vec::new();
        let mut group_of: HashMap<(String, u32), usize> = HashMap::new();
        for (position, produced) in batches.into_iter().enumerate() {
            let topic = self.topic(&produced.topic)?;
            let partition = topic.partition(&produced.topic, produced.partition)?;
            let (max_bytes, validation) = topic.produce_checks(&self.config.topic_defaults);
            let header = brook_record::validate_produced_batch(
                &produced.batch,
                max_bytes as usize,
                validation,
            )
            .map_err(|source| ProduceError::InvalidBatch {
                topic: produced.topic.clone(),
                partition: produced.partition,
                source,
            })?;
            self.producer_epochs
                .check(&header, &produced.topic, produced.partition)?;
            let key = (produced.topic, produced.partition);
            let index = *group_of.entry(key).or_insert_with(|| {
                groups.push((partition, Vec::new(), Vec::new()));
                groups.len() - 1
            });
            groups[index].1.push((produced.batch, header));
            groups[index].2.push(position);
        }
        Ok(groups)
    }
}

/// Semaphore permits for `bytes` of batches, one per KiB (rounded up), at
/// most the permits `max` bytes make, so one huge request can still go
/// through alone.
pub(super) fn permits_for(bytes: usize, max: usize) -> u32 {
    let kib = |b: usize| u32::try_from(b.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
    kib(bytes).min(kib(max))
}

impl PendingProduce {
    /// Waits for every partition's acknowledgement.
    pub async fn wait(self) -> Vec<Result<BatchAppended, ProduceError>> {
        let mut results: Vec<Option<Result<BatchAppended, ProduceError>>> =
            (0..self.batches).map(|_| None).collect();
        for group in self.groups {
            let topic = group.partition.topic();
            let index = group.partition.index();
            let outcome = group.reply.await;
            match outcome {
                Ok(outcomes) => {
                    let log_start_offset = group.partition.log().start_offset();
                    let (mut records, mut bytes) = (0, 0);
                    for ((position, outcome), size) in
                        group.positions.into_iter().zip(outcomes).zip(group.sizes)
                    {
                        results[position] = Some(match outcome {
                            BatchOutcome::Appended(base_offset) => {
                                records += size.0;
                                bytes += size.1;
                                Ok(BatchAppended {
                                    base_offset,
                                    log_start_offset,
                                    duplicate: false,
                                })
                            }
                            BatchOutcome::Duplicate(base_offset) => Ok(BatchAppended {
                                base_offset,
                                log_start_offset,
                                duplicate: true,
                            }),
                            BatchOutcome::Refused(source) => Err(ProduceError::Sequence {
                                topic: topic.to_owned(),
                                partition: index,
                                source,
                            }),
                        });
                    }
                    self.metrics.record_produced(topic, records, bytes);
                }
                Err(failure) => {
                    for position in group.positions {
                        let error = failure.clone().into_partition_error(topic, index);
                        results[position] = Some(Err(error.into()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.expect("every position gets a result: the appender answers each batch it takes")
            })
            .collect()
    }
}
