//! What the cluster tests check replicas against: an idempotent producer
//! writing numbered records until stopped, and a partition's records as one
//! broker serves them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use brook_client::{
    Client, ClientOptions, FetchOptions, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use bytes::Bytes;

use super::STEP_LIMIT;

/// How the tests' producers reach the brokers: a request gives up after
/// 2 s, so what a cut-off or stopped broker took is not waited on for long.
pub(super) fn producer_options() -> ClientOptions {
    ClientOptions::default().with_request_timeout(Duration::from_secs(2))
}

/// An idempotent producer writing the numbers 0, 1, 2, ... to a topic of
/// one partition, 16 at a time, until stopped; each acknowledged record's
/// number and offset.
pub(super) struct Producing {
    acknowledged: Arc<Mutex<Vec<(u64, i64)>>>,
    stop: Arc<AtomicBool>,
    /// Ends with how many records were sent.
    task: tokio::task::JoinHandle<u64>,
}

impl Producing {
    /// Starts it through `client`; a record it cannot deliver within 60 s
    /// fails the test.
    pub(super) fn start(client: Client, topic: &'static str) -> Self {
        let producer = Producer::new(
            client,
            ProducerConfig::default().with_delivery_timeout(Duration::from_secs(60)),
        );
        let acknowledged: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            async move {
                let mut next = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut deliveries = Vec::new();
                    for _ in 0..16 {
                        let record = ProducerRecord::new(topic, Bytes::from(next.to_string()));
                        deliveries.push((next, producer.enqueue(record).await.expect("accepted")));
                        next += 1;
                    }
                    for (seq, delivery) in deliveries {
                        let metadata = delivery
                            .await
                            .unwrap_or_else(|e| panic!("record {seq} failed: {e}"));
                        acknowledged
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((seq, metadata.offset));
                    }
                }
                producer.close().await;
                next
            }
        });
        Self {
            acknowledged,
            stop,
            task,
        }
    }

    /// Records acknowledged so far.
    pub(super) fn count(&self) -> usize {
        self.acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until at least `at_least` records are acknowledged, at most
    /// `STEP_LIMIT`; else fails with `stalled`.
    pub(super) async fn wait_for(&self, at_least: usize, stalled: &str) {
        let deadline = Instant::now() + STEP_LIMIT;
        while self.count() < at_least {
            assert!(Instant::now() < deadline, "{stalled}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops it (it must stop within `within` and have seen no error):
    /// every record acknowledged, and how many were sent.
    pub(super) async fn stop(self, within: Duration) -> (Vec<(u64, i64)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = tokio::time::timeout(within, self.task)
            .await
            .expect("the producer stops")
            .expect("the producer saw no error");
        let acknowledged = std::mem::take(
            &mut *self
                .acknowledged
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        (acknowledged, sent)
    }
}

/// Every record value of partition 0 of `topic` on the broker `client` is
/// connected to, in offset order.
pub(super) async fn log_of(client: &Client, topic: &str) -> Vec<String> {
    let end = client
        .list_offsets(topic, 0, OffsetSpec::Latest)
        .await
        .expect("the end offset");
    let options = FetchOptions::default().with_max_wait(Duration::ZERO);
    let mut values = Vec::new();
    while i64::try_from(values.len()).expect("a count") < end {
        let offset = i64::try_from(values.len()).expect("a count");
        let fetched = client
            .fetch(topic, 0, offset, options)
            .await
            .expect("fetch");
        assert!(!fetched.records.is_empty(), "data below the high watermark");
        for record in fetched.records {
            let value = record.value.expect("every record has a value");
            values.push(String::from_utf8(value.to_vec()).expect("text"));
        }
    }
    values
}
