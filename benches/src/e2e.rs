//! Produce and consume at once: each value carries its intended send time,
//! and the consumers count latency from it to the moment they receive the
//! record (send → broker → fsync → ack → fetch → receive). Producers and
//! consumers share this process's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use brook_client::{Consumer, ConsumerConfig, SeekTo};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::connection::Connection;
use crate::consume::partitions_per_consumer;
use crate::produce::{STAMP_LEN, ensure_topic, read_stamp, send_all};
use crate::report::{Figures, Latency, histogram};
use crate::workload::Workload;

/// How long consumers may trail the last acknowledgement before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(connection: &Connection, workload: &Workload) -> anyhow::Result<Figures> {
    if workload.record_size < STAMP_LEN {
        bail!(
            "e2e records carry an {STAMP_LEN}-byte timestamp: --record-size must be at least {STAMP_LEN}"
        );
    }
    let client = connection.client().await?;
    ensure_topic(&client, &workload.topic, workload.partitions).await?;
    let shares = partitions_per_consumer(&client, workload).await?;
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(50);
    let mut consumers = Vec::with_capacity(workload.consumers);
    for mine in shares {
        let consumer = at_end(connection, &workload.topic, &mine).await?;
        consumers.push(tokio::spawn(receive(
            consumer,
            start,
            received.clone(),
            stopped.clone(),
        )));
    }
    // Producing starts a little later, so the consumers' first long polls
    // are waiting already.
    tokio::time::sleep_until(start.into()).await;
    let sent = send_all(connection, workload, start, true).await?;
    let drained = Instant::now() + DRAIN_TIMEOUT;
    while received.load(Ordering::Acquire) < sent.records {
        if Instant::now() >= drained {
            bail!(
                "consumers received {} of {} records",
                received.load(Ordering::Acquire),
                sent.records
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.send_replace(true);
    let mut latencies = histogram();
    for consumer in consumers {
        latencies.add(consumer.await??)?;
    }
    Ok(Figures {
        records: sent.records,
        bytes: sent.records * workload.record_size as u64,
        seconds,
        latency: Latency::SendToReceive,
        latencies,
    })
}

/// A consumer of `partitions` positioned at their ends.
async fn at_end(
    connection: &Connection,
    topic: &str,
    partitions: &[u32],
) -> anyhow::Result<Consumer> {
    let client = connection.client().await?;
    let consumer = Consumer::new(client, ConsumerConfig::default());
    let assignment: Vec<(&str, u32)> = partitions.iter().map(|p| (topic, *p)).collect();
    consumer.assign(&assignment);
    for &partition in partitions {
        consumer.seek(topic, partition, SeekTo::Latest).await?;
    }
    Ok(consumer)
}

/// Receives until told to stop; records each record's latency from the
/// intended send time in its value.
async fn receive(
    mut consumer: Consumer,
    start: Instant,
    received: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = histogram();
    loop {
        tokio::select! {
            next = consumer.next() => {
                let consumed = next.context("the consumer stream ended")?.context("consume")?;
                let value = consumed.record.value.unwrap_or_default();
                let intended = read_stamp(&value, start).context("a record without a send time")?;
                crate::produce::record_latency(&mut latencies, intended);
                received.fetch_add(1, Ordering::AcqRel);
            }
            _ = stopped.wait_for(|stop| *stop) => return Ok(latencies),
        }
    }
}
