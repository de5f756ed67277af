//! A partition group under a simulated network (`turmoil`): three replicas
//! whose links are cut and mended and which crash and restart, half of the
//! restarts after a power loss (the segments lose what was not synced; the
//! Raft log is fsynced before it counts), while an idempotent producer gets
//! batches acknowledged through whichever replica leads, retrying each
//! until it is. A replica that falls behind the leader's purged Raft log
//! catches up through a snapshot and the leader's log. Meanwhile the
//! partition moves: a fourth broker, started with nothing and outside the
//! group, replaces one of the three (sometimes the leader), which then
//! stops (`sim/reassignment.rs`); faults strike the fourth broker too.
//!
//! Over many seeds it checks that every acknowledged batch is in the log
//! of every replica of the group the move left, exactly once, at the
//! offset it was acknowledged with; that those replicas hold the same
//! batches at the same offsets, densely, and have the new voters; that
//! the replica that left holds a prefix of that; and that no term had two
//! leaders. `BROOK_SIMULATION_SEEDS` and `BROOK_SIMULATION_FIRST_SEED`
//! choose the seeds, as for the metadata group.

#[path = "sim/reassignment.rs"]
mod reassignment;
mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_cluster::network::client::{RemoteLog, SharedChannels};
use brook_cluster::network::service::RaftServer;
use brook_cluster::partition::ElectionTimeouts;
use brook_cluster::partition::{
    AppliedBatch, HeartbeatClock, PartitionGroups, PartitionReplica, PartitionReplicaConfig,
    ProduceCommand,
};
use brook_cluster::{BrokerNode, ClusterError, NodeId};
use brook_record::{BatchBuilder, BatchHeader, BatchOptions, NewRecord};
use brook_storage::testing::MemStorage;
use brook_storage::{LogConfig, PartitionLog};
use bytes::Bytes;
use parking_lot::Mutex;
use reassignment::{Plan, Progress, Replicas, reassign};
use sim::{Leaders, PORT, SimConnector, run_with_faults, seeds};
use tonic::transport::Server;

/// The replicas the partition is created with.
const ORIGINAL: [NodeId; 3] = [1, 2, 3];
/// The broker the partition moves onto: it starts with no data, outside
/// the group, and joins it rather than forming it.
const NEWCOMER: NodeId = 4;
const BROKERS: [NodeId; 4] = [1, 2, 3, NEWCOMER];
const GROUP: &str = "events/0";
/// Batches the producer gets acknowledged per seed.
const BATCHES: i32 = 60;
const PRODUCER_ID: i64 = 7;
/// Faults stop after this much simulated time, so the group can heal.
const FAULTS_UNTIL: Duration = Duration::from_secs(30);
/// The move starts between these moments, while the faults go on.
const MOVE_FROM: Duration = Duration::from_secs(3);
const MOVE_UNTIL: Duration = Duration::from_secs(27);

fn host(id: NodeId) -> String {
    format!("broker-{id}")
}

fn node(id: NodeId) -> BrokerNode {
    BrokerNode::new(format!("{}:{PORT}", host(id)))
}

fn original_replicas() -> BTreeMap<NodeId, BrokerNode> {
    ORIGINAL.iter().map(|id| (*id, node(*id))).collect()
}

/// What the hosts share with the producer, the operator and the checks.
#[derive(Default)]
struct Shared {
    /// The latest instance of each replica.
    replicas: Replicas,
    /// Each replica's segments, carried from one start to the next.
    disks: Mutex<BTreeMap<NodeId, MemStorage>>,
    /// Starts of each replica so far.
    starts: Mutex<BTreeMap<NodeId, u32>>,
    power_losses: Mutex<u32>,
    leaders: Arc<Leaders>,
    /// The move of the partition onto `NEWCOMER`.
    moved: Mutex<Progress>,
}

/// The segments a replica starts with: new at its first start; after a
/// crash, every other time as a power loss leaves them (cut back to what
/// was synced), otherwise as the crashed process left them.
fn disk_for(shared: &Shared, id: NodeId) -> MemStorage {
    let starts = {
        let mut starts = shared.starts.lock();
        let count = starts.entry(id).or_default();
        *count += 1;
        *count
    };
    let mut disks = shared.disks.lock();
    let disk = match disks.get(&id) {
        None => MemStorage::default(),
        Some(previous) if starts % 2 == 0 => {
            *shared.power_losses.lock() += 1;
            previous.crash_image()
        }
        Some(previous) => previous.clone(),
    };
    disks.insert(id, disk.clone());
    disk
}

