//! The broker's Prometheus metrics: counters and histograms updated on the
//! request, append and fsync paths, plus gauges read from the broker's state
//! at scrape time (partition offsets and sizes, process memory and files).
//!
//! Each broker owns its registry, so several embedded brokers in one process
//! keep separate figures. Names carry their unit.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::broker::Broker;

mod principal;

pub use principal::{OTHER_PRINCIPALS, PRINCIPAL_LABELS_MAX, PrincipalMetrics};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartitionLabels {
    group: String,
    topic: String,
    partition: u32,
}

/// Latency buckets from 50 µs to about 13 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub produce_requests: Counter,
    pub fetch_requests: Counter,
    pub produced_records: Family<TopicLabels, Counter>,
    pub produced_bytes: Family<TopicLabels, Counter>,
    pub fetched_records: Family<TopicLabels, Counter>,
    pub fetched_bytes: Family<TopicLabels, Counter>,
    pub request_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub append_duration: Histogram,
    pub fsync_duration: Histogram,
    pub group_commit_batches: Histogram,
    pub open_connections: Gauge,
    /// gRPC connections closed at once because `connections_max` were open.
    pub refused_connections: Counter,
    /// gRPC messages refused because the receive buffer budget was spent
    /// or the message did not arrive in time.
    pub refused_messages: Counter,
    pub open_streams: Family<StreamLabels, Gauge>,
    pub group_rebalances: Family<GroupLabels, Counter>,
    /// Bytes and quota throttling per principal.
    pub principals: PrincipalMetrics,
    /// The cluster's metadata group as this broker sees it (zero when the
    /// broker runs alone).
    pub metadata_term: Gauge,
    /// 1 while this broker leads the metadata group.
    pub metadata_leader: Gauge,
    /// Times this broker saw the metadata group's leader change (an
    /// election won by someone, or the leader lost).
    pub metadata_leader_changes: Counter,
    /// Partition replicas running on this broker, and how many of them lead.
    pub partition_replicas: Gauge,
    pub partitions_led: Gauge,
    /// Terms begun in the partition groups this broker holds replicas of
    /// (each an election).
    pub partition_elections: Counter,
    /// Replicas here that have not caught up with their leader since they
    /// started (what keeps `/ready` at 503).
    pub replicas_catching_up: Gauge,
    /// Slots of consumer groups this broker coordinates.
    pub coordinated_group_slots: Gauge,
    /// Over the partitions this broker leads: the most Raft entries a
    /// follower is behind.
    pub replica_lag_max: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            produce_requests: Counter::default(),
            fetch_requests: Counter::default(),
            produced_records: Family::default(),
            produced_bytes: Family::default(),
            fetched_records: Family::default(),
            fetched_bytes: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            append_duration: latency_histogram(),
            fsync_duration: latency_histogram(),
            group_commit_batches: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
            refused_messages: Counter::default(),
            open_streams: Family::default(),
            group_rebalances: Family::default(),
            principals: PrincipalMetrics::register(&mut registry),
            metadata_term: Gauge::default(),
            metadata_leader: Gauge::default(),
            metadata_leader_changes: Counter::default(),
            partition_replicas: Gauge::default(),
            partitions_led: Gauge::default(),
            partition_elections: Counter::default(),
            replicas_catching_up: Gauge::default(),
            coordinated_group_slots: Gauge::default(),
            replica_lag_max: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "brook_produce_requests",
            "Produce requests (unary, and each request of a stream)",
            m.produce_requests.clone(),
        );
        registry.register(
            "brook_fetch_requests",
            "Fetch requests",
            m.fetch_requests.clone(),
        );
        registry.register(
            "brook_produced_records",
            "Records acknowledged to producers",
            m.produced_records.clone(),
        );
        registry.register_with_unit(
            "brook_produced",
            "Record batch bytes acknowledged to producers",
            Unit::Bytes,
            m.produced_bytes.clone(),
        );
        registry.register(
            "brook_fetched_records",
            "Records returned by fetches and subscriptions (whole batches)",
            m.fetched_records.clone(),
        );
        registry.register_with_unit(
            "brook_fetched",
            "Record batch bytes returned by fetches and subscriptions",
            Unit::Bytes,
            m.fetched_bytes.clone(),
        );
        registry.register_with_unit(
            "brook_request_duration",
            "gRPC request handling time by method",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register_with_unit(
            "brook_append_duration",
            "Time to write one group-commit round of batches to the log (before fsync)",
            Unit::Seconds,
            m.append_duration.clone(),
        );
        registry.register_with_unit(
            "brook_fsync_duration",
            "Time of one log fsync",
            Unit::Seconds,
            m.fsync_duration.clone(),
        );
        registry.register(
            "brook_group_commit_batches",
            "Batches made durable by one fsync",
            m.group_commit_batches.clone(),
        );
        registry.register(
            "brook_open_connections",
            "Open gRPC connections",
            m.open_connections.clone(),
        );
        registry.register(
            "brook_refused_connections",
            "gRPC connections closed as soon as accepted because max_connections were open",
            m.refused_connections.clone(),
        );
        registry.register(
            "brook_refused_messages",
            "gRPC messages refused because max_receive_buffer_bytes was spent or they arrived too slowly",
            m.refused_messages.clone(),
        );
        registry.register(
            "brook_open_streams",
            "Open gRPC streams by kind",
            m.open_streams.clone(),
        );
        registry.register(
            "brook_group_rebalances",
            "Target assignment changes (generations) of a consumer group",
            m.group_rebalances.clone(),
        );
        registry.register(
            "brook_cluster_metadata_term",
            "The cluster metadata group's term as this broker knows it",
            m.metadata_term.clone(),
        );
        registry.register(
            "brook_cluster_metadata_leader",
            "1 while this broker leads the cluster's metadata group",
            m.metadata_leader.clone(),
        );
        registry.register(
            "brook_cluster_metadata_leader_changes",
            "Changes of the metadata group's leader seen by this broker",
            m.metadata_leader_changes.clone(),
        );
        registry.register(
            "brook_cluster_partition_replicas",
            "Partition replicas running on this broker",
            m.partition_replicas.clone(),
        );
        registry.register(
            "brook_cluster_partitions_led",
            "Partitions this broker's replicas lead",
            m.partitions_led.clone(),
        );
        registry.register(
            "brook_cluster_partition_elections",
            "Terms begun in the partition groups this broker holds replicas of (elections)",
            m.partition_elections.clone(),
        );
        registry.register(
            "brook_cluster_replicas_catching_up",
            "Replicas on this broker that have not caught up with their leader since they started",
            m.replicas_catching_up.clone(),
        );
        registry.register(
            "brook_cluster_coordinated_group_slots",
            "Slots of consumer groups (of 16) this broker coordinates",
            m.coordinated_group_slots.clone(),
        );
        registry.register(
            "brook_cluster_replica_lag_max",
            "Over the partitions this broker leads, the most Raft entries a follower is behind",
            m.replica_lag_max.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Starts timing a gRPC method; the time is recorded when the guard drops.
    pub fn time_request(&self, method: &'static str) -> RequestTimer {
        RequestTimer {
            histogram: self
                .request_duration
                .get_or_create_owned(&MethodLabels { method }),
            started: Instant::now(),
        }
    }

    /// Counts an open stream until the guard drops.
    pub fn open_stream(&self, kind: &'static str) -> GaugeGuard {
        GaugeGuard::new(
            self.open_streams
                .get_or_create_owned(&StreamLabels { kind }),
        )
    }

    pub fn record_produced(&self, topic: &str, records: u64, bytes: u64) {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.produced_records.get_or_create(&labels).inc_by(records);
        self.produced_bytes.get_or_create(&labels).inc_by(bytes);
    }

    pub fn record_fetched(&self, topic: &str, records: u64, bytes: u64) {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.fetched_records.get_or_create(&labels).inc_by(records);
        self.fetched_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// The text exposition: the registry, then the gauges read now.
    pub fn render(&self, broker: &Broker) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)?;
        encode_registry(&mut text, &scrape_time_registry(broker))?;
        encode_eof(&mut text)?;
        Ok(text)
    }
}

