//! Faults through the file traits, no disk: a write or fsync that fails
//! poisons its partition (and only it), and a crash keeps exactly what was
//! synced.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use brook_broker::config::MetaBackend;
use brook_broker::storage::testing::{FailingStorage, MemStorage};
use brook_broker::storage::{BatchOutcome, LogConfig, PartitionLog};
use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_proto::{BatchResult, TopicConfig};
use brook_record::BatchHeader;
use bytes::Bytes;
use common::{Clients, batch, partition_batch, produce_request, values, within};
use tonic::Code;

/// Mutating file operations allowed while setting up; effectively unlimited.
const PLENTY: u64 = 1_000_000;

async fn start(storage: &FailingStorage) -> anyhow::Result<(EmbeddedBroker, Clients)> {
    let mut config = BrokerConfig::default();
    config.storage = Arc::new(storage.clone());
    config.meta = MetaBackend::Memory;
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients.create_topic("a", 2, TopicConfig::default()).await?;
    clients.create_topic("b", 1, TopicConfig::default()).await?;
    for (topic, partition) in [("a", 0), ("a", 1), ("b", 0)] {
        clients
            .produce(topic, partition, batch("acked", 4)?)
            .await?;
    }
    Ok((embedded, clients))
}

/// Produces one batch and returns its result, error or not.
async fn produce_result(
    clients: &mut Clients,
    topic: &str,
    partition: u32,
) -> anyhow::Result<BatchResult> {
    let request = produce_request(
        1,
        vec![partition_batch(topic, partition, batch("late", 2)?)],
    );
    let response = within("produce", clients.produce.produce(request))
        .await??
        .into_inner();
    response
        .results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no result"))
}

/// The batch whose write or fsync failed: the broker's own failure,
/// naming the I/O error, not yet "poisoned".
fn assert_failed_write(result: &BatchResult) {
    let error = result.error.as_ref().expect("the batch was refused");
    assert_eq!(error.code, Code::Internal as i32, "{error:?}");
    assert!(!error.message.contains("poisoned"), "{}", error.message);
    assert!(
        error.message.contains("injected failure"),
        "{}",
        error.message
    );
    assert_eq!(result.base_offset, -1);
}

