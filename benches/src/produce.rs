//! Produce through the real `brook_client::Producer`, as users do.
//!
//! Each producer has its own connection and `Producer`, driven from its own
//! OS thread so that a fixed rate is paced with `std::thread::sleep`
//! (tens of microseconds of precision) rather than Tokio's 1 ms timer. A
//! collector task per producer awaits the delivery futures and records each
//! record's latency from its intended send time.

use std::collections::BTreeMap;
use std::future::{self, Future as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use brook_client::{
    Client, ClientError, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, TopicConfig,
};
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt};
use hdrhistogram::Histogram;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::connection::Connection;
use crate::report::{Figures, Latency, histogram};
use crate::workload::{KEYS, Workload};

/// Hand-overs of delivery futures from a producer thread to its collector;
/// bounds how far the thread gets ahead (the `Producer`'s buffer bounds it
/// too).
const PENDING_CHANNEL: usize = 1024;

/// Delivery futures a producer thread sending as fast as it can hands its
/// collector at once: one channel message per record cost about as much
/// as the `Producer`'s own work for it. Small enough (tens of
/// microseconds of records) not to show in the latencies; a paced thread
/// hands each over at once.
const HANDED_OVER_TOGETHER: usize = 64;

/// Bytes at the front of an e2e value: its intended send time in
/// nanoseconds after the run's start.
pub const STAMP_LEN: usize = 8;

/// What the producers of a run did.
#[derive(Debug)]
pub struct Sent {
    pub records: u64,
    /// From the start to the last acknowledgement.
    pub elapsed: Duration,
    /// Send → ack, microseconds.
    pub latencies: Histogram<u64>,
}

pub async fn run(connection: &Connection, workload: &Workload) -> anyhow::Result<Figures> {
    let client = connection.client().await?;
    ensure_topic(&client, &workload.topic, workload.partitions).await?;
    let sent = send_all(connection, workload, Instant::now(), false).await?;
    Ok(Figures {
        records: sent.records,
        bytes: sent.records * workload.record_size as u64,
        seconds: sent.elapsed.as_secs_f64(),
        latency: Latency::SendToAck,
        latencies: sent.latencies,
    })
}

/// Creates `topic` unless it exists, and waits until each of its
/// partitions has a leader; returns them as [`crate::leaders::of_topic`]
/// does.
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<Option<BTreeMap<String, Vec<u32>>>> {
    match client
        .create_topic(topic, partitions, TopicConfig::default())
        .await
    {
        Ok(_) => {}
        Err(error) if error.kind() == brook_client::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error).context("create the bench topic"),
    }
    crate::leaders::of_topic(client, topic).await
}