fn partition_dir() -> &'static Path {
    Path::new("/data/topics/events/0")
}

/// One broker: its replica, unless it left the group (then only the
/// Raft service, knowing no group), serving peers until the host crashes.
async fn broker(id: NodeId, dir: PathBuf, shared: Arc<Shared>) -> turmoil::Result {
    let groups = PartitionGroups::default();
    if !shared.replicas.has_left(id) {
        let replica = start_replica(id, dir, &shared).await?;
        groups.insert(replica.clone());
        if shared.replicas.started(&replica, &groups) {
            shared.leaders.watch(replica.raft().metrics());
            // Only the replicas the partition was created with form the
            // group; the newcomer waits to be added.
            if id != NEWCOMER {
                replica.initialize(original_replicas()).await?;
            }
        } else {
            groups.remove(replica.group());
            replica.shutdown().await;
        }
    }
    Server::builder()
        .add_service(RaftServer::new(None, groups).into_service())
        .serve_with_incoming(sim::listen().await?)
        .await?;
    Ok(())
}

async fn start_replica(
    id: NodeId,
    dir: PathBuf,
    shared: &Shared,
) -> anyhow::Result<PartitionReplica> {
    let disk = disk_for(shared, id);
    let (log, _) = PartitionLog::open(Arc::new(disk), partition_dir(), LogConfig::default())?;
    let mut config = PartitionReplicaConfig::new(id, GROUP, dir);
    // Snapshots and purges often, so that replicas back from a crash need
    // the snapshot path, not only the Raft log.
    config.snapshot_every = 8;
    config.kept_behind_snapshot = 4;
    config.heartbeat_interval = Duration::from_millis(50);
    // One window for all, unlike brokers' (ranked apart): elections are
    // contested as often as possible.
    config.election = ElectionTimeouts {
        first: (Duration::from_millis(150), Duration::from_millis(250)),
        stagger: Duration::ZERO,
        rank: 0,
    };
    // As in a broker: heartbeats on one clock, gathered per peer.
    config.heartbeat_clock = Some(HeartbeatClock::start(config.heartbeat_interval));
    Ok(PartitionReplica::start(
        &config,
        Arc::new(log),
        Arc::new(SharedChannels::new(Arc::new(SimConnector))),
        Arc::new(RemoteLog::new(Arc::new(SimConnector))),
    )
    .await?)
}

/// Every this many batches, one comes from a producer that is not
/// idempotent: its retries may be appended twice (at least once), but
/// every replica must hold the same copies.
const PLAIN_EVERY: i32 = 3;

/// The producer's batch of sequence `sequence`: one record naming it.
fn batch(sequence: i32) -> anyhow::Result<Bytes> {
    let options = if sequence % PLAIN_EVERY == 0 {
        BatchOptions::default()
    } else {
        BatchOptions {
            producer_id: PRODUCER_ID,
            producer_epoch: 0,
            base_sequence: idempotent_sequence(sequence),
            ..BatchOptions::default()
        }
    };
    let mut builder = BatchBuilder::new(options);
    builder.push(&NewRecord {
        timestamp: 1_000 + i64::from(sequence),
        key: None,
        value: Some(Bytes::from(format!("record-{sequence}"))),
        headers: Vec::new(),
    });
    Ok(builder.build()?)
}

/// The idempotent producer's sequence for the producer's `sequence`.
fn idempotent_sequence(sequence: i32) -> i32 {
    sequence - sequence / PLAIN_EVERY - 1
}

/// Produces through whichever replica leads; the batch's base offset once
/// acknowledged, `None` when no replica took it this time.
async fn produce(shared: &Shared, batch: &Bytes) -> Option<i64> {
    for replica in shared.replicas.members() {
        let command = ProduceCommand {
            batches: vec![batch.clone()],
            now_ms: 1_000,
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), replica.produce(command)).await;
        match answer {
            Ok(Ok(applied)) => match applied.batches.as_slice() {
                [
                    AppliedBatch::Appended { base_offset }
                    | AppliedBatch::Duplicate { base_offset },
                ] => return Some(*base_offset),
                other => panic!("a batch was refused: {other:?}"),
            },
            Ok(Err(ClusterError::NotLeader { .. } | ClusterError::Stopped(_))) | Err(_) => {}
            Ok(Err(other)) => panic!("produce: {other}"),
        }
    }
    None
}

