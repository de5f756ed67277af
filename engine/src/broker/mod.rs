//! The broker as a library: topics and their partitions, opened from the
//! metadata store and the data directory, with the operations the gRPC
//! services (and embedders, directly) call.
//!
//! Invariant: this module speaks in domain types; it knows neither protobuf
//! nor the store behind `MetaStore`.

mod acls;
mod admin;
mod fetch;
mod groups;
mod open;
mod produce;
mod producers;
mod quotas;
mod recover;
mod topic;

pub use admin::{PartitionInfo, TopicInfo};
pub use fetch::{FetchSpec, Fetched, OffsetSpec, Subscription, SubscriptionChunk};
pub use produce::{BatchAppended, PendingProduce, ProduceBatch};
pub use recover::{
    RecoveredPartition, RecoveredTopic, quarantined_topic_name, recover_quarantined_topic,
};
pub(crate) use topic::resolve_settings as resolve_topic_settings;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::acl::Authorizer;
use crate::config::{AuthorizerMode, BrokerConfig, FsyncPolicy};
use crate::error::{Invalid, NotFound, OpenError, blocking};
use crate::group::Groups;
use crate::meta::MetaStore;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::quota::Quotas;
use brook_storage::{OpenSegments, SyncGroup};
use open::Opened;
pub use open::QuarantinedTopic;
pub(crate) use open::open_partition_log;
use topic::Topic;

#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    meta: Arc<dyn MetaStore>,
    /// Topics by name. Held only briefly; never across an await.
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes admin changes so the store and the directories agree.
    admin: tokio::sync::Mutex<()>,
    /// Stops the background tasks (retention, interval fsync).
    background: CancellationToken,
    metrics: Arc<Metrics>,
    /// Bounds the batch bytes queued to partitions and not yet acknowledged;
    /// one permit per KiB (see `produce::permits_for`).
    produce_memory: Arc<tokio::sync::Semaphore>,
    /// Bounds the bytes compressed batches being validated may inflate to
    /// (see `produce::DECOMPRESSION_BYTES_IN_FLIGHT_MAX`); one permit per KiB.
    decompression: Arc<tokio::sync::Semaphore>,
    /// Current epoch of every idempotent producer.
    producer_epochs: producers::ProducerEpochs,
    /// The ACLs, and the decision made from them.
    authorizer: Authorizer,
    /// Consumer groups: live members and committed offsets.
    groups: Arc<Groups>,
    /// Lets partitions that fsync at the same time share one sync.
    sync_group: Arc<SyncGroup>,
    /// The bound on sealed segments' open log files, shared by every
    /// partition: descriptors are a process's, not a partition's.
    open_segments: Arc<OpenSegments>,
    /// Topic directories found without metadata at open, moved aside.
    quarantined: Vec<QuarantinedTopic>,
    /// Client quotas and the accounts that enforce them.
    quotas: Quotas,
}

