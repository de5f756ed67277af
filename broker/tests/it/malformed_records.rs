//! A batch whose header and CRC are right but whose records are malformed is
//! refused at produce, naming the record and the field, and nothing of it is
//! appended: consumers never meet a batch they cannot decode.

use crate::common;

use brook_broker::EmbeddedBroker;
use brook_proto::{AlterTopicConfigRequest, CreateTopicRequest, TopicConfig};
use brook_record::{BatchHeader, BatchOptions, Compression, HEADER_LEN};
use bytes::Bytes;
use common::{Clients, batch, partition_batch, produce_request, within};
use tonic::Code;

const TOPIC: &str = "m";
/// Records in the partition before the malformed batches are sent.
const GOOD: i64 = 10;
const GIB: u32 = 1 << 30;

/// Compresses a plain records section as the record crate's builder does.
fn compress(codec: Compression, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(match codec {
        Compression::Lz4 => lz4_flex::block::compress_prepend_size(plain),
        Compression::Zstd => zstd::bulk::compress(plain, 3)?,
        Compression::None => plain.to_vec(),
    })
}

/// A batch around `section` (compressed already if `codec` says so) whose
/// header and CRC are correct, so only its records can be wrong.
fn sealed(codec: Compression, record_count: u32, section: &[u8]) -> anyhow::Result<Bytes> {
    let header = BatchHeader {
        base_offset: 0,
        batch_length: u32::try_from(HEADER_LEN - 12 + section.len())?,
        crc: 0,
        magic: 1,
        attributes: u16::from(codec.id()),
        last_offset_delta: record_count - 1,
        first_timestamp: common::now_ms(),
        max_timestamp: common::now_ms() + 1_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count,
    };
    let mut batch = header.to_bytes().to_vec();
    batch.extend_from_slice(section);
    // Rewriting the (unchanged) producer fields seals the CRC over the rest.
    brook_record::stamp_producer(&mut batch, -1, -1, -1)?;
    Ok(Bytes::from(batch))
}

/// A minimal record at `offset_delta`: no key, no value, no headers.
fn minimal(offset_delta: u8) -> [u8; 7] {
    [6, 0, 0, offset_delta, 1, 1, 0]
}

