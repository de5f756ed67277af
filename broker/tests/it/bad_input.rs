//! Bad requests get a precise gRPC code and a message naming the field, and
//! leave the log as it was.

use crate::common;

use brook_broker::EmbeddedBroker;
use brook_proto::{CreateTopicRequest, FetchPartition, FetchRequest, TopicConfig};
use bytes::Bytes;
use common::{Clients, batch, garbage, partition_batch, produce_request, within};
use tonic::Code;

/// Topic `t`: two partitions, batches up to `MAX_MESSAGE_BYTES`, ten records in partition 0.
const TOPIC: &str = "t";
const MAX_MESSAGE_BYTES: u32 = 1024;

async fn setup() -> anyhow::Result<(EmbeddedBroker, Clients)> {
    let embedded = EmbeddedBroker::start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    let config = TopicConfig {
        max_message_bytes: Some(MAX_MESSAGE_BYTES),
        ..TopicConfig::default()
    };
    clients.create_topic(TOPIC, 2, config).await?;
    clients.produce(TOPIC, 0, batch("good", 10)?).await?;
    Ok((embedded, clients))
}

/// Produces `batches` to partition 0 and returns the status it failed with.
async fn produce_error(
    clients: &mut Clients,
    batches: Vec<Bytes>,
) -> anyhow::Result<tonic::Status> {
    let request = produce_request(
        7,
        batches
            .into_iter()
            .map(|b| partition_batch(TOPIC, 0, b))
            .collect(),
    );
    match within("produce", clients.produce.produce(request)).await? {
        Ok(response) => anyhow::bail!("produce was accepted: {:?}", response.into_inner()),
        Err(status) => Ok(status),
    }
}

/// The status has `code` and a message containing every one of `needles`.
fn assert_status(status: &tonic::Status, code: Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "`{}` does not mention `{needle}`",
            status.message()
        );
    }
}