impl Broker {
    /// Opens the data directory: loads the topics, recovers every partition,
    /// removes directories of topics that no longer exist, and starts the
    /// background tasks.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Self>, OpenError> {
        let started = std::time::Instant::now();
        config.groups.check()?;
        if config.open_segments_max == 0 {
            return Err(Invalid::new("open_segments_max", "must be at least 1").into());
        }
        let open_segments = Arc::new(OpenSegments::new(config.open_segments_max));
        let config_produce_bytes = config.limits.produce_bytes_in_flight_max;
        let metrics = Arc::new(Metrics::new());
        let opening = config.clone();
        let Opened {
            meta,
            logs,
            producer_epochs,
            producer_owners,
            acls,
            offsets,
            sync_group,
            quarantined,
            quotas,
        } = blocking(move || open::open_data_dir(&opening)).await??;
        let producer_epochs = producers::ProducerEpochs::new(
            producer_epochs,
            config.limits.producer_ids_max,
            config.cluster.is_some(),
        );
        producer_epochs.set_owners(producer_owners);
        let authorizer = match config.authorizer {
            AuthorizerMode::Acl => Authorizer::with_acls(config.super_users.iter().cloned(), acls),
            _ => Authorizer::disabled(),
        };
        let mut topics = HashMap::new();
        for (record, logs) in logs {
            let partitions = logs
                .into_iter()
                .enumerate()
                .map(|(i, log)| {
                    Partition::start(
                        &record.name,
                        i as u32,
                        log,
                        config.fsync,
                        sync_group_for(&sync_group, &config.data_dir, &record.name, i as u32),
                        &open_segments,
                        metrics.clone(),
                        config.cluster.is_some(),
                    )
                })
                .collect();
            topics.insert(
                record.name.clone(),
                Arc::new(Topic::new(record, partitions)),
            );
        }
        let background = CancellationToken::new();
        let groups = Arc::new(Groups::new(
            config.groups,
            offsets,
            metrics.clone(),
            background.clone(),
        ));
        let broker = Arc::new(Self {
            config,
            meta,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            background,
            produce_memory: Arc::new(tokio::sync::Semaphore::new(produce::permits_for(
                config_produce_bytes,
                config_produce_bytes,
            ) as usize)),
            decompression: Arc::new(tokio::sync::Semaphore::new(produce::permits_for(
                produce::DECOMPRESSION_BYTES_IN_FLIGHT_MAX,
                produce::DECOMPRESSION_BYTES_IN_FLIGHT_MAX,
            ) as usize)),
            metrics,
            producer_epochs,
            authorizer,
            groups,
            sync_group,
            open_segments,
            quarantined,
            quotas: Quotas::new(quotas),
        });
        broker.spawn_background();
        tracing::info!(
            data_dir = %broker.config.data_dir.display(),
            topics = broker.topics.read().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            fsync = %broker.config.fsync,
            "broker opened"
        );
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Decides whether a principal may do an operation on a resource.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// Whether `begin_shutdown` was called.
    pub fn is_stopping(&self) -> bool {
        self.background.is_cancelled()
    }

