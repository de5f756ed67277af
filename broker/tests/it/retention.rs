//! Retention by size and by age: old segments go, the start offset moves,
//! fetches below it are out of range and fetches at it work.

use crate::common;

use std::path::Path;
use std::time::Duration;

use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_proto::{AlterTopicConfigRequest, PartitionDescription, TopicConfig};
use common::{Clients, partition_batch, produce_request, sized_batch, within};
use tonic::Code;

const SEGMENT_BYTES: u64 = 2048;
const RETENTION_BYTES: i64 = 8 * 1024;

async fn start() -> anyhow::Result<(EmbeddedBroker, Clients)> {
    let mut config = BrokerConfig::default();
    config.retention_check_interval = Duration::from_millis(50);
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let clients = Clients::connect(embedded.endpoint()).await?;
    Ok((embedded, clients))
}

/// Produces `count` single-record batches of about `value_bytes` bytes, ten per request.
async fn produce_batches(
    clients: &mut Clients,
    topic: &str,
    count: usize,
    value_bytes: usize,
    timestamp: i64,
) -> anyhow::Result<()> {
    for chunk in 0..count.div_ceil(10) {
        let batches = (0..10.min(count - chunk * 10))
            .map(|_| {
                Ok(partition_batch(
                    topic,
                    0,
                    sized_batch(value_bytes, timestamp)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let response = within(
            "produce",
            clients.produce.produce(produce_request(0, batches)),
        )
        .await??
        .into_inner();
        anyhow::ensure!(
            response.results.iter().all(|r| r.error.is_none()),
            "produce failed: {response:?}"
        );
    }
    Ok(())
}

/// Describes the partition until `done` holds for it (bounded by `WAIT`).
async fn describe_until(
    clients: &mut Clients,
    topic: &str,
    done: impl Fn(&PartitionDescription) -> bool,
) -> anyhow::Result<PartitionDescription> {
    within("waiting for retention", async {
        loop {
            let described = clients.describe(topic, 0).await?;
            if done(&described) {
                return Ok(described);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?
}

/// Total bytes of the segment log files in `dir`, and how many there are.
fn logs_on_disk(dir: &Path) -> anyhow::Result<(u64, usize)> {
    let mut bytes = 0;
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".log") {
            bytes += entry.metadata()?.len();
            count += 1;
        }
    }
    Ok((bytes, count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_retention_deletes_old_segments_and_moves_the_start() {
    let (embedded, mut clients) = start().await.unwrap();
    let config = TopicConfig {
        segment_bytes: Some(SEGMENT_BYTES),
        retention_bytes: Some(RETENTION_BYTES),
        ..TopicConfig::default()
    };
    clients.create_topic("sized", 1, config).await.unwrap();
    // About 200 KiB in 1 KiB batches: two batches a segment.
    produce_batches(&mut clients, "sized", 200, 900, common::now_ms())
        .await
        .unwrap();

    // Segments are deleted while the partition holds more than the limit.
    let bound = RETENTION_BYTES as u64;
    let described = describe_until(&mut clients, "sized", |p| {
        p.start_offset > 0 && p.size_bytes <= bound
    })
    .await
    .unwrap();
    assert_eq!(described.end_offset, 200);
    let dir = embedded.data_dir().join("topics/sized/0");
    let (on_disk, files) = logs_on_disk(&dir).unwrap();
    assert!(
        on_disk <= bound,
        "{on_disk} bytes of segments on disk, over {bound}"
    );
    // ... and no more than that: the last segment deleted took it over.
    assert!(
        on_disk > RETENTION_BYTES as u64 - 2 * SEGMENT_BYTES,
        "retention kept only {on_disk} bytes"
    );
    assert_eq!(files, described.segments as usize);

    let start = described.start_offset;
    let status = clients.fetch_once("sized", 0, start - 1).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let holds = format!("the log holds offsets {start} (start)");
    assert!(status.message().contains(&holds), "{}", status.message());
    let status = clients.fetch_once("sized", 0, 0).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    let records = clients.fetch_all("sized", 0, start).await.unwrap();
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (start..200).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_retention_bytes_applies_in_the_background() {
    let (_embedded, mut clients) = start().await.unwrap();
    let config = TopicConfig {
        segment_bytes: Some(SEGMENT_BYTES),
        ..TopicConfig::default()
    };
    clients.create_topic("later", 1, config).await.unwrap();
    produce_batches(&mut clients, "later", 60, 900, common::now_ms())
        .await
        .unwrap();
    let before = clients.describe("later", 0).await.unwrap();
    assert_eq!(before.start_offset, 0);
    assert!(before.segments > 20, "{before:?}");

    let request = AlterTopicConfigRequest {
        name: "later".to_owned(),
        config: Some(TopicConfig {
            retention_bytes: Some(RETENTION_BYTES),
            ..TopicConfig::default()
        }),
    };
    within("alter", clients.admin.alter_topic_config(request))
        .await
        .unwrap()
        .unwrap();
    // No produce from here on: only the periodic check can delete segments.
    let bound = RETENTION_BYTES as u64;
    let after = describe_until(&mut clients, "later", |p| p.size_bytes <= bound)
        .await
        .unwrap();
    assert!(after.start_offset > 0, "{after:?}");
    assert_eq!(after.end_offset, 60);
    let records = clients
        .fetch_all("later", 0, after.start_offset)
        .await
        .unwrap();
    assert_eq!(records.len() as i64, 60 - after.start_offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_deletes_segments_of_old_records_only() {
    let (_embedded, mut clients) = start().await.unwrap();
    let config = TopicConfig {
        segment_bytes: Some(1024),
        retention_ms: Some(60_000),
        ..TopicConfig::default()
    };
    clients.create_topic("aged", 1, config).await.unwrap();
    let hour_ago = common::now_ms() - 3_600_000;
    produce_batches(&mut clients, "aged", 20, 400, hour_ago)
        .await
        .unwrap();
    // Every sealed segment holds only hour-old records; the active one stays.
    let old = describe_until(&mut clients, "aged", |p| p.segments == 1)
        .await
        .unwrap();
    assert!(old.start_offset > 0, "{old:?}");
    assert_eq!(old.end_offset, 20);

    produce_batches(&mut clients, "aged", 20, 400, common::now_ms())
        .await
        .unwrap();
    let fresh = clients.describe("aged", 0).await.unwrap();
    assert!(fresh.segments > 1, "{fresh:?}");
    assert!(
        fresh.start_offset <= 20,
        "a fresh record was deleted: {fresh:?}"
    );
    let records = clients
        .fetch_all("aged", 0, fresh.start_offset)
        .await
        .unwrap();
    let fresh_count = records.iter().filter(|r| r.timestamp > hour_ago).count();
    assert_eq!(fresh_count, 20);
    assert_eq!(records.last().map(|r| r.offset), Some(39));
}
