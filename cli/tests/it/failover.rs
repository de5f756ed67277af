//! Three `brook serve` processes holding a topic with three replicas: while
//! an idempotent producer writes numbered records through any broker, the
//! leader of the partition is killed with SIGKILL and restarted on its
//! files, cycle after cycle. The producer sees no error, and afterwards
//! every broker holds every acknowledged record exactly once, in order, the
//! same log on all three.
//!
//! `BROOK_FAILOVER_CYCLES` sets how many cycles (default 50). A rolling
//! restart (each broker stopped with SIGTERM and started again in turn)
//! under the same producer must likewise fail no record and lose none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use brook_client::{Client, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::task::JoinHandle;

use crate::common;
use crate::three_brokers::{Cluster, STEP_LIMIT, create_replicated_topic};

const TOPIC: &str = "failover";

fn cycles() -> usize {
    std::env::var("BROOK_FAILOVER_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(50)
}

/// What the producer task saw: acknowledged sequence numbers with their
/// offsets, and when each was acknowledged.
#[derive(Default)]
struct Acknowledged {
    records: Vec<(u64, i64)>,
    last_at: Option<Instant>,
}

fn lock(acknowledged: &Mutex<Acknowledged>) -> MutexGuard<'_, Acknowledged> {
    acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Produces numbered records until `stop`, a few in flight at a time,
/// failing on any error.
fn spawn_producer(
    producer: Producer,
    acknowledged: Arc<Mutex<Acknowledged>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut next = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut deliveries = Vec::new();
            for _ in 0..16 {
                let record = ProducerRecord::new(TOPIC, Bytes::from(next.to_string()));
                let delivery = producer.enqueue(record).await.expect("record accepted");
                deliveries.push((next, delivery));
                next += 1;
            }
            for (seq, delivery) in deliveries {
                let metadata = delivery
                    .await
                    .unwrap_or_else(|e| panic!("record {seq} failed: {e}"));
                let mut acknowledged = lock(&acknowledged);
                acknowledged.records.push((seq, metadata.offset));
                acknowledged.last_at = Some(Instant::now());
            }
        }
        producer.close().await;
        next
    })
}

/// A producer writing into the cluster's topic, and what it saw.
struct Load {
    task: JoinHandle<u64>,
    acknowledged: Arc<Mutex<Acknowledged>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Creates the topic (three replicas) through broker 1 and starts
    /// producing through it.
    async fn start(cluster: &Cluster) -> Load {
        let client = Client::connect(cluster.address(1))
            .await
            .expect("connect to a broker");
        create_replicated_topic(&client, TOPIC).await;
        let producer = Producer::new(
            client,
            ProducerConfig::default().with_delivery_timeout(Duration::from_secs(60)),
        );
        let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = spawn_producer(producer, acknowledged.clone(), stop.clone());
        Load {
            task,
            acknowledged,
            stop,
        }
    }

    fn acknowledged(&self) -> usize {
        lock(&self.acknowledged).records.len()
    }

    fn last_acknowledged_at(&self) -> Option<Instant> {
        lock(&self.acknowledged).last_at
    }

