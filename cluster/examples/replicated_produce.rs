//! What replicating a partition costs: produces of record batches through
//! a partition group of 1 and of 3 replicas (through the leader's
//! `Proposer`, as the broker does), on this machine, over loopback gRPC,
//! each replica fsyncing its Raft log before an entry counts. Prints records/s, MB/s and the produce latency's percentiles
//! for each, and the ratio.
//!
//! ```sh
//! cargo run --release -p brook-cluster --example replicated_produce -- \
//!     [record bytes (1024)] [records per batch (64)] [batches in flight (32)] [seconds (5)]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use brook_cluster::BrokerNode;
use brook_cluster::network::client::{
    HTTP2_CONNECTION_WINDOW, HTTP2_STREAM_WINDOW, RemoteLog, TcpConnector,
};
use brook_cluster::network::service::RaftServer;
use brook_cluster::partition::{
    PartitionGroups, PartitionReplica, PartitionReplicaConfig, Proposer,
};
use brook_record::{BatchBuilder, BatchOptions, NewRecord};
use brook_storage::{LogConfig, OsStorage, PartitionLog};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio_stream::wrappers::TcpListenerStream;

const GROUP: &str = "bench/0";

struct Settings {
    record_bytes: usize,
    records_per_batch: usize,
    in_flight: usize,
    duration: Duration,
}

fn settings() -> anyhow::Result<Settings> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().with_context(|| format!("not a number: {a}")))
        .collect::<Result<_, _>>()?;
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    Ok(Settings {
        record_bytes: usize::try_from(arg(0, 1024))?,
        records_per_batch: usize::try_from(arg(1, 64))?,
        in_flight: usize::try_from(arg(2, 32))?,
        duration: Duration::from_secs(arg(3, 5)),
    })
}

fn batch(settings: &Settings) -> anyhow::Result<Bytes> {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let value = Bytes::from(vec![b'x'; settings.record_bytes]);
    for _ in 0..settings.records_per_batch {
        builder.push(&NewRecord {
            timestamp: 1,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        });
    }
    Ok(builder.build()?)
}

/// Starts `count` replicas on loopback; returns them once one leads.
async fn start_group(count: u64, dir: &std::path::Path) -> anyhow::Result<Vec<PartitionReplica>> {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        members.insert(id, BrokerNode::new(listener.local_addr()?.to_string()));
        listeners.push((id, listener));
    }
    let connector = Arc::new(TcpConnector {
        connect_timeout: Duration::from_secs(1),
    });
    let mut replicas = Vec::new();
    for (id, listener) in listeners {
        let node_dir = dir.join(format!("broker-{id}"));
        let (log, _) = PartitionLog::open(
            Arc::new(OsStorage),
            &node_dir.join("topics/bench/0"),
            LogConfig::default(),
        )?;
        let config = PartitionReplicaConfig::new(id, GROUP, node_dir.join("raft/bench/0"));
        let replica = PartitionReplica::start(
            &config,
            Arc::new(log),
            connector.clone(),
            Arc::new(RemoteLog::new(connector.clone())),
        )
        .await?;
        let groups = PartitionGroups::default();
        groups.insert(replica.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
                .initial_stream_window_size(HTTP2_STREAM_WINDOW)
                .add_service(RaftServer::new(None, groups).into_service())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        replicas.push(replica);
    }
    for replica in &replicas {
        replica.initialize(members.clone()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while replicas.iter().all(|r| r.leader() != Some(r.id())) {
        if Instant::now() > deadline {
            bail!("no leader within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(replicas)
}

struct Figures {
    records_per_sec: f64,
    mb_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(count: u64, settings: &Settings) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let replicas = start_group(count, dir.path()).await?;
    let leader = replicas
        .iter()
        .find(|r| r.leader() == Some(r.id()))
        .context("the leader went away")?
        .clone();
    let proposer = Proposer::start(leader);
    let batch = batch(settings)?;
    let records = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..settings.in_flight {
        let (proposer, batch, records, latencies) = (
            proposer.clone(),
            batch.clone(),
            records.clone(),
            latencies.clone(),
        );
        let (duration, per_batch) = (settings.duration, settings.records_per_batch as u64);
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
    for replica in &replicas {
        replica.shutdown().await;
    }
    let records = records.load(Ordering::Relaxed) as f64;
    let mut latencies = latencies.lock().clone();
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies
            .get(index)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Figures {
        records_per_sec: records / elapsed,
        mb_per_sec: records * settings.record_bytes as f64 / elapsed / 1e6,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = settings()?;
    println!(
        "records of {} B, {} per batch, {} batches in flight, {} s per run",
        settings.record_bytes,
        settings.records_per_batch,
        settings.in_flight,
        settings.duration.as_secs()
    );
    let mut results = Vec::new();
    for count in [1, 3] {
        let figures = run(count, &settings).await?;
        println!(
            "{count} replica(s): {:>10.0} records/s {:>8.1} MB/s  p50 {:.2} ms  p99 {:.2} ms",
            figures.records_per_sec, figures.mb_per_sec, figures.p50_ms, figures.p99_ms
        );
        results.push(figures);
    }
    println!(
        "3 replicas / 1 replica: {:.2}",
        results[1].records_per_sec / results[0].records_per_sec
    );
    Ok(())
}