    /// Every partition's offsets and size, for metrics.
    pub fn partition_states(&self) -> Vec<(String, u32, PartitionInfo)> {
        self.all_partitions()
            .iter()
            .map(|p| (p.topic().to_owned(), p.index(), admin::partition_info(p)))
            .collect()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, NotFound> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| NotFound::Topic(name.to_owned()))
    }

    /// A partition of a topic, as it runs on this broker.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, NotFound> {
        self.topic(topic)?.partition(topic, partition)
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .values()
            .flat_map(|t| t.partitions())
            .collect()
    }

    fn spawn_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let stop = self.background.clone();
        let interval = self.config.retention_check_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let Some(broker) = weak.upgrade() else { break };
                broker.enforce_retention().await;
                broker.expire_groups(brook_storage::now_ms()).await;
                broker.quotas.sweep();
            }
        });
        if let FsyncPolicy::Interval(every) = self.config.fsync {
            let weak = Arc::downgrade(self);
            let stop = self.background.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = ticks.tick() => {}
                    }
                    let Some(broker) = weak.upgrade() else { break };
                    broker.sync_all().await;
                }
            });
        }
    }

    /// Applies retention to every partition now.
    pub async fn enforce_retention(&self) {
        let now_ms = brook_storage::now_ms();
        self.on_every_partition("retention", move |partition| {
            if let Err(e) = partition.log().enforce_retention(now_ms) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "retention failed");
            }
        })
        .await;
    }

    /// Fsyncs every partition (a failure poisons that partition).
    pub async fn sync_all(&self) {
        self.on_every_partition("fsync", |partition| {
            if partition.log().poisoned().is_none() {
                // The error is logged by the poisoning itself.
                let _ = partition.log().sync();
            }
        })
        .await;
    }

    /// Runs `work` on every partition, one after the other, on the
    /// blocking pool (it does file I/O); `task` names it in the log if the
    /// pool's task fails.
    async fn on_every_partition(
        &self,
        task: &'static str,
        work: impl Fn(&Partition) + Send + 'static,
    ) {
        let partitions = self.all_partitions();
        let result =
            tokio::task::spawn_blocking(move || partitions.iter().for_each(|p| work(p))).await;
        if let Err(e) = result {
            tracing::error!(error = %e, task, "partition task failed");
        }
    }

    /// Starts stopping: background work ends, long polls return, and
    /// subscriptions and produce streams finish, so that servers can drain.
    pub fn begin_shutdown(&self) {
        self.background.cancel();
    }

    /// Resolves once `begin_shutdown` was called.
    pub async fn stopping(&self) {
        self.background.cancelled().await;
    }

    /// Stops background work, fsyncs every partition and marks it cleanly
    /// shut down (so the next start need not check its active segment
    /// batch by batch). Call after the servers stopped taking requests.
    pub async fn shutdown(&self) {
        self.background.cancel();
        self.on_every_partition("clean shutdown", |partition| {
            // A damaged partition keeps its files as they are: its old
            // mark stays, so the next start reports it again.
            if partition.log().poisoned().is_some() || partition.log().damage().is_some() {
                return;
            }
            if let Err(e) = partition.log().close_clean() {
                tracing::warn!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    error = %e,
                    "clean shutdown failed; the partition is recovered in full at the next start"
                );
            }
        })
        .await;
        tracing::info!("broker stopped");
    }

    /// Topic directories found without metadata when the broker opened,
    /// and where their files were moved.
    pub fn quarantined_topics(&self) -> &[QuarantinedTopic] {
        &self.quarantined
    }

    /// Partitions that refuse reads and writes because acknowledged data
    /// is missing (found at open, or files removed under the broker).
    pub fn damaged_partitions(&self) -> Vec<(String, u32, brook_storage::Damage)> {
        self.all_partitions()
            .iter()
            .filter_map(|p| {
                p.log()
                    .damage()
                    .map(|damage| (p.topic().to_owned(), p.index(), damage))
            })
            .collect()
    }

    /// Partitions whose last append failed for want of a resource (disk
    /// space, file descriptors), with the failure; each leaves the list by
    /// itself with its next successful append.
    pub fn partitions_short_of_resources(&self) -> Vec<(String, u32, brook_storage::Shortage)> {
        self.all_partitions()
            .iter()
            .filter_map(|p| {
                p.log()
                    .write_shortage()
                    .map(|shortage| (p.topic().to_owned(), p.index(), shortage))
            })
            .collect()
    }

    /// Acknowledged records each partition found missing since the broker
    /// opened (accepted or not), for metrics.
    pub fn lost_records(&self) -> Vec<(String, u32, u64)> {
        self.all_partitions()
            .iter()
            .map(|p| (p.topic().to_owned(), p.index(), p.log().lost_records()))
            .filter(|(_, _, lost)| *lost > 0)
            .collect()
    }

    /// Partitions that refuse writes after a failed write or fsync, with the reason.
    pub fn poisoned_partitions(&self) -> Vec<(String, u32, String)> {
        self.all_partitions()
            .iter()
            .filter_map(|p| {
                p.log()
                    .poisoned()
                    .map(|reason| (p.topic().to_owned(), p.index(), reason))
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    topics_dir(data_dir).join(topic).join(partition.to_string())
}

/// The broker's shared `SyncGroup` for a partition on the data directory's
/// file system; a group of its own (each sync its own files) for one whose
/// directory is on another (a mount or a symlink), which `syncfs` of the
/// data directory would not cover.
fn sync_group_for(
    shared: &Arc<SyncGroup>,
    data_dir: &Path,
    topic: &str,
    partition: u32,
) -> Arc<SyncGroup> {
    let dir = partition_dir(data_dir, topic, partition);
    if shared.covers(&dir) {
        shared.clone()
    } else {
        tracing::info!(dir = %dir.display(), "partition on another file system; it syncs its own files");
        Arc::new(SyncGroup::per_file())
    }
}