/// Runs `workload.producers` producers from `start`; with `stamp`, each
/// value begins with its intended send time (see [`STAMP_LEN`]).
pub async fn send_all(
    connection: &Connection,
    workload: &Workload,
    start: Instant,
    stamp: bool,
) -> anyhow::Result<Sent> {
    let config = ProducerConfig::default()
        .with_linger(workload.linger)
        .with_batch_size(workload.batch_size)
        .with_compression(workload.compression)
        .with_max_in_flight(workload.max_in_flight);
    let mut producers = Vec::with_capacity(workload.producers);
    for _ in 0..workload.producers {
        let client = connection.client().await?;
        producers.push(Producer::new(client, config));
    }
    let mut collectors = Vec::with_capacity(producers.len());
    let mut threads = Vec::with_capacity(producers.len());
    for (index, producer) in producers.into_iter().enumerate() {
        let (pending, deliveries) = mpsc::channel(PENDING_CHANNEL);
        collectors.push(tokio::spawn(collect(deliveries)));
        let plan = Plan::new(workload, index, start, stamp);
        let handle = Handle::current();
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-producer-{index}"))
                .spawn(move || plan.drive(&handle, &producer, &pending))
                .context("start a producer thread")?,
        );
    }
    let mut records = 0;
    for thread in threads {
        records += tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_panic| anyhow::anyhow!("a producer thread panicked"))??;
    }
    let mut latencies = histogram();
    for collector in collectors {
        latencies.add(collector.await??)?;
    }
    Ok(Sent {
        records,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// What one producer thread sends, and when.
struct Plan {
    topic: String,
    /// `None`: until `deadline`.
    records: Option<u64>,
    deadline: Option<Instant>,
    /// Between two intended send times; `None` is as fast as accepted.
    interval: Option<Duration>,
    start: Instant,
    stamp: bool,
    keyed: bool,
    /// Spreads the keys of the producers of a run.
    first_key: u64,
    value: Bytes,
}

impl Plan {
    fn new(workload: &Workload, index: usize, start: Instant, stamp: bool) -> Self {
        let interval = workload
            .rate
            .map(|rate| Duration::from_secs_f64(workload.producers as f64 / rate));
        Self {
            topic: workload.topic.clone(),
            records: workload.share(index),
            deadline: workload.duration().map(|d| start + d),
            interval,
            start,
            stamp,
            keyed: workload.keyed,
            first_key: index as u64 * 7919,
            value: Bytes::from(vec![b'x'; workload.record_size]),
        }
    }

    /// Sends every record, waits until all are answered, and returns how
    /// many were sent. Runs on its own thread: `block_on` is allowed there.
    fn drive(
        self,
        runtime: &Handle,
        producer: &Producer,
        pending: &mpsc::Sender<Vec<(Instant, DeliveryFuture)>>,
    ) -> anyhow::Result<u64> {
        // Polled here first, `enqueue` needs the runtime's context (its
        // rare waits use timers).
        let _runtime = runtime.enter();
        let together = if self.interval.is_some() {
            1
        } else {
            HANDED_OVER_TOGETHER
        };
        let mut handing = Vec::with_capacity(together);
        let mut sent = 0u64;
        loop {
            if self.records.is_some_and(|n| sent >= n) {
                break;
            }
            let intended = match self.interval {
                Some(interval) => {
                    let at = self.start + interval.mul_f64(sent as f64);
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    at
                }
                None => Instant::now(),
            };
            if self.deadline.is_some_and(|deadline| intended >= deadline) {
                break;
            }
            let record = self.record(sent, intended);
            // Accepted at once unless the buffer is full: then wait.
            let mut enqueue = std::pin::pin!(producer.enqueue(record));
            let delivery = match enqueue.as_mut().now_or_never() {
                Some(accepted) => accepted,
                None => runtime.block_on(enqueue),
            }
            .context("enqueue a record")?;
            handing.push((intended, delivery));
            if handing.len() >= together {
                let handed = std::mem::replace(&mut handing, Vec::with_capacity(together));
                pending
                    .blocking_send(handed)
                    .map_err(|_closed| anyhow::anyhow!("the collector stopped"))?;
            }
            sent += 1;
        }
        if !handing.is_empty() {
            pending
                .blocking_send(handing)
                .map_err(|_closed| anyhow::anyhow!("the collector stopped"))?;
        }
        runtime.block_on(producer.close());
        Ok(sent)
    }

    fn record(&self, sequence: u64, intended: Instant) -> ProducerRecord {
        let value = if self.stamp {
            let mut value = BytesMut::from(&self.value[..]);
            let nanos = intended.duration_since(self.start).as_nanos() as u64;
            value[..STAMP_LEN].copy_from_slice(&nanos.to_le_bytes());
            value.freeze()
        } else {
            self.value.clone()
        };
        let mut record = ProducerRecord::new(self.topic.clone(), value);
        if self.keyed {
            let key = (self.first_key + sequence) % KEYS;
            record.key = Some(Bytes::copy_from_slice(&key.to_be_bytes()));
        }
        record
    }
}

/// Awaits delivery futures as they complete (not in order: acks of
/// different partitions race) and records latencies from their intended
/// send times. Ends when the producer thread hung up and all are answered.
async fn collect(
    mut deliveries: mpsc::Receiver<Vec<(Instant, DeliveryFuture)>>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = histogram();
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(delivered) = pending.next(), if !pending.is_empty() => {
                let delivered: Result<Vec<u64>, ClientError> = delivered;
                for micros in delivered.context("a record was not delivered")? {
                    latencies.saturating_record(micros);
                }
            }
            handed = deliveries.recv(), if open => match handed {
                Some(handed) => pending.push(delivered(handed)),
                None => open = false,
            },
            else => break,
        }
    }
    Ok(latencies)
}

/// Waits for the deliveries handed over together, each looked at whenever
/// any is answered, so each latency ends when its own record was answered
/// (one task per hand-over, not per record); gives them in microseconds.
async fn delivered(mut waiting: Vec<(Instant, DeliveryFuture)>) -> Result<Vec<u64>, ClientError> {
    let mut micros = Vec::with_capacity(waiting.len());
    future::poll_fn(|cx| {
        let mut now = None;
        let mut index = 0;
        while index < waiting.len() {
            match Pin::new(&mut waiting[index].1).poll(cx) {
                Poll::Ready(outcome) => {
                    outcome?;
                    let (intended, _) = waiting.swap_remove(index);
                    // One clock read serves every record answered at once.
                    let now = *now.get_or_insert_with(Instant::now);
                    micros.push(latency_micros(intended, now));
                }
                Poll::Pending => index += 1,
            }
        }
        if waiting.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(micros)
}

/// Records the time from `since` until now, in microseconds (at least 1).
pub fn record_latency(latencies: &mut Histogram<u64>, since: Instant) {
    latencies.saturating_record(latency_micros(since, Instant::now()));
}

/// The time from `since` to `now` in microseconds, at least 1.
fn latency_micros(since: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(since).as_micros().max(1) as u64
}

/// The intended send time stamped at the front of an e2e value.
pub fn read_stamp(value: &[u8], start: Instant) -> Option<Instant> {
    let stamp: [u8; STAMP_LEN] = value.get(..STAMP_LEN)?.try_into().ok()?;
    Some(start + Duration::from_nanos(u64::from_le_bytes(stamp)))
}
