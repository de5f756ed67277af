//! Restarting on a data directory: after a crash, a torn or corrupt tail of
//! the active segment is cut back to the last whole batch; damaged or
//! missing indexes of sealed segments are rebuilt; an undamaged log comes
//! back whole, through its clean-shutdown mark after a clean shutdown; past
//! a recovery point, only the batches after it are checked.

use crate::common;

use std::io::IoSlice;
use std::path::{Path, PathBuf};

use anyhow::Context;
use brook_broker::EmbeddedBroker;
use brook_broker::storage::{OsStorage, Storage};
use brook_proto::list_offsets_request::Spec;
use brook_proto::{ListOffsetsRequest, TopicConfig};
use brook_record::{BatchOptions, NewRecord};
use bytes::Bytes;
use common::{Clients, garbage, sized_batch, values, within};

const TOPIC: &str = "r";
/// Batches produced; three records each, about 260 bytes, three to a segment.
const BATCHES: i64 = 24;
const RECORDS_PER_BATCH: i64 = 3;
const FIRST_TIMESTAMP_MS: i64 = 1_700_000_000_000;

fn value(offset: i64) -> String {
    format!("record-{offset:04}-{}", "p".repeat(60))
}

/// Batch `i`: offsets `3i..3i+3`, all stamped one second after batch `i - 1`.
fn numbered_batch(i: i64) -> anyhow::Result<Bytes> {
    let records: Vec<NewRecord> = (0..RECORDS_PER_BATCH)
        .map(|j| NewRecord {
            timestamp: FIRST_TIMESTAMP_MS + i * 1_000,
            value: Some(Bytes::from(value(i * RECORDS_PER_BATCH + j))),
            ..NewRecord::default()
        })
        .collect();
    Ok(brook_record::encode_batch(
        &records,
        BatchOptions::default(),
    )?)
}

async fn start(dir: &Path) -> anyhow::Result<(EmbeddedBroker, Clients)> {
    let embedded = EmbeddedBroker::builder().data_dir(dir).start().await?;
    let clients = Clients::connect(embedded.endpoint()).await?;
    Ok((embedded, clients))
}

/// Writes `BATCHES` batches over several 1 KiB segments, then stops the broker.
async fn fill(dir: &Path) -> anyhow::Result<()> {
    let (embedded, mut clients) = start(dir).await?;
    let config = TopicConfig {
        segment_bytes: Some(1024),
        retention_ms: Some(-1),
        ..TopicConfig::default()
    };
    clients.create_topic(TOPIC, 1, config).await?;
    for i in 0..BATCHES {
        let base = clients.produce(TOPIC, 0, numbered_batch(i)?).await?;
        anyhow::ensure!(base == i * RECORDS_PER_BATCH, "batch {i} got offset {base}");
    }
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    Ok(())
}

fn partition_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics").join(TOPIC).join("0")
}

fn clean_shutdown_mark(data_dir: &Path) -> PathBuf {
    partition_dir(data_dir).join("clean-shutdown")
}

/// Makes the last shutdown look like a crash: without its clean-shutdown
/// mark, the next start checks the active segment batch by batch.
fn forget_clean_shutdown(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(clean_shutdown_mark(data_dir))?;
    Ok(())
}

/// Segment log files, by base offset.
fn segment_logs(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir(data_dir))?
        .map(|entry| Ok(entry?.path()))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    Ok(logs)
}

/// `(position, length)` of every batch in a segment log file.
fn batch_spans(log: &Path) -> anyhow::Result<Vec<(usize, usize)>> {
    let bytes = std::fs::read(log)?;
    let mut spans = Vec::new();
    let mut position = 0;
    while let Some(len) = bytes
        .get(position..)
        .and_then(brook_record::batch_total_len)
    {
        anyhow::ensure!(position + len <= bytes.len(), "torn batch at {position}");
        spans.push((position, len));
        position += len;
    }
    Ok(spans)
}

/// Checks that exactly offsets `0..end` are served, with their values.
async fn assert_served(clients: &mut Clients, end: i64) -> anyhow::Result<()> {
    let served_end = clients.end_offset(TOPIC, 0).await?;
    anyhow::ensure!(served_end == end, "end offset {served_end}, expected {end}");
    let records = clients.fetch_all(TOPIC, 0, 0).await?;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    anyhow::ensure!(
        offsets == (0..end).collect::<Vec<i64>>(),
        "offsets served: {offsets:?}"
    );
    let expected: Vec<String> = (0..end).map(value).collect();
    anyhow::ensure!(values(&records) == expected, "values differ");
    Ok(())
}

/// Damages the last batch of the active segment with `damage(bytes, start, len)`,
/// restarts, and checks the log ends where that batch began.
async fn assert_last_batch_cut(
    damage: impl FnOnce(&mut Vec<u8>, usize, usize),
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fill(dir.path()).await?;
    forget_clean_shutdown(dir.path())?;
    let logs = segment_logs(dir.path())?;
    anyhow::ensure!(logs.len() >= 3, "expected several segments, got {logs:?}");
    let active = logs.last().context("no segment")?;
    let &(position, len) = batch_spans(active)?.last().context("empty segment")?;
    let mut bytes = std::fs::read(active)?;
    damage(&mut bytes, position, len);
    std::fs::write(active, &bytes)?;

    let (embedded, mut clients) = start(dir.path()).await?;
    let end = (BATCHES - 1) * RECORDS_PER_BATCH;
    assert_served(&mut clients, end).await?;
    let base = clients
        .produce(TOPIC, 0, numbered_batch(BATCHES - 1)?)
        .await?;
    anyhow::ensure!(base == end, "a new batch got offset {base}, expected {end}");
    assert_served(&mut clients, BATCHES * RECORDS_PER_BATCH).await?;
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    Ok(())
}