/// A batch sent to the partition after that: refused, with the reason.
fn assert_unavailable(result: &BatchResult) {
    let error = result.error.as_ref().expect("the batch was refused");
    assert_eq!(error.code, Code::Unavailable as i32, "{error:?}");
    assert_eq!(
        error.message.matches("poisoned").count(),
        1,
        "{}",
        error.message
    );
    assert!(
        error.message.contains("injected failure"),
        "{}",
        error.message
    );
    assert_eq!(result.base_offset, -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_or_fsync_poisons_only_its_partition() {
    // Budget 0 fails the segment write; 1 lets it through and fails the
    // index write or the fsync after it.
    for budget in [0, 1] {
        let storage = FailingStorage::new(Arc::new(MemStorage::default()), PLENTY);
        let (embedded, mut clients) = start(&storage).await.unwrap();

        storage.set_budget(budget);
        let failed = produce_result(&mut clients, "a", 0).await.unwrap();
        assert_failed_write(&failed);
        storage.set_budget(PLENTY);

        // The partition stays poisoned although the disk "recovered".
        for _ in 0..3 {
            assert_unavailable(&produce_result(&mut clients, "a", 0).await.unwrap());
        }
        let poisoned = embedded.broker().poisoned_partitions();
        assert_eq!(poisoned.len(), 1, "{poisoned:?}");
        assert_eq!((poisoned[0].0.as_str(), poisoned[0].1), ("a", 0));

        // Its neighbours keep working.
        for (topic, partition) in [("a", 1), ("b", 0)] {
            let result = produce_result(&mut clients, topic, partition)
                .await
                .unwrap();
            assert_eq!(result.error, None, "{topic}/{partition} (budget {budget})");
            assert_eq!(result.base_offset, 4);
        }

        // What was acknowledged before is still served, and nothing more.
        assert_eq!(clients.end_offset("a", 0).await.unwrap(), 4);
        let records = clients.fetch_all("a", 0, 0).await.unwrap();
        assert_eq!(
            values(&records),
            ["acked-0", "acked-1", "acked-2", "acked-3"]
        );
        let status = clients.fetch_once("a", 0, 5).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        // Last, as stopping the server stops the broker. A restart mends a poisoned partition: both the report and the
        // liveness endpoint say so.
        let stop = tokio_util::sync::CancellationToken::new();
        let (http, server) = crate::damage::serve_http(&embedded, &stop).await.unwrap();
        for path in ["/health", "/live"] {
            let (status, body) = crate::http::get(http, path).await.unwrap();
            assert_eq!(status, 503, "{path}: {body}");
            assert!(body.contains("\"poisoned\""), "{path}: {body}");
        }
        stop.cancel();
        let _ = server.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_on_a_later_operation_never_acknowledges_unsynced_data() {
    // Whichever operation of a produce fails (write, index, fsync), the
    // producer is told and readers never see the batch.
    for budget in 0..6 {
        let storage = FailingStorage::new(Arc::new(MemStorage::default()), PLENTY);
        let (_embedded, mut clients) = start(&storage).await.unwrap();
        storage.set_budget(budget);
        let result = produce_result(&mut clients, "a", 0).await.unwrap();
        storage.set_budget(PLENTY);
        let end = clients.end_offset("a", 0).await.unwrap();
        if result.error.is_some() {
            assert_failed_write(&result);
            assert_eq!(end, 4, "budget {budget}: a refused batch became visible");
        } else {
            assert_eq!((result.base_offset, end), (4, 6), "budget {budget}");
        }
        let records = clients.fetch_all("a", 0, 0).await.unwrap();
        assert_eq!(records.len() as i64, end);
    }
}

fn validated(prefix: &str, count: usize) -> anyhow::Result<(Bytes, BatchHeader)> {
    let bytes = batch(prefix, count)?;
    let header = brook_record::validate_batch(&bytes, usize::MAX)?;
    Ok((bytes, header))
}

/// Every record of the log, read batch by batch from its start.
fn read_all(log: &PartitionLog) -> anyhow::Result<Vec<brook_record::Record>> {
    let mut records: Vec<brook_record::Record> = Vec::new();
    let mut next = log.start_offset();
    while next < log.high_watermark() {
        let read = log.read(next, 1 << 20)?;
        let batch = brook_record::decode_batches(&read.records)?;
        anyhow::ensure!(!batch.is_empty(), "empty read at {next}");
        records.extend(batch.into_iter().filter(|r| r.offset >= next));
        next = records.last().map_or(next, |r| r.offset + 1);
    }
    Ok(records)
}

#[test]
fn crash_keeps_exactly_the_synced_batches() {
    let storage = MemStorage::default();
    let dir = Path::new("/brook/topics/t/0");
    let config = LogConfig::default();
    let (log, _) = PartitionLog::open(Arc::new(storage.clone()), dir, config).unwrap();
    for i in 0..5 {
        let (offsets, _) = log
            .append(&[validated(&format!("synced{i}"), 3).unwrap()], 0)
            .unwrap();
        assert_eq!(offsets, [BatchOutcome::Appended(i * 3)]);
        let mark = log.sync().unwrap();
        log.publish(&mark);
    }
    for i in 0..4 {
        log.append(&[validated(&format!("lost{i}"), 2).unwrap()], 0)
            .unwrap();
    }
    assert_eq!(log.high_watermark(), 15);

    let image = storage.crash_image();
    drop(log);
    let (recovered, report) = PartitionLog::open(Arc::new(image), dir, config).unwrap();
    assert_eq!(report.damage, None);
    assert_eq!(recovered.high_watermark(), 15);
    let records = read_all(&recovered).unwrap();
    let expected: Vec<String> = (0..5)
        .flat_map(|i| (0..3).map(move |j| format!("synced{i}-{j}")))
        .collect();
    assert_eq!(values(&records), expected);
    let (offsets, _) = recovered
        .append(&[validated("after", 1).unwrap()], 0)
        .unwrap();
    assert_eq!(offsets, [BatchOutcome::Appended(15)]);
}