async fn assert_nothing_appended(clients: &mut Clients) -> anyhow::Result<()> {
    anyhow::ensure!(
        clients.end_offset(TOPIC, 0).await? == 10,
        "partition 0 grew"
    );
    anyhow::ensure!(clients.end_offset(TOPIC, 1).await? == 0, "partition 1 grew");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_a_wrong_crc_is_rejected() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let mut bad = batch("x", 3).unwrap().to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let status = produce_error(&mut clients, vec![bad.into()]).await.unwrap();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["crc mismatch", "topic `t` partition 0"],
    );
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_batches_are_rejected() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let whole = batch("x", 3).unwrap();
    let short_body = whole.slice(..whole.len() - 5);
    let status = produce_error(&mut clients, vec![short_body]).await.unwrap();
    assert_status(&status, Code::InvalidArgument, &["batch_length declares"]);

    let short_header = whole.slice(..30);
    let status = produce_error(&mut clients, vec![short_header])
        .await
        .unwrap();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["truncated", "need 57 bytes, have 30"],
    );
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_count_that_does_not_match_the_records_is_rejected() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let mut bad = batch("x", 10).unwrap().to_vec();
    // Claim 11 records (and a matching last_offset_delta), with a valid CRC.
    bad[19..23].copy_from_slice(&10u32.to_le_bytes());
    bad[53..57].copy_from_slice(&11u32.to_le_bytes());
    let crc = crc32fast::hash(&bad[16..]);
    bad[12..16].copy_from_slice(&crc.to_le_bytes());
    let status = produce_error(&mut clients, vec![bad.into()]).await.unwrap();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["record_count is 11 but the records section holds 10 records"],
    );
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_over_the_topics_max_message_bytes_is_rejected() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let big = common::sized_batch(MAX_MESSAGE_BYTES as usize, common::now_ms()).unwrap();
    let status = produce_error(&mut clients, vec![big.clone()])
        .await
        .unwrap();
    let size = format!(
        "batch is {} bytes, over the limit of {MAX_MESSAGE_BYTES}",
        big.len()
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        &[&size, "max_message_bytes"],
    );
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_batch_keeps_the_whole_request_out() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let good = batch("ok", 2).unwrap();
    let mut bad = batch("bad", 2).unwrap().to_vec();
    bad[20] ^= 0xff;
    let status = produce_error(&mut clients, vec![good, bad.into()])
        .await
        .unwrap();
    assert_status(&status, Code::InvalidArgument, &["topic `t` partition 0"]);
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_batches_are_rejected_and_the_broker_keeps_serving() {
    let (_embedded, mut clients) = setup().await.unwrap();
    for (seed, len) in [(1, 0), (2, 11), (3, 57), (4, 200), (5, 4096)] {
        let status = produce_error(&mut clients, vec![garbage(seed, len).into()])
            .await
            .unwrap();
        assert_status(&status, Code::InvalidArgument, &["topic `t` partition 0"]);
    }
    assert_nothing_appended(&mut clients).await.unwrap();
    let base = clients
        .produce(TOPIC, 0, batch("after", 1).unwrap())
        .await
        .unwrap();
    assert_eq!(base, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_partitions_are_not_found() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let request = produce_request(1, vec![partition_batch("nope", 0, batch("x", 1).unwrap())]);
    let status = clients.produce.produce(request).await.unwrap_err();
    assert_status(&status, Code::NotFound, &["topic `nope` does not exist"]);

    let request = produce_request(1, vec![partition_batch(TOPIC, 2, batch("x", 1).unwrap())]);
    let status = clients.produce.produce(request).await.unwrap_err();
    assert_status(
        &status,
        Code::NotFound,
        &[
            "partition 2 of topic `t` does not exist",
            "has 2 partitions",
        ],
    );

    let status = clients.fetch_once("nope", 0, 0).await.unwrap_err();
    assert_status(&status, Code::NotFound, &["topic `nope` does not exist"]);
    let status = clients.fetch_once(TOPIC, 9, 0).await.unwrap_err();
    assert_status(&status, Code::NotFound, &["partition 9 of topic `t`"]);
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topic_names_and_partition_counts_are_invalid() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let long = "x".repeat(250);
    let cases = [
        ("a/b", 1, "topic name: `a/b` contains '/'"),
        (
            long.as_str(),
            1,
            "topic name: is 250 characters long, over the limit of 249",
        ),
        ("", 1, "topic name: must not be empty"),
        ("fine", 0, "partitions: must be between 1 and"),
    ];
    for (name, partitions, message) in cases {
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            config: None,
            replication_factor: None,
        };
        let status = clients.admin.create_topic(request).await.unwrap_err();
        assert_status(&status, Code::InvalidArgument, &[message]);
    }
    let listed = clients
        .admin
        .list_topics(brook_proto::ListTopicsRequest {})
        .await;
    let names: Vec<String> = listed
        .unwrap()
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, [TOPIC]);
}