/// Gauges computed from the broker's state at scrape time, so that deleted
/// topics disappear with them.
fn scrape_time_registry(broker: &Broker) -> Registry {
    let mut registry = Registry::default();
    let start: Family<PartitionLabels, Gauge> = Family::default();
    let end: Family<PartitionLabels, Gauge> = Family::default();
    let size: Family<PartitionLabels, Gauge> = Family::default();
    let segments: Family<PartitionLabels, Gauge> = Family::default();
    for (topic, partition, info) in broker.partition_states() {
        let labels = PartitionLabels { topic, partition };
        start.get_or_create(&labels).set(info.start_offset);
        end.get_or_create(&labels).set(info.end_offset);
        size.get_or_create(&labels)
            .set(i64::try_from(info.size_bytes).unwrap_or(i64::MAX));
        segments
            .get_or_create(&labels)
            .set(i64::from(info.segments));
    }
    registry.register(
        "brook_partition_start_offset",
        "First offset still retained",
        start,
    );
    registry.register(
        "brook_partition_end_offset",
        "Offset the next record will get (high watermark)",
        end,
    );
    registry.register_with_unit(
        "brook_partition_size",
        "Bytes of segment files",
        Unit::Bytes,
        size,
    );
    registry.register("brook_partition_segments", "Segment files", segments);
    let quarantined: Gauge = Gauge::default();
    quarantined.set(i64::try_from(broker.quarantined_topics().len()).unwrap_or(i64::MAX));
    registry.register(
        "brook_quarantined_topics",
        "Topic directories found without metadata at start and moved aside (see /health)",
        quarantined,
    );
    let lost: Family<PartitionLabels, Counter> = Family::default();
    for (topic, partition, records) in broker.lost_records() {
        lost.get_or_create(&PartitionLabels { topic, partition })
            .inc_by(records);
    }
    registry.register(
        "brook_partition_lost_records",
        "Acknowledged records found missing since the broker started: short of the clean-shutdown mark or recovery point at open (refused or accepted), or in an active segment removed under the broker",
        lost,
    );
    let damaged: Gauge = Gauge::default();
    damaged.set(i64::try_from(broker.damaged_partitions().len()).unwrap_or(i64::MAX));
    registry.register(
        "brook_damaged_partitions",
        "Partitions refusing reads and writes because acknowledged data is missing (see /health)",
        damaged,
    );
    let groups = broker.group_metrics();
    let members: Family<GroupLabels, Gauge> = Family::default();
    for (group, count) in groups.members {
        members
            .get_or_create(&GroupLabels { group })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "brook_group_members",
        "Members of a consumer group with members",
        members,
    );
    let lag: Family<GroupPartitionLabels, Gauge> = Family::default();
    for (group, tp, records) in groups.lag {
        let labels = GroupPartitionLabels {
            group,
            topic: tp.topic,
            partition: tp.partition,
        };
        lag.get_or_create(&labels).set(records);
    }
    registry.register(
        "brook_group_lag",
        "Records between a group's committed offset (or the start offset) and the end offset",
        lag,
    );
    let omitted: Gauge = Gauge::default();
    omitted.set(i64::try_from(groups.lag_groups_omitted).unwrap_or(i64::MAX));
    registry.register(
        "brook_group_lag_omitted_groups",
        "Groups whose brook_group_lag series are left out to keep the scrape bounded",
        omitted,
    );
    let process = crate::process::sample();
    if let Some(rss) = process.resident_memory_bytes {
        let gauge: Gauge = Gauge::default();
        gauge.set(rss);
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory",
            Unit::Bytes,
            gauge,
        );
    }
    if let Some(virtual_bytes) = process.virtual_memory_bytes {
        let gauge: Gauge = Gauge::default();
        gauge.set(virtual_bytes);
        registry.register_with_unit(
            "process_virtual_memory",
            "Virtual memory",
            Unit::Bytes,
            gauge,
        );
    }
    if let Some(fds) = process.open_fds {
        let gauge: Gauge = Gauge::default();
        gauge.set(fds);
        registry.register("process_open_fds", "Open file descriptors", gauge);
    }
    if let Some(threads) = process.threads {
        let gauge: Gauge = Gauge::default();
        gauge.set(threads);
        registry.register("process_threads", "OS threads", gauge);
    }
    registry
}

/// Records the time since it was made into a histogram when dropped.
#[derive(Debug)]
pub struct RequestTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Increments a gauge now and decrements it when dropped.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Shared handle, as the broker and its servers hold it.
pub type SharedMetrics = Arc<Metrics>;