    /// Stops the producer, then checks that every replica holds every
    /// acknowledged record once, at the offset it was acknowledged with,
    /// and that the three logs are equal; returns how many there were.
    async fn finish_and_check(self, cluster: &Cluster) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let sent = tokio::time::timeout(STEP_LIMIT * 2, self.task)
            .await
            .expect("the producer finished")
            .expect("the producer never failed");
        let acknowledged = std::mem::take(&mut lock(&self.acknowledged).records);
        assert_eq!(acknowledged.len() as u64, sent, "every record acknowledged");
        cluster.leader(TOPIC, &[1, 2, 3]).await;
        let mut logs = Vec::new();
        for id in 1..=3 {
            let client = Client::connect(cluster.address(id))
                .await
                .expect("connect to a replica");
            logs.push(common::read_sequence_numbers(&client, TOPIC, 0).await);
        }
        for (id, log) in (1..).zip(&logs) {
            let first_difference = log.iter().zip(&logs[0]).position(|(a, b)| a != b);
            assert!(
                log.len() == logs[0].len() && first_difference.is_none(),
                "broker {id}'s log ({} records) differs from broker 1's ({} records) from offset {first_difference:?}",
                log.len(),
                logs[0].len()
            );
        }
        let log = &logs[0];
        let mut seen = vec![false; usize::try_from(sent).expect("a count")];
        for seq in log {
            let seq = usize::try_from(*seq).expect("a sequence number");
            assert!(!seen[seq], "record {seq} twice");
            seen[seq] = true;
        }
        for (seq, offset) in &acknowledged {
            let at = usize::try_from(*offset).expect("an offset");
            assert_eq!(
                log.get(at),
                Some(seq),
                "record {seq} not at offset {offset}"
            );
        }
        acknowledged.len()
    }
}

#[tokio::test]
async fn killing_the_leader_again_and_again_loses_no_acknowledged_record() {
    let mut cluster = Cluster::start().await;
    let load = Load::start(&cluster).await;
    let mut failovers = Vec::new();
    for cycle in 0..cycles() {
        let leader = cluster.leader(TOPIC, &[1, 2, 3]).await;
        let before = load.acknowledged();
        // Let the producer write through this leader for a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let index = usize::try_from(leader - 1).expect("a small id");
        let killed = cluster.servers[index].take().expect("the leader runs");
        let killed_at = Instant::now();
        killed.stop(Signal::SIGKILL).await;
        // The first acknowledgement after the kill is the new leader's.
        let deadline = killed_at + STEP_LIMIT;
        let recovered = loop {
            if let Some(at) = load.last_acknowledged_at()
                && at > killed_at
            {
                break at;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: no acknowledgement within {STEP_LIMIT:?} of killing broker {leader}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        failovers.push(recovered.duration_since(killed_at));
        assert!(
            load.acknowledged() > before,
            "cycle {cycle}: nothing acknowledged"
        );
        cluster.servers[index] = Some(cluster.start_broker(leader).await);
    }
    let acknowledged = load.finish_and_check(&cluster).await;
    failovers.sort_unstable();
    eprintln!(
        "{} kill cycles, {acknowledged} records acknowledged; leader killed -> first acknowledgement: p50 {:?}, max {:?}",
        failovers.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1],
    );
    for server in cluster.servers.into_iter().flatten() {
        server.stop(Signal::SIGTERM).await;
    }
}

/// Every broker in turn stopped with SIGTERM and started again, each once
/// the others have caught up, as a rolling upgrade does: the producer sees
/// no error, and nothing acknowledged is lost.
#[tokio::test]
async fn a_rolling_restart_under_load_loses_nothing_and_fails_no_record() {
    let mut cluster = Cluster::start().await;
    let load = Load::start(&cluster).await;
    for id in 1..=3u64 {
        cluster.leader(TOPIC, &[1, 2, 3]).await;
        let before = load.acknowledged();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let index = usize::try_from(id - 1).expect("a small id");
        let stopping = cluster.servers[index].take().expect("the broker runs");
        let status = stopping.stop(Signal::SIGTERM).await;
        assert_eq!(
            status.code(),
            Some(0),
            "broker {id} stopped cleanly: {status}"
        );
        cluster.servers[index] = Some(cluster.start_broker(id).await);
        // Producing goes on (through the others, or this one again).
        let deadline = Instant::now() + STEP_LIMIT;
        while load.acknowledged() <= before {
            assert!(
                Instant::now() < deadline,
                "nothing acknowledged within {STEP_LIMIT:?} of restarting broker {id}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let acknowledged = load.finish_and_check(&cluster).await;
    assert!(acknowledged > 0);
    for server in cluster.servers.into_iter().flatten() {
        server.stop(Signal::SIGTERM).await;
    }
}
