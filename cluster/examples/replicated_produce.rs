//! What replicating a partition costs, measured on this machine: partition
//! groups of 1 and of 3 replicas over loopback gRPC, produces through the
//! leader's `Proposer` (as a broker makes them), each replica fsyncing its
//! Raft log before an entry counts.
//!
//! ```sh
//! # records/s, MB/s and latency percentiles, 1 replica against 3
//! cargo run --release -p brook-cluster --example replicated_produce -- \
//!     throughput [record bytes (1024)] [records per batch (64)] [batches in flight (32)] [seconds (5)]
//! # produce latency at a fixed rate of single-record produces, 1 replica against 3
//! cargo run --release -p brook-cluster --example replicated_produce -- \
//!     latency [records/s (10000)] [record bytes (1024)] [seconds (5)]
//! # the leader stopped under a steady producer, again and again: time to
//! # the first produce acknowledged by the new leader
//! cargo run --release -p brook-cluster --example replicated_produce -- failover [cycles (20)]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use brook_cluster::BrokerNode;
use brook_cluster::network::client::{
    Connector, HTTP2_CONNECTION_WINDOW, HTTP2_STREAM_WINDOW, RemoteLog, TcpConnector,
};
use brook_cluster::network::service::RaftServer;
use brook_cluster::partition::{
    PartitionGroups, PartitionReplica, PartitionReplicaConfig, Proposer,
};
use brook_record::{BatchBuilder, BatchOptions, NewRecord};
use brook_storage::{LogConfig, OsStorage, PartitionLog};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

const GROUP: &str = "bench/0";

fn batch(record_bytes: usize, records: usize) -> anyhow::Result<Bytes> {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let value = Bytes::from(vec![b'x'; record_bytes]);
    for _ in 0..records {
        builder.push(&NewRecord {
            timestamp: 1,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        });
    }
    Ok(builder.build()?)
}

/// One replica: its Raft, its proposer and the server peers reach it on.
struct Node {
    id: u64,
    replica: PartitionReplica,
    proposer: Proposer,
    server: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    /// Starts replica `id` on `address`, with its files under `dir`.
    async fn start(
        id: u64,
        address: &str,
        dir: &Path,
        connector: Arc<dyn Connector>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let (log, _) = PartitionLog::open(
            Arc::new(OsStorage),
            &dir.join("topics/bench/0"),
            LogConfig::default(),
        )?;
        let config = PartitionReplicaConfig::new(id, GROUP, dir.join("raft/bench/0"));
        let replica = PartitionReplica::start(
            &config,
            Arc::new(log),
            connector.clone(),
            Arc::new(RemoteLog::new(connector)),
        )
        .await?;
        let groups = PartitionGroups::default();
        groups.insert(replica.clone());
        let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
        let serving = tonic::transport::Server::builder()
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .add_service(RaftServer::new(None, groups).into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopping.await;
            });
        let server = tokio::spawn(async move {
            let _ = serving.await;
        });
        Ok(Self {
            id,
            proposer: Proposer::start(replica.clone()),
            replica,
            server,
            stop,
        })
    }

    fn leads(&self) -> bool {
        self.replica.leader() == Some(self.id)
    }

    /// Stops it as a crash would, as far as its peers can tell: its Raft
    /// first, then its connections.
    async fn stop(self) {
        self.replica.shutdown().await;
        let _ = self.stop.send(());
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(1), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
}

/// A group of replicas on loopback, each in its own directory.
struct Group {
    nodes: Vec<Node>,
    addresses: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, PathBuf>,
    connector: Arc<dyn Connector>,
    _files: tempfile::TempDir,
}

impl Group {
    async fn start(count: u64) -> anyhow::Result<Self> {
        let files = tempfile::tempdir()?;
        let mut addresses = BTreeMap::new();
        for id in 1..=count {
            // A free port, released for the node to bind.
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            addresses.insert(id, probe.local_addr()?.to_string());
        }
        let connector: Arc<dyn Connector> = Arc::new(TcpConnector::plain(Duration::from_secs(1)));
        let dirs: BTreeMap<u64, PathBuf> = (1..=count)
            .map(|id| (id, files.path().join(format!("broker-{id}"))))
            .collect();
        let mut nodes = Vec::new();
        for (id, address) in &addresses {
            nodes.push(Node::start(*id, address, &dirs[id], connector.clone()).await?);
        }
        let members: BTreeMap<u64, BrokerNode> = addresses
            .iter()
            .map(|(id, address)| (*id, BrokerNode::new(address.clone())))
            .collect();
        for node in &nodes {
            node.replica.initialize(members.clone()).await?;
        }
        let group = Self {
            nodes,
            addresses,
            dirs,
            connector,
            _files: files,
        };
        group.leader(Duration::from_secs(10)).await?;
        Ok(group)
    }