/// Each malformed batch and what the refusal must say about it.
fn malformed_batches() -> anyhow::Result<Vec<(&'static str, Bytes, &'static str)>> {
    let mut out_of_place = Vec::new();
    for delta in [0, 1, 2, 2] {
        out_of_place.extend_from_slice(&minimal(delta));
    }
    let mut lz4_cut = compress(Compression::Lz4, &minimal(0))?;
    lz4_cut.truncate(lz4_cut.len() - 2);
    let mut lz4_gib = GIB.to_le_bytes().to_vec();
    lz4_gib.extend_from_slice(&[0; 64]);
    // A zstd frame header: single segment, 4-byte content size of 1 GiB.
    let mut zstd_gib = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
    zstd_gib.extend_from_slice(&GIB.to_le_bytes());
    zstd_gib.extend_from_slice(&[0; 16]);
    let (none, lz4, zstd) = (Compression::None, Compression::Lz4, Compression::Zstd);
    Ok(vec![
        (
            "reserved attribute bits",
            sealed(none, 1, &[6, 0x40, 0, 0, 1, 1, 0])?,
            "record 0 is malformed: attributes has reserved bits set",
        ),
        (
            "an offset_delta that is not its position",
            sealed(zstd, 4, &compress(zstd, &out_of_place)?)?,
            "record 3 is malformed: offset_delta is 2, expected 3",
        ),
        (
            "a header key that is not UTF-8",
            sealed(lz4, 1, &compress(lz4, &[9, 0, 0, 0, 1, 1, 1, 1, 0xff, 0])?)?,
            "record 0 is malformed: header key is not valid UTF-8",
        ),
        (
            "a value length past the record's end",
            sealed(none, 1, &[7, 0, 0, 0, 1, 10, b'x', 0])?,
            "record 0 is malformed: value runs past the end of the record",
        ),
        (
            "an lz4 section that does not decompress",
            sealed(lz4, 1, &lz4_cut)?,
            "lz4 records section could not be decompressed",
        ),
        (
            "a zstd section that does not decompress",
            sealed(zstd, 1, b"\x28\xb5\x2f\xfd not a frame")?,
            "zstd records section could not be decompressed",
        ),
        (
            "an lz4 section declaring 1 GiB",
            sealed(lz4, 1, &lz4_gib)?,
            "decompresses to at least 1073741824 bytes, over the limit of 67108864",
        ),
        (
            "a zstd section declaring 1 GiB",
            sealed(zstd, 1, &zstd_gib)?,
            "decompresses to at least 1073741824 bytes, over the limit of 67108864",
        ),
        (
            "a record_count of 1,000,000 over one record",
            sealed(zstd, 1_000_000, &compress(zstd, &minimal(0))?)?,
            "record_count is 1000000 but the records section holds 1 records",
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_malformed_records_are_refused_and_nothing_is_appended() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    clients
        .create_topic(TOPIC, 1, TopicConfig::default())
        .await
        .unwrap();
    let good = usize::try_from(GOOD).unwrap();
    clients
        .produce(TOPIC, 0, batch("before", good).unwrap())
        .await
        .unwrap();

    for (what, bad, needle) in malformed_batches().unwrap() {
        let request = produce_request(1, vec![partition_batch(TOPIC, 0, bad)]);
        let status = match within(what, clients.produce.produce(request))
            .await
            .unwrap()
        {
            Ok(response) => panic!("{what} was accepted: {:?}", response.into_inner()),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        for needle in [needle, "topic `m` partition 0"] {
            assert!(
                status.message().contains(needle),
                "{what}: `{}` does not mention `{needle}`",
                status.message()
            );
        }
        assert_eq!(
            clients.end_offset(TOPIC, 0).await.unwrap(),
            GOOD,
            "{what} moved the high watermark"
        );
    }

    // Large compressed batches are validated off the async worker; the
    // same checks hold there. A 512 KiB record that barely compresses,
    // followed by a record that claims position 0 again:
    let big = brook_record::NewRecord {
        timestamp: common::now_ms(),
        key: None,
        value: Some(Bytes::from(common::garbage(7, 512 * 1024))),
        headers: Vec::new(),
    };
    let plain = brook_record::encode_batch(std::slice::from_ref(&big), BatchOptions::default())
        .unwrap()
        .slice(HEADER_LEN..);
    let mut two = plain.to_vec();
    two.extend_from_slice(&minimal(0));
    let zstd = Compression::Zstd;
    let big_bad = sealed(zstd, 2, &compress(zstd, &two).unwrap()).unwrap();
    assert!(big_bad.len() > 256 * 1024);
    let request = produce_request(1, vec![partition_batch(TOPIC, 0, big_bad)]);
    let status = within("big", clients.produce.produce(request))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("record 1 is malformed: offset_delta is 0, expected 1"),
        "{status:?}"
    );
    assert_eq!(clients.end_offset(TOPIC, 0).await.unwrap(), GOOD);
    let big_good = brook_record::encode_batch(
        &[big],
        BatchOptions {
            compression: zstd,
            ..BatchOptions::default()
        },
    )
    .unwrap();
    assert_eq!(clients.produce(TOPIC, 0, big_good).await.unwrap(), GOOD);

    // The partition takes a valid batch after them, and reads back whole.
    let after = brook_record::encode_batch(
        &common::records("after", 3, common::now_ms()),
        BatchOptions {
            compression: Compression::Zstd,
            ..BatchOptions::default()
        },
    )
    .unwrap();
    assert_eq!(clients.produce(TOPIC, 0, after).await.unwrap(), GOOD + 1);
    let records = clients.fetch_all(TOPIC, 0, 0).await.unwrap();
    let values = common::values(&records);
    assert_eq!(values.len(), good + 4);
    assert_eq!(values[good + 1..], ["after-0", "after-1", "after-2"]);
    embedded.shutdown().await.unwrap();
}

/// Produces one batch to partition 0 of `topic`; the status if it is refused.
async fn produce_status(
    clients: &mut Clients,
    topic: &str,
    batch: Bytes,
) -> anyhow::Result<Option<tonic::Status>> {
    let request = produce_request(2, vec![partition_batch(topic, 0, batch)]);
    match within("produce", clients.produce.produce(request)).await? {
        Ok(_) => Ok(None),
        Err(status) => Ok(Some(status)),
    }
}

async fn validate_records(clients: &mut Clients, topic: &str) -> anyhow::Result<String> {
    let request = brook_proto::DescribeTopicRequest {
        name: topic.to_owned(),
    };
    let response = within("describe", clients.admin.describe_topic(request)).await??;
    Ok(response
        .into_inner()
        .topic
        .and_then(|t| t.config)
        .and_then(|c| c.validate_records)
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_leaves_compressed_records_unchecked_until_altered_back_to_full() {
    let embedded = EmbeddedBroker::start().await.unwrap();
    let mut clients = Clients::connect(embedded.endpoint()).await.unwrap();
    let framing = TopicConfig {
        validate_records: Some("framing".to_owned()),
        ..TopicConfig::default()
    };
    clients.create_topic("f", 1, framing).await.unwrap();
    assert_eq!(
        validate_records(&mut clients, "f").await.unwrap(),
        "framing"
    );
    let zstd = Compression::Zstd;
    let compressed_bad =
        sealed(zstd, 1, &compress(zstd, &[6, 0x40, 0, 0, 1, 1, 0]).unwrap()).unwrap();
    let plain_bad = sealed(Compression::None, 1, &[6, 0x40, 0, 0, 1, 1, 0]).unwrap();

    // Framing still walks uncompressed records, but not compressed ones:
    // this is the risk the setting takes.
    let status = produce_status(&mut clients, "f", plain_bad.clone())
        .await
        .unwrap();
    assert_eq!(status.map(|s| s.code()), Some(Code::InvalidArgument));
    let status = produce_status(&mut clients, "f", compressed_bad.clone())
        .await
        .unwrap();
    assert!(
        status.is_none(),
        "framing refused a compressed batch: {status:?}"
    );
    assert_eq!(clients.end_offset("f", 0).await.unwrap(), 1);

    let full = AlterTopicConfigRequest {
        name: "f".to_owned(),
        config: Some(TopicConfig {
            validate_records: Some("full".to_owned()),
            ..TopicConfig::default()
        }),
    };
    within("alter", clients.admin.alter_topic_config(full))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(validate_records(&mut clients, "f").await.unwrap(), "full");
    let status = produce_status(&mut clients, "f", compressed_bad)
        .await
        .unwrap();
    let status = status.expect("full refuses the compressed batch");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("record 0 is malformed: attributes"),
        "{status:?}"
    );
    assert_eq!(clients.end_offset("f", 0).await.unwrap(), 1);

    // An unknown value is refused, naming the setting.
    let request = CreateTopicRequest {
        name: "g".to_owned(),
        partitions: 1,
        config: Some(TopicConfig {
            validate_records: Some("some".to_owned()),
            ..TopicConfig::default()
        }),
        replication_factor: None,
    };
    let status = within("create", clients.admin.create_topic(request))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("validate_records"), "{status:?}");
    embedded.shutdown().await.unwrap();
}
