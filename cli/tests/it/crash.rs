//! Durability: every acknowledged record survives a SIGKILL of the broker
//! (`brook serve` fsyncs before acknowledging by default).

use crate::common;

use std::time::Duration;

use brook_client::{Client, NewRecord, TopicConfig};
use brook_record::{BatchOptions, encode_batch};
use bytes::Bytes;
use common::Server;
use nix::sys::signal::Signal;
use tokio::time::timeout;

const RECORDS: usize = 100_000;
const BATCH_RECORDS: usize = 1_000;
const PARTITIONS: u32 = 3;
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let client = Client::connect(server.endpoint()).await.unwrap();
    client
        .create_topic("durable", PARTITIONS, TopicConfig::default())
        .await
        .unwrap();

    timeout(LIMIT, produce_all(&client))
        .await
        .expect("every record acknowledged in time");
    // Immediately, with nothing flushed on the way out.
    let killed = server.stop(Signal::SIGKILL).await;
    assert_eq!(killed.code(), None, "killed by a signal: {killed}");
    drop(client);

    let server = Server::start(dir.path()).await;
    let client = Client::connect(server.endpoint()).await.unwrap();
    let mut seen = vec![false; RECORDS];
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let numbers = timeout(
            LIMIT,
            common::read_sequence_numbers(&client, "durable", partition),
        )
        .await
        .expect("read back in time");
        for seq in &numbers {
            let seq = usize::try_from(*seq).expect("a small sequence number");
            assert!(!seen[seq], "sequence number {seq} twice");
            seen[seq] = true;
        }
        total += numbers.len();
    }
    assert_eq!(total, RECORDS);
    assert!(seen.iter().all(|s| *s), "every sequence number is back");

    let status = server.stop(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Sends every record pipelined, round-robin over the partitions, and
/// waits for every acknowledgement.
async fn produce_all(client: &Client) {
    let mut stream = client
        .produce_stream()
        .await
        .expect("open a produce stream");
    let mut pending = Vec::new();
    for (n, first) in (0..RECORDS).step_by(BATCH_RECORDS).enumerate() {
        let records: Vec<NewRecord> = (first..first + BATCH_RECORDS)
            .map(|seq| NewRecord {
                timestamp: 1_700_000_000_000,
                value: Some(Bytes::from(seq.to_string())),
                ..NewRecord::default()
            })
            .collect();
        let batch = encode_batch(&records, BatchOptions::default()).expect("encode");
        let partition = n as u32 % PARTITIONS;
        pending.push(
            stream
                .send("durable", partition, batch)
                .await
                .expect("send"),
        );
    }
    for ack in pending {
        ack.await.expect("acknowledged");
    }
    stream.finish().await;
}