#[test]
fn appending_nothing_to_a_real_file_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let file = OsStorage.open(&dir.path().join("empty.index")).unwrap();
    file.append(&[IoSlice::new(&[])]).unwrap();
    file.append(&[]).unwrap();
    assert_eq!(file.len().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_batch_of_the_active_segment_is_cut() {
    assert_last_batch_cut(|bytes, position, len| bytes.truncate(position + len / 2))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_last_batch_of_the_active_segment_is_cut() {
    assert_last_batch_cut(|bytes, position, len| bytes[position + len / 2] ^= 0x20)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_damaged_indexes_of_sealed_segments_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path()).await.unwrap();
    let logs = segment_logs(dir.path()).unwrap();
    assert!(logs.len() >= 4, "expected several segments, got {logs:?}");
    std::fs::remove_file(logs[0].with_extension("index")).unwrap();
    std::fs::write(logs[1].with_extension("index"), garbage(7, 64)).unwrap();
    std::fs::write(logs[2].with_extension("timeindex"), garbage(8, 48)).unwrap();
    std::fs::remove_file(logs[2].with_extension("index")).unwrap();

    let (embedded, mut clients) = start(dir.path()).await.unwrap();
    assert_served(&mut clients, BATCHES * RECORDS_PER_BATCH)
        .await
        .unwrap();
    // A fetch at every offset starts with the batch that holds it.
    for offset in 0..BATCHES * RECORDS_PER_BATCH {
        let bytes = clients.fetch_once(TOPIC, 0, offset).await.unwrap();
        let records = brook_record::decode_batches(&bytes).unwrap();
        let first = records.first().map(|r| r.offset);
        assert_eq!(
            first,
            Some(offset - offset % RECORDS_PER_BATCH),
            "fetch at {offset}"
        );
    }
    // Timestamp lookups go through the rebuilt time indexes.
    for i in 0..BATCHES {
        let request = ListOffsetsRequest {
            topic: TOPIC.to_owned(),
            partition: 0,
            spec: Some(Spec::TimestampMs(FIRST_TIMESTAMP_MS + i * 1_000 - 500)),
        };
        let found = clients
            .fetch
            .list_offsets(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.offset, i * RECORDS_PER_BATCH, "batch {i}");
        assert_eq!(found.timestamp_ms, FIRST_TIMESTAMP_MS + i * 1_000);
    }
    drop(clients);
    within("shutdown", embedded.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undamaged_log_survives_restarts_whole() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path()).await.unwrap();
    let end = BATCHES * RECORDS_PER_BATCH;
    for restart in 0..2 {
        assert!(
            clean_shutdown_mark(dir.path()).exists(),
            "shut down cleanly"
        );
        let (embedded, mut clients) = start(dir.path()).await.unwrap();
        assert!(
            !clean_shutdown_mark(dir.path()).exists(),
            "the mark is used up before anything is appended"
        );
        assert_served(&mut clients, end + restart * RECORDS_PER_BATCH)
            .await
            .unwrap();
        let base = clients
            .produce(TOPIC, 0, numbered_batch(BATCHES + restart).unwrap())
            .await;
        assert_eq!(base.unwrap(), end + restart * RECORDS_PER_BATCH);
        drop(clients);
        within("shutdown", embedded.shutdown())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_past_a_recovery_point_cuts_the_tail_and_keeps_the_point() {
    const BIG_BATCHES: i64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let (embedded, mut clients) = start(dir.path()).await.unwrap();
    let config = TopicConfig {
        retention_ms: Some(-1),
        ..TopicConfig::default()
    };
    clients.create_topic(TOPIC, 1, config).await.unwrap();
    // 35 MiB in one segment: past the 32 MiB between recovery points.
    for i in 0..BIG_BATCHES {
        let base = clients
            .produce(TOPIC, 0, sized_batch(7 << 20, FIRST_TIMESTAMP_MS).unwrap())
            .await
            .unwrap();
        assert_eq!(base, i);
    }
    let point = partition_dir(dir.path()).join("recovery-point");
    within("recovery point", async {
        while !point.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    for i in 0..3 {
        clients
            .produce(TOPIC, 0, numbered_batch(i).unwrap())
            .await
            .unwrap();
    }
    drop(clients);
    within("shutdown", embedded.shutdown())
        .await
        .unwrap()
        .unwrap();
    // A crash in the middle of the last write.
    forget_clean_shutdown(dir.path()).unwrap();
    let active = segment_logs(dir.path()).unwrap().pop().unwrap();
    let &(position, len) = batch_spans(&active).unwrap().last().unwrap();
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.truncate(position + len / 2);
    std::fs::write(&active, &bytes).unwrap();

    let (embedded, mut clients) = start(dir.path()).await.unwrap();
    assert!(point.exists(), "a point that matched the log is kept");
    let end = BIG_BATCHES + 2 * RECORDS_PER_BATCH;
    assert_eq!(clients.end_offset(TOPIC, 0).await.unwrap(), end);
    let records = clients.fetch_all(TOPIC, 0, BIG_BATCHES).await.unwrap();
    let expected: Vec<String> = (0..2 * RECORDS_PER_BATCH).map(value).collect();
    assert_eq!(values(&records), expected);
    let base = clients
        .produce(TOPIC, 0, numbered_batch(2).unwrap())
        .await
        .unwrap();
    assert_eq!(base, end, "appends go on after the cut");
    drop(clients);
    within("shutdown", embedded.shutdown())
        .await
        .unwrap()
        .unwrap();
}
