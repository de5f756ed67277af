//! `brook consume` over batches whose records do not decode (spoilt on
//! disk with the broker stopped, the CRC fixed): without
//! `--skip-undecodable` it stops at the first and fails; with it, plain and
//! with `--group`, it prints the records around them, names each skipped
//! range on stderr, exits 0, and the group's commit moves past the last.

use crate::common;

use std::path::Path;

use brook_client::{BatchOptions, Client, GroupClient, NewRecord, TopicConfig, TopicPartition};
use brook_record::{BatchHeader, HEADER_LEN, split_batches};
use bytes::Bytes;
use common::{Server, run};
use nix::sys::signal::Signal;

const TOPIC: &str = "ledger";
/// Four batches of three: 0-2 good, 3-5 spoilt, 6-8 good, 9-11 spoilt.
const PER_BATCH: i64 = 3;
const BATCHES: i64 = 4;
const BAD_BASES: [i64; 2] = [3, 9];

/// Produces the four batches, stops the server cleanly and spoils two.
async fn spoilt_topic(data: &Path) {
    let server = Server::start(data).await;
    let client = Client::connect(server.endpoint()).await.expect("connect");
    client
        .create_topic(TOPIC, 1, TopicConfig::default())
        .await
        .expect("create topic");
    for batch in 0..BATCHES {
        let records: Vec<NewRecord> = (batch * PER_BATCH..(batch + 1) * PER_BATCH)
            .map(|i| NewRecord {
                timestamp: 1_700_000_000_000 + i,
                value: Some(Bytes::from(format!("r{i}"))),
                ..NewRecord::default()
            })
            .collect();
        let encoded =
            brook_record::encode_batch(&records, BatchOptions::default()).expect("encodes");
        client
            .produce_batch(TOPIC, 0, encoded)
            .await
            .expect("produce");
    }
    drop(client);
    assert_eq!(server.stop(Signal::SIGTERM).await.code(), Some(0));

    let segment = data
        .join("topics")
        .join(TOPIC)
        .join("0")
        .join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    let mut at = 0;
    for batch in split_batches(Bytes::from(bytes.clone())) {
        let batch = batch.expect("the segment frames");
        let header = BatchHeader::parse(&batch).expect("a header");
        if BAD_BASES.contains(&header.base_offset) {
            let stored = &mut bytes[at..at + batch.len()];
            // The first record's attributes byte, after its length varint; must be 0.
            stored[HEADER_LEN + 1] = 1;
            let crc = crc32fast::hash(&stored[16..]);
            stored[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        at += batch.len();
    }
    std::fs::write(&segment, bytes).expect("write the segment");
}

const GOOD: &str = "r0\nr1\nr2\nr6\nr7\nr8\n";

fn assert_skips_named(stderr: &[u8]) {
    let stderr = String::from_utf8_lossy(stderr);
    assert!(
        stderr.contains("skipped ledger/0 offsets 3..=5 (3 records)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped ledger/0 offsets 9..=11 (3 records)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn consume_stops_at_an_undecodable_batch_unless_told_to_skip_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    spoilt_topic(dir.path()).await;
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();
    let plain = [
        "consume",
        TOPIC,
        "--from-beginning",
        "--idle-timeout-ms",
        "1000",
    ];

    let stopped = run(&broker, &plain, b"").await;
    assert_eq!(stopped.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&stopped.stdout), "r0\nr1\nr2\n");
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stderr.contains("at offset 3 does not decode"), "{stderr}");

    let skipping = run(
        &broker,
        &[&plain[..], &["--skip-undecodable"]].concat(),
        b"",
    )
    .await;
    assert_eq!(skipping.status.code(), Some(0), "{skipping:?}");
    assert_eq!(String::from_utf8_lossy(&skipping.stdout), GOOD);
    assert_skips_named(&skipping.stderr);

    let group = [&plain[..], &["--group", "auditors", "--skip-undecodable"]].concat();
    let member = run(&broker, &group, b"").await;
    assert_eq!(member.status.code(), Some(0), "{member:?}");
    assert_eq!(String::from_utf8_lossy(&member.stdout), GOOD);
    assert_skips_named(&member.stderr);
    let client = GroupClient::connect(broker).await.expect("connect");
    let committed = client
        .fetch_offsets("auditors", &[TopicPartition::new(TOPIC, 0)])
        .await
        .expect("fetch offsets");
    assert_eq!(
        committed[0].offset,
        BATCHES * PER_BATCH,
        "committed past the last"
    );
}
