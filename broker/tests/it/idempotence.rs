//! Idempotent produce on the broker: a retried batch is answered with its
//! original offset and not appended again, a gap or an old epoch is refused,
//! and all of it survives a restart (segment rolls included).

use crate::common;

use brook_broker::EmbeddedBroker;
use brook_proto::{InitProducerIdRequest, TopicConfig};
use brook_record::{BatchOptions, encode_batch};
use bytes::Bytes;
use common::{Clients, partition_batch, produce_request, records, within};

/// A batch of `count` records of producer `id`/`epoch` starting at `sequence`.
fn idempotent(id: i64, epoch: i16, sequence: i32, count: usize) -> anyhow::Result<Bytes> {
    Ok(encode_batch(
        &records(&format!("s{sequence}"), count, common::now_ms()),
        BatchOptions {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: sequence,
            ..BatchOptions::default()
        },
    )?)
}

/// Produces one batch; returns (base offset, duplicate) or the error status.
async fn send(
    clients: &mut Clients,
    batch: Bytes,
) -> anyhow::Result<Result<(i64, bool), (tonic::Code, String)>> {
    let request = produce_request(0, vec![partition_batch("idem", 0, batch)]);
    match within("produce", clients.produce.produce(request)).await? {
        Ok(response) => {
            let result = response.into_inner().results.remove(0);
            Ok(match result.error {
                Some(error) => Err((tonic::Code::from_i32(error.code), error.message)),
                None => Ok((result.base_offset, result.duplicate)),
            })
        }
        Err(status) => Ok(Err((status.code(), status.message().to_owned()))),
    }
}

async fn init(clients: &mut Clients, producer_id: i64) -> anyhow::Result<(i64, i16)> {
    let response = within(
        "init producer id",
        clients
            .produce
            .init_producer_id(InitProducerIdRequest { producer_id }),
    )
    .await??
    .into_inner();
    Ok((
        response.producer_id,
        i16::try_from(response.producer_epoch)?,
    ))
}

#[tokio::test]
async fn retries_are_answered_with_the_original_offset_across_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let embedded = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    // Small segments: the producer state crosses rolls and snapshots.
    clients
        .create_topic(
            "idem",
            1,
            TopicConfig {
                segment_bytes: Some(2048),
                ..TopicConfig::default()
            },
        )
        .await?;
    let (id, epoch) = init(&mut clients, -1).await?;
    anyhow::ensure!(id > 0 && epoch == 0, "handed out {id}/{epoch}");

    let mut sequence = 0;
    let mut sent = Vec::new();
    for _ in 0..20 {
        let batch = idempotent(id, epoch, sequence, 10)?;
        let (offset, duplicate) = send(&mut clients, batch.clone())
            .await?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(!duplicate);
        sent.push((batch, offset));
        sequence += 10;
    }
    // The last batch again: a duplicate with its original offset.
    let (last, last_offset) = sent
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("none"))?;
    let again = send(&mut clients, last.clone()).await?;
    anyhow::ensure!(again == Ok((last_offset, true)), "{again:?}");
    // A gap is refused and appends nothing.
    let gap = send(&mut clients, idempotent(id, epoch, sequence + 5, 1)?).await?;
    anyhow::ensure!(
        matches!(&gap, Err((tonic::Code::FailedPrecondition, m)) if m.contains("out of order sequence")),
        "{gap:?}"
    );
    anyhow::ensure!(clients.end_offset("idem", 0).await? == 200);
    let described = clients.describe("idem", 0).await?;
    anyhow::ensure!(described.segments > 1, "no roll happened: {described:?}");

    embedded.shutdown().await?;
    let embedded = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    let again = send(&mut clients, last).await?;
    anyhow::ensure!(again == Ok((last_offset, true)), "after restart: {again:?}");
    let next = send(&mut clients, idempotent(id, epoch, sequence, 1)?).await?;
    anyhow::ensure!(next == Ok((200, false)), "{next:?}");
    anyhow::ensure!(clients.end_offset("idem", 0).await? == 201);

    // Without its snapshots the state is rebuilt from every batch header.
    embedded.shutdown().await?;
    let partition_dir = dir.path().join("topics/idem/0");
    let mut removed = 0;
    for entry in std::fs::read_dir(&partition_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "producers") {
            std::fs::remove_file(path)?;
            removed += 1;
        }
    }
    anyhow::ensure!(removed > 0, "no snapshot was written");
    let embedded = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    let next = send(&mut clients, idempotent(id, epoch, sequence, 1)?).await?;
    anyhow::ensure!(next == Ok((200, true)), "without snapshots: {next:?}");
    Ok(())
}

