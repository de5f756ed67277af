//! The same workloads against NATS JetStream (feature `nats`), for the
//! peer comparison in `compare-nats.sh`: one publisher with asynchronous
//! publish acknowledgements in a bounded window, and an e2e run at a fixed
//! rate with an ordered pull consumer, latency from the intended send time.
//!
//! NATS on its defaults acknowledges a publish once the stream has it in
//! its file store's buffers, before fsync (`sync_interval` is 2 minutes);
//! Brook with `fsync always` acknowledges after fsync.

use std::collections::VecDeque;
use std::future::IntoFuture as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::runtime::Handle;

use crate::produce::{STAMP_LEN, read_stamp, record_latency};
use crate::report::{Figures, Latency, histogram};

/// The stream the bench (re)creates, and its subjects.
pub const STREAM: &str = "BENCH";
const SUBJECT: &str = "bench.data";

/// A JetStream context on `url` with a fresh, empty file-backed stream.
pub async fn fresh_stream(url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connect to NATS at {url}"))?;
    let js = jetstream::new(client);
    // Absent the first time.
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["bench.>".to_owned()],
        storage: stream::StorageType::File,
        ..stream::Config::default()
    })
    .await
    .context("create the JetStream stream")?;
    Ok(js)
}

/// Publishes `records` values of `record_size` bytes with at most `window`
/// acknowledgements outstanding; at `rate` records/s if given (paced on
/// this thread, latency from each intended send time). Latency is publish
/// → ack. Call from a thread outside the runtime (`block_on`).
pub fn publish(
    runtime: &Handle,
    js: &jetstream::Context,
    records: u64,
    record_size: usize,
    window: usize,
    rate: Option<f64>,
    start: Instant,
) -> anyhow::Result<Figures> {
    let mut latencies = histogram();
    let template = Bytes::from(vec![b'x'; record_size.max(STAMP_LEN)]);
    let interval = rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut pending = VecDeque::with_capacity(window);
    for sent in 0..records {
        let intended = match interval {
            Some(interval) => {
                let at = start + interval.mul_f64(sent as f64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                at
            }
            None => Instant::now(),
        };
        let mut value = BytesMut::from(&template[..]);
        let nanos = intended.duration_since(start).as_nanos() as u64;
        value[..STAMP_LEN].copy_from_slice(&nanos.to_le_bytes());
        value.truncate(record_size);
        if pending.len() == window {
            let (at, ack): (Instant, jetstream::context::PublishAckFuture) =
                pending.pop_front().context("a full window")?;
            runtime
                .block_on(ack.into_future())
                .context("publish acknowledgement")?;
            record_latency(&mut latencies, at);
        }
        let ack = runtime
            .block_on(js.publish(SUBJECT, value.freeze()))
            .context("publish")?;
        pending.push_back((intended, ack));
    }
    for (at, ack) in pending {
        runtime
            .block_on(ack.into_future())
            .context("publish acknowledgement")?;
        record_latency(&mut latencies, at);
    }
    Ok(Figures {
        records,
        bytes: records * record_size as u64,
        seconds: start.elapsed().as_secs_f64(),
        latency: Latency::SendToAck,
        latencies,
    })
}

/// Publishes `records` at `rate` while an ordered pull consumer reads them;
/// latency is intended send → receive.
pub async fn e2e(
    url: &str,
    records: u64,
    record_size: usize,
    window: usize,
    rate: f64,
) -> anyhow::Result<Figures> {
    if record_size < STAMP_LEN {
        bail!("e2e records carry an {STAMP_LEN}-byte timestamp");
    }
    let js = fresh_stream(url).await?;
    let consumer = js
        .get_stream(STREAM)
        .await?
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: SUBJECT.to_owned(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..consumer::pull::OrderedConfig::default()
        })
        .await
        .context("create an ordered consumer")?;
    let mut messages = consumer.messages().await.context("consume")?;
    let start = Instant::now() + Duration::from_millis(50);
    let receiver = tokio::spawn(async move {
        let mut latencies = histogram();
        for _ in 0..records {
            let message = messages
                .next()
                .await
                .context("the consumer ended")?
                .context("consume")?;
            let intended =
                read_stamp(&message.payload, start).context("a value without a stamp")?;
            record_latency(&mut latencies, intended);
        }
        anyhow::Ok(latencies)
    });
    let runtime = Handle::current();
    let sent = tokio::task::spawn_blocking(move || {
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
        publish(
            &runtime,
            &js,
            records,
            record_size,
            window,
            Some(rate),
            start,
        )
    })
    .await??;
    let latencies = tokio::time::timeout(Duration::from_secs(30), receiver)
        .await
        .context("the consumer did not receive every record")???;
    Ok(Figures {
        latency: Latency::SendToReceive,
        latencies,
        seconds: start.elapsed().as_secs_f64(),
        ..sent
    })
}