    /// The node that leads, once one does.
    async fn leader(&self, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(index) = self.nodes.iter().position(Node::leads) {
                return Ok(index);
            }
            if Instant::now() > deadline {
                bail!("no leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn proposers(&self) -> Vec<Proposer> {
        self.nodes.iter().map(|n| n.proposer.clone()).collect()
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

fn arg(args: &[String], index: usize, default: u64) -> anyhow::Result<u64> {
    args.get(index).map_or(Ok(default), |a| {
        a.parse().with_context(|| format!("not a number: {a}"))
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted
        .get(index)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

async fn throughput(args: &[String]) -> anyhow::Result<()> {
    let record_bytes = usize::try_from(arg(args, 0, 1024)?)?;
    let per_batch = arg(args, 1, 64)?;
    let in_flight = arg(args, 2, 32)?;
    let duration = Duration::from_secs(arg(args, 3, 5)?);
    println!(
        "records of {record_bytes} B, {per_batch} per batch, {in_flight} batches in flight, {} s per run",
        duration.as_secs()
    );
    let batch = batch(record_bytes, usize::try_from(per_batch)?)?;
    let mut rates = Vec::new();
    for count in [1, 3] {
        let group = Group::start(count).await?;
        let proposer = group.nodes[group.leader(Duration::from_secs(5)).await?]
            .proposer
            .clone();
        let records = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..in_flight {
            let (proposer, batch, records, latencies) = (
                proposer.clone(),
                batch.clone(),
                records.clone(),
                latencies.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    if proposer.produce(vec![batch.clone()]).await.is_err() {
                        break;
                    }
                    mine.push(sent.elapsed());
                    records.fetch_add(per_batch, Ordering::Relaxed);
                }
                latencies.lock().extend(mine);
            }));
        }
        for task in tasks {
            task.await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        group.stop().await;
        let records = records.load(Ordering::Relaxed) as f64;
        let mut latencies = latencies.lock().clone();
        latencies.sort();
        println!(
            "{count} replica(s): {:>10.0} records/s {:>8.1} MB/s  p50 {:.2} ms  p99 {:.2} ms",
            records / elapsed,
            records * record_bytes as f64 / elapsed / 1e6,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
        );
        rates.push(records / elapsed);
    }
    println!("3 replicas / 1 replica: {:.2}", rates[1] / rates[0]);
    Ok(())
}

async fn latency(args: &[String]) -> anyhow::Result<()> {
    let rate = arg(args, 0, 10_000)?;
    let record_bytes = usize::try_from(arg(args, 1, 1024)?)?;
    let duration = Duration::from_secs(arg(args, 2, 5)?);
    println!(
        "single-record produces of {record_bytes} B at {rate}/s for {} s",
        duration.as_secs()
    );
    let batch = batch(record_bytes, 1)?;
    for count in [1, 3] {
        let group = Group::start(count).await?;
        let proposer = group.nodes[group.leader(Duration::from_secs(5)).await?]
            .proposer
            .clone();
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut tasks = Vec::new();
        while started.elapsed() < duration {
            // Sent at its intended time, so a slow answer cannot hold back
            // the next send (no coordinated omission).
            let intended = ticks.tick().await;
            let (proposer, batch, latencies, failures) = (
                proposer.clone(),
                batch.clone(),
                latencies.clone(),
                failures.clone(),
            );
            tasks.push(tokio::spawn(async move {
                match proposer.produce(vec![batch]).await {
                    Ok(_) => latencies.lock().push(intended.elapsed()),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        group.stop().await;
        let mut latencies = latencies.lock().clone();
        latencies.sort();
        println!(
            "{count} replica(s): {} acknowledged, {} failed  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            latencies.len(),
            failures.load(Ordering::Relaxed),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
    }
    Ok(())
}

async fn failover(args: &[String]) -> anyhow::Result<()> {
    let cycles = arg(args, 0, 20)?;
    let mut group = Group::start(3).await?;
    let proposers = Arc::new(Mutex::new(group.proposers()));
    let acknowledged = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let producing = {
        let (proposers, acknowledged) = (proposers.clone(), acknowledged.clone());
        let batch = batch(100, 1)?;
        tokio::spawn(async move {
            loop {
                let candidates = proposers.lock().clone();
                let mut taken = false;
                for proposer in candidates {
                    if proposer.produce(vec![batch.clone()]).await.is_ok() {
                        acknowledged.lock().push(Instant::now());
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mut failovers = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let index = group.leader(Duration::from_secs(10)).await?;
        let node = group.nodes.remove(index);
        let id = node.id;
        let stopped = Instant::now();
        node.stop().await;
        let elected = group
            .leader(Duration::from_secs(10))
            .await
            .map(|_| stopped.elapsed());
        let deadline = stopped + Duration::from_secs(10);
        let first = loop {
            if let Some(first) = acknowledged.lock().iter().find(|t| **t > stopped) {
                break *first;
            }
            if Instant::now() > deadline {
                bail!("cycle {cycle}: nothing acknowledged within 10 s of stopping the leader");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        failovers.push(first - stopped);
        let restarted = Node::start(
            id,
            &group.addresses[&id],
            &group.dirs[&id],
            group.connector.clone(),
        )
        .await?;
        group.nodes.push(restarted);
        *proposers.lock() = group.proposers();
        println!(
            "cycle {cycle}: leader {id} stopped, a new leader after {:.0} ms, the first acknowledgement after {:.0} ms",
            elected?.as_secs_f64() * 1000.0,
            (first - stopped).as_secs_f64() * 1000.0
        );
    }
    producing.abort();
    let acknowledged = acknowledged.lock().len();
    group.stop().await;
    failovers.sort();
    println!(
        "{cycles} leaders stopped, {acknowledged} produces acknowledged: first acknowledgement after p50 {:.0} ms, max {:.0} ms",
        percentile(&failovers, 0.5),
        percentile(&failovers, 1.0)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        None | Some("throughput") => throughput(rest).await,
        Some("latency") => latency(rest).await,
        Some("failover") => failover(rest).await,
        Some(other) => bail!("{other}: not throughput, latency or failover"),
    }
}