/// A status message repeating a 10 KB name would pass the client's header
/// limit and reach it as RESOURCE_EXHAUSTED; the name is cut instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_topic_name_gets_its_own_code_and_a_short_message() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let huge = "n".repeat(10 * 1024);
    let request = produce_request(1, vec![partition_batch(&huge, 0, batch("x", 1).unwrap())]);
    let status = clients.produce.produce(request).await.unwrap_err();
    assert_status(&status, Code::NotFound, &["does not exist", "nnnn…`"]);
    assert!(status.message().len() <= 1024, "{}", status.message().len());

    let status = clients.fetch_once(&huge, 0, 0).await.unwrap_err();
    assert_status(&status, Code::NotFound, &["does not exist"]);
    assert!(status.message().len() <= 1024, "{}", status.message().len());

    let request = CreateTopicRequest {
        name: format!("{huge}/"),
        partitions: 1,
        config: None,
        replication_factor: None,
    };
    let status = clients.admin.create_topic(request).await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["over the limit of 249"]);
    assert!(status.message().len() <= 1024, "{}", status.message().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_topic_already_exists() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let request = CreateTopicRequest {
        name: TOPIC.to_owned(),
        partitions: 5,
        config: None,
        replication_factor: None,
    };
    let status = clients.admin.create_topic(request).await.unwrap_err();
    assert_status(&status, Code::AlreadyExists, &["topic `t` already exists"]);
    assert_eq!(clients.describe(TOPIC, 1).await.unwrap().end_offset, 0);
    assert_nothing_appended(&mut clients).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_offsets_outside_the_log_are_refused() {
    let (_embedded, mut clients) = setup().await.unwrap();
    let status = clients.fetch_once(TOPIC, 0, -1).await.unwrap_err();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["offset: must be >= 0, got -1"],
    );

    let status = clients.fetch_once(TOPIC, 0, 11).await.unwrap_err();
    assert_status(
        &status,
        Code::OutOfRange,
        &["offset 11 is out of range", "0 (start) to 10 (end)"],
    );

    // A long poll at an offset past the end fails at once, too.
    let request = FetchRequest {
        partitions: vec![FetchPartition {
            topic: TOPIC.to_owned(),
            partition: 0,
            offset: 1_000,
            max_bytes: 0,
        }],
        max_wait_ms: 5_000,
        max_bytes: 0,
        max_message_bytes: 0,
    };
    let status = within("long poll past the end", clients.fetch.fetch(request))
        .await
        .unwrap()
        .unwrap_err();
    assert_status(&status, Code::OutOfRange, &["offset 1000 is out of range"]);
    assert!(clients.fetch_once(TOPIC, 0, 10).await.unwrap().is_empty());
}

/// A fetch with `max_message_bytes` never answers with more than the client
/// can receive: batches that do not fit wait, and one that can never fit is
/// refused with a status naming the limit instead of a response the client
/// would fail to decode.
#[tokio::test]
async fn fetch_stays_within_the_clients_message_limit() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("big", 1, TopicConfig::default())
        .await?;
    let small = common::sized_batch(10_000, common::now_ms())?;
    let large = common::sized_batch(100_000, common::now_ms())?;
    clients.produce("big", 0, small.clone()).await?;
    clients.produce("big", 0, small.clone()).await?;
    clients.produce("big", 0, large.clone()).await?;
    let fetch = |offset: i64, max_bytes: u32, max_message_bytes: u32| FetchRequest {
        partitions: vec![FetchPartition {
            topic: "big".to_owned(),
            partition: 0,
            offset,
            max_bytes: 0,
        }],
        max_wait_ms: 0,
        max_bytes,
        max_message_bytes,
    };
    let records = |response: tonic::Response<brook_proto::FetchResponse>| {
        response
            .into_inner()
            .partitions
            .into_iter()
            .next()
            .map(|p| p.records)
            .unwrap_or_default()
    };
    // Room for one small batch but not two: exactly one, whole.
    let limit = u32::try_from(small.len() + small.len() / 2)?;
    let one = records(within("fetch", clients.fetch.fetch(fetch(0, 0, limit))).await??);
    anyhow::ensure!(one.len() == small.len(), "{} bytes", one.len());
    // max_bytes of 1 still returns one whole batch when it fits.
    let one = records(within("fetch", clients.fetch.fetch(fetch(0, 1, limit))).await??);
    anyhow::ensure!(one.len() == small.len(), "{} bytes", one.len());
    // Without a stated limit, everything up to max_bytes.
    let all = records(within("fetch", clients.fetch.fetch(fetch(0, 0, 0))).await??);
    anyhow::ensure!(all.len() == 2 * small.len() + large.len());
    // The large batch can never fit in 50 KB.
    let status = within("fetch", clients.fetch.fetch(fetch(2, 0, 50_000)))
        .await?
        .expect_err("a batch larger than the client's limit is refused");
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "max_message_bytes",
            "offset 2",
            &format!("{} bytes", large.len()),
        ],
    );
    // A limit too small for the framing of the response is refused.
    let status = within("fetch", clients.fetch.fetch(fetch(0, 0, 10)))
        .await?
        .expect_err("a limit below the framing is refused");
    assert_status(&status, Code::InvalidArgument, &["max_message_bytes"]);
    Ok(())
}