/// The producer: each batch retried until acknowledged, in sequence order.
async fn producer(
    shared: Arc<Shared>,
    acknowledged: Arc<Mutex<BTreeMap<i32, i64>>>,
) -> turmoil::Result {
    for sequence in 0..BATCHES {
        let batch = batch(sequence)?;
        loop {
            if let Some(base_offset) = produce(&shared, &batch).await {
                acknowledged.lock().insert(sequence, base_offset);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wait, after the faults and the move, until every replica of the
    // group has applied the same.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if turmoil::elapsed() < FAULTS_UNTIL || shared.replicas.left().is_none() {
            continue;
        }
        let target = shared.moved.lock().target.clone();
        let replicas: Vec<_> = shared
            .replicas
            .members()
            .into_iter()
            .filter(|r| target.contains(&r.id()))
            .collect();
        let applied: BTreeSet<_> = replicas
            .iter()
            .map(|r| {
                (
                    r.raft().metrics().borrow().last_applied,
                    r.log().high_watermark(),
                )
            })
            .collect();
        if replicas.len() == target.len() && applied.len() == 1 {
            return Ok(());
        }
    }
}

/// Every batch of a replica's log: (base offset, producer sequence, CRC,
/// records).
fn batches_of(log: &PartitionLog) -> anyhow::Result<Vec<(i64, i32, u32, u32)>> {
    let mut batches = Vec::new();
    let mut offset = log.start_offset();
    while offset < log.high_watermark() {
        let read = log.read(offset, 64 * 1024)?;
        let mut records = read.records;
        ensure!(!records.is_empty(), "nothing read at offset {offset}");
        while !records.is_empty() {
            let header = BatchHeader::parse(&records)?;
            let length = header.total_len();
            batches.push((
                header.base_offset,
                header.base_sequence,
                header.crc,
                header.last_offset_delta + 1,
            ));
            offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
            records = records.slice(length.min(records.len())..);
        }
    }
    Ok(batches)
}

/// What a seed's run went through, to show that faults happened.
#[derive(Debug, Default)]
struct Run {
    crashes: u32,
    power_losses: u32,
    partitions: u32,
    terms_with_a_leader: usize,
    /// The replica the partition moved off, whether it led then, when the
    /// move was done and how many attempts it took.
    moved_off: Option<NodeId>,
    leader_moved_off: bool,
    moved_at: Option<Duration>,
    move_attempts: u32,
    simulated: Duration,
}

/// Each replica's view and the move's progress, for a run that did not
/// finish.
fn describe(shared: &Shared) -> String {
    let left = shared.replicas.left();
    let mut views = Vec::new();
    for id in BROKERS {
        let Some(replica) = shared.replicas.get(id) else {
            views.push(format!("{id}: never started"));
            continue;
        };
        let metrics = replica.raft().metrics().borrow().clone();
        views.push(format!(
            "{id}{}: {:?} term {} leader {:?} voters {:?} last log {:?} applied {:?} snapshot {:?} purged {:?} high watermark {} running {}",
            if left == Some(id) { " (left the group)" } else { "" },
            metrics.state,
            metrics.current_term,
            metrics.current_leader,
            metrics.membership_config.membership().get_joint_config(),
            metrics.last_log_index,
            metrics.last_applied.map(|l| l.index),
            metrics.snapshot.map(|l| l.index),
            metrics.purged.map(|l| l.index),
            replica.log().high_watermark(),
            metrics.running_state.is_ok(),
        ));
    }
    format!("{}; move: {:?}", views.join("; "), shared.moved.lock())
}

fn run_seed(seed: u64) -> anyhow::Result<Run> {
    let mut run = Run::default();
    let dirs: Vec<tempfile::TempDir> = BROKERS
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared::default());
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(300))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(30))
        .rng_seed(seed)
        .build();
    for (id, dir) in BROKERS.iter().zip(&dirs) {
        let (id, dir, shared) = (*id, dir.path().to_owned(), shared.clone());
        sim.host(host(id), move || broker(id, dir.clone(), shared.clone()));
    }
    sim.client("producer", producer(shared.clone(), acknowledged.clone()));
    let plan = Plan::for_seed(seed, &ORIGINAL, MOVE_FROM, MOVE_UNTIL);
    let operator = shared.clone();
    sim.client("operator", async move {
        let progress = &operator.moved;
        reassign(
            &operator.replicas,
            plan,
            &ORIGINAL,
            NEWCOMER,
            node,
            progress,
        )
        .await
    });

    let leader = || shared.replicas.known_leader();
    let struck =
        run_with_faults(&mut sim, seed, &BROKERS, host, leader, FAULTS_UNTIL).map_err(|e| {
            anyhow::anyhow!(
                "seed {seed}: {e}; acknowledged {} of {BATCHES}; replicas: {}",
                acknowledged.lock().len(),
                describe(&shared)
            )
        })?;
    run.crashes = struck.crashes;
    run.partitions = struck.partitions;

    let acknowledged = acknowledged.lock().clone();
    ensure!(
        acknowledged.len() == BATCHES as usize,
        "seed {seed}: only {} acknowledged",
        acknowledged.len()
    );
    check_logs(&shared, &acknowledged).map_err(|e| anyhow::anyhow!("seed {seed}: {e:#}"))?;
    run.terms_with_a_leader = shared
        .leaders
        .unique_per_term()
        .map_err(|e| anyhow::anyhow!("seed {seed}: {e}"))?;
    run.power_losses = *shared.power_losses.lock();
    let moved = shared.moved.lock().clone();
    run.moved_off = moved.leaving;
    run.leader_moved_off = moved.leaving_led;
    run.moved_at = moved.done_at;
    run.move_attempts = moved.attempts;
    run.simulated = sim.elapsed();
    Ok(run)
}