#[tokio::test]
async fn a_new_epoch_fences_the_old_one() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("idem", 1, TopicConfig::default())
        .await?;
    let (id, old) = init(&mut clients, -1).await?;
    send(&mut clients, idempotent(id, old, 0, 3)?)
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (same, new) = init(&mut clients, id).await?;
    anyhow::ensure!(same == id && new == old + 1);
    let zombie = send(&mut clients, idempotent(id, old, 3, 1)?).await?;
    anyhow::ensure!(
        matches!(&zombie, Err((tonic::Code::FailedPrecondition, m)) if m.contains("fenced")),
        "{zombie:?}"
    );
    // The new epoch starts its sequence at 0.
    let fresh = send(&mut clients, idempotent(id, new, 0, 2)?).await?;
    anyhow::ensure!(fresh == Ok((3, false)), "{fresh:?}");
    // Ids that were never handed out are refused.
    let unknown = send(&mut clients, idempotent(id + 1000, 0, 0, 1)?).await?;
    anyhow::ensure!(
        matches!(&unknown, Err((tonic::Code::FailedPrecondition, _))),
        "{unknown:?}"
    );
    let bogus = clients
        .produce
        .init_producer_id(InitProducerIdRequest {
            producer_id: id + 1000,
        })
        .await;
    anyhow::ensure!(
        matches!(&bogus, Err(s) if s.code() == tonic::Code::InvalidArgument),
        "{bogus:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_broker_forgets_the_least_recently_used_producer_ids_beyond_its_bound()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = brook_broker::BrokerConfig::default();
    config.limits.producer_ids_max = 2;
    let embedded = EmbeddedBroker::builder()
        .config(config.clone())
        .data_dir(dir.path())
        .start()
        .await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("idem", 1, TopicConfig::default())
        .await?;
    let (first, _) = init(&mut clients, -1).await?;
    let (second, _) = init(&mut clients, -1).await?;
    // The first id produces, so the second is the least recently used
    // when a third is handed out.
    send(&mut clients, idempotent(first, 0, 0, 1)?)
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (third, _) = init(&mut clients, -1).await?;
    anyhow::ensure!(third > second && second > first);
    let forgotten = send(&mut clients, idempotent(second, 0, 0, 1)?).await?;
    anyhow::ensure!(
        matches!(&forgotten, Err((tonic::Code::FailedPrecondition, m)) if m.contains("not known")),
        "{forgotten:?}"
    );
    // The first id's next sequence is 1, the third's 0.
    for (id, sequence) in [(first, 1), (third, 0)] {
        send(&mut clients, idempotent(id, 0, sequence, 1)?)
            .await?
            .map_err(|e| anyhow::anyhow!("producer {id}: {e:?}"))?;
    }
    // The store forgot it too: a restart does not bring it back.
    embedded.shutdown().await?;
    let embedded = EmbeddedBroker::builder()
        .config(config)
        .data_dir(dir.path())
        .start()
        .await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    let still_forgotten = clients
        .produce
        .init_producer_id(InitProducerIdRequest {
            producer_id: second,
        })
        .await;
    anyhow::ensure!(
        matches!(&still_forgotten, Err(s) if s.code() == tonic::Code::InvalidArgument),
        "{still_forgotten:?}"
    );
    let (bumped, epoch) = init(&mut clients, first).await?;
    anyhow::ensure!(bumped == first && epoch == 1);
    embedded.shutdown().await?;
    Ok(())
}