/// Checks the logs of the group the move left: every acknowledged batch
/// on every replica at its offset (an idempotent one exactly once), the
/// same batches everywhere, densely, and the new voters alone; the
/// replica that left holds a prefix of the same.
fn check_logs(shared: &Shared, acknowledged: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
    let moved = shared.moved.lock().clone();
    ensure!(moved.done_at.is_some(), "the move was not done: {moved:?}");
    let group: Vec<PartitionReplica> = moved
        .target
        .iter()
        .map(|id| {
            let replica = shared.replicas.get(*id);
            replica.with_context(|| format!("replica {id} never started"))
        })
        .collect::<Result<_, _>>()?;
    let logs: Vec<_> = group
        .iter()
        .map(|r| batches_of(r.log()))
        .collect::<Result<_, _>>()?;
    for (replica, batches) in group.iter().zip(&logs) {
        let id = replica.id();
        ensure!(
            *batches == logs[0],
            "replica {id} holds other batches than replica {}:\n{batches:?}\n{:?}",
            group[0].id(),
            logs[0]
        );
        let mut next = 0;
        for (base_offset, _, _, count) in batches {
            ensure!(
                *base_offset == next,
                "replica {id}: a batch at {base_offset}, expected {next}"
            );
            next += i64::from(*count);
        }
        for (sequence, base_offset) in acknowledged {
            let held = batches.iter().find(|b| b.0 == *base_offset);
            let expected = batch(*sequence)?;
            let expected = BatchHeader::parse(&expected)?;
            ensure!(
                held.is_some_and(|b| b.2 == expected.crc),
                "replica {id}: batch {sequence}, acknowledged at {base_offset}, is not there: {held:?}"
            );
            if sequence % PLAIN_EVERY != 0 {
                let copies = batches
                    .iter()
                    .filter(|b| b.1 == expected.base_sequence)
                    .count();
                ensure!(
                    copies == 1,
                    "replica {id}: the idempotent batch {sequence} is held {copies} times"
                );
            }
        }
        let metrics = replica.raft().metrics().borrow().clone();
        let configs = metrics.membership_config.membership().get_joint_config();
        ensure!(
            configs.len() == 1 && configs[0] == moved.target,
            "replica {id}: the group's voters are {configs:?}, not {:?}",
            moved.target
        );
    }
    if let Some(left) = moved.leaving.and_then(|id| shared.replicas.get(id)) {
        let batches = batches_of(left.log())?;
        ensure!(
            logs[0].starts_with(&batches),
            "replica {} that left holds batches the group does not:\n{batches:?}\n{:?}",
            left.id(),
            logs[0]
        );
    }
    Ok(())
}

#[test]
fn acknowledged_batches_survive_partitions_crashes_power_loss_and_a_move_on_every_replica() {
    // `RUST_LOG=openraft=warn` shows what the replicas saw.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    for seed in seeds() {
        match run_seed(seed) {
            Ok(run) => eprintln!("seed {seed}: {run:?}"),
            Err(e) => panic!("{e:#}"),
        }
    }
}
