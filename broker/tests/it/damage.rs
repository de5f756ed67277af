//! Acknowledged records missing at start, or files removed under a running
//! broker: the partition is damaged. It refuses reads and writes with
//! `DATA_LOSS`, `/health` answers 503 naming it, the metrics count the lost
//! records, other partitions serve, and nothing of its files is cut until
//! the operator restarts with `accept_data_loss` naming it.

use crate::common;
use crate::http::get;

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use brook_broker::{BrokerConfig, EmbeddedBroker, PartitionName};
use brook_proto::TopicConfig;
use common::{Clients, batch, partition_batch, produce_request, within};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "d";
const OTHER: &str = "other";
const BATCHES: usize = 60;
const RECORDS_PER_BATCH: usize = 5;
const CUT_BYTES: u64 = 4096;

async fn start(dir: &Path, accept: &[PartitionName]) -> anyhow::Result<(EmbeddedBroker, Clients)> {
    let mut config = BrokerConfig::default();
    config.accept_data_loss = accept.to_vec();
    let embedded = EmbeddedBroker::builder()
        .config(config)
        .data_dir(dir)
        .start()
        .await?;
    let clients = Clients::connect(embedded.endpoint()).await?;
    Ok((embedded, clients))
}

fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir
        .join("topics")
        .join(topic)
        .join(partition.to_string())
}

fn active_segment(data_dir: &Path) -> PathBuf {
    partition_dir(data_dir, TOPIC, 0).join("00000000000000000000.log")
}

/// The code of the one batch of a produce to `topic`/`partition` (0 when
/// it was appended).
async fn produce_code(clients: &mut Clients, topic: &str, partition: u32) -> anyhow::Result<i32> {
    let request = produce_request(0, vec![partition_batch(topic, partition, batch("x", 1)?)]);
    let response = within("produce", clients.produce.produce(request))
        .await??
        .into_inner();
    let result = response.results.first().context("no batch result")?;
    Ok(result.error.as_ref().map_or(0, |e| e.code))
}

/// Records in whole batches within the first `len` bytes of a segment.
fn records_within(segment: &[u8], len: usize) -> anyhow::Result<usize> {
    let mut position = 0;
    let mut batches = 0;
    while let Some(batch_len) = segment
        .get(position..)
        .and_then(brook_record::batch_total_len)
    {
        if position + batch_len > len {
            break;
        }
        position += batch_len;
        batches += 1;
    }
    ensure!(position <= len);
    Ok(batches * RECORDS_PER_BATCH)
}

/// Serves HTTP for `embedded`'s broker until the token is cancelled; returns
/// its address and the server task.
pub(crate) async fn serve_http(
    embedded: &EmbeddedBroker,
    stop: &CancellationToken,
) -> anyhow::Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), brook_broker::server::ServeError>>,
)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = stop.clone();
    let server = tokio::spawn(brook_broker::server::serve(
        embedded.broker().clone(),
        TcpListener::bind("127.0.0.1:0").await?,
        Some(listener),
        async move { stop.cancelled().await },
    ));
    Ok((addr, server))
}

async fn assert_other_serves(clients: &mut Clients) -> anyhow::Result<()> {
    ensure!(produce_code(clients, OTHER, 0).await? == 0);
    let records = clients.fetch_all(OTHER, 0, 0).await?;
    ensure!(!records.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_partition_cut_short_after_a_clean_stop_is_damaged_until_the_loss_is_accepted()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (embedded, mut clients) = start(dir.path(), &[]).await?;
    clients
        .create_topic(TOPIC, 1, TopicConfig::default())
        .await?;
    clients
        .create_topic(OTHER, 1, TopicConfig::default())
        .await?;
    for _ in 0..BATCHES {
        clients
            .produce(TOPIC, 0, batch(&"v".repeat(40), RECORDS_PER_BATCH)?)
            .await?;
    }
    clients.produce(OTHER, 0, batch("o", 1)?).await?;
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;

    let segment = std::fs::read(active_segment(dir.path()))?;
    let cut_len = segment.len() - CUT_BYTES as usize;
    let kept = records_within(&segment, cut_len)?;
    let lost = BATCHES * RECORDS_PER_BATCH - kept;
    ensure!(lost > 0 && kept > 0, "kept {kept}, lost {lost}");
    std::fs::write(active_segment(dir.path()), &segment[..cut_len])?;
    let mark = partition_dir(dir.path(), TOPIC, 0).join("clean-shutdown");

    // Twice: refusing changes nothing, so the next start finds the same.
    for _ in 0..2 {
        let (embedded, mut clients) = start(dir.path(), &[]).await?;
        let data_loss = tonic::Code::DataLoss as i32;
        ensure!(produce_code(&mut clients, TOPIC, 0).await? == data_loss);
        let fetched = clients.fetch_once(TOPIC, 0, 0).await;
        ensure!(
            fetched.as_ref().err().map(tonic::Status::code) == Some(tonic::Code::DataLoss),
            "{fetched:?}"
        );
        assert_other_serves(&mut clients).await?;

        let stop = CancellationToken::new();
        let (http, server) = serve_http(&embedded, &stop).await?;
        let (status, body) = get(http, "/health").await?;
        ensure!(status == 503, "{status} {body}");
        ensure!(
            body.contains("\"damaged\"") && body.contains(&format!("\"topic\":\"{TOPIC}\"")),
            "{body}"
        );
        ensure!(body.contains(&format!("\"lost_from\":{kept}")), "{body}");
        // A restart would not mend it: the liveness endpoint stays 200.
        let (status, body) = get(http, "/live").await?;
        ensure!(status == 200, "/live: {status} {body}");
        let (_, metrics) = get(http, "/metrics").await?;
        let counted = format!(
            "brook_partition_lost_records_total{{topic=\"{TOPIC}\",partition=\"0\"}} {lost}"
        );
        ensure!(metrics.contains(&counted), "{counted} not in {metrics}");
        ensure!(metrics.contains("brook_damaged_partitions 1"), "{metrics}");
        stop.cancel();
        within("http server exit", server).await???;
        drop(clients);
        within("shutdown", embedded.shutdown()).await??;
        ensure!(std::fs::metadata(active_segment(dir.path()))?.len() == cut_len as u64);
        ensure!(mark.exists(), "the clean-shutdown mark is kept");
    }

    // The operator accepts: the partition serves from its shortened end.
    let accepted = [PartitionName::new(TOPIC, 0)];
    let (embedded, mut clients) = start(dir.path(), &accepted).await?;
    ensure!(embedded.broker().damaged_partitions().is_empty());
    ensure!(clients.end_offset(TOPIC, 0).await? == kept as i64);
    ensure!(clients.fetch_all(TOPIC, 0, 0).await?.len() == kept);
    let next = clients.produce(TOPIC, 0, batch("after", 1)?).await?;
    ensure!(next == kept as i64, "appended at {next}");
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;

    // Accepted once: a later start without the setting does not refuse again.
    let (embedded, mut clients) = start(dir.path(), &[]).await?;
    ensure!(embedded.broker().damaged_partitions().is_empty());
    ensure!(clients.end_offset(TOPIC, 0).await? == kept as i64 + 1);
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    Ok(())
}

#[tokio::test]
async fn files_removed_under_a_running_broker_refuse_the_next_produce() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (embedded, mut clients) = start(dir.path(), &[]).await?;
    clients
        .create_topic(TOPIC, 1, TopicConfig::default())
        .await?;
    clients
        .create_topic(OTHER, 1, TopicConfig::default())
        .await?;
    for _ in 0..3 {
        clients
            .produce(TOPIC, 0, batch("v", RECORDS_PER_BATCH)?)
            .await?;
    }
    clients.produce(OTHER, 0, batch("o", 1)?).await?;
    std::fs::remove_dir_all(partition_dir(dir.path(), TOPIC, 0))?;

    ensure!(produce_code(&mut clients, TOPIC, 0).await? == tonic::Code::DataLoss as i32);
    ensure!(produce_code(&mut clients, TOPIC, 0).await? == tonic::Code::DataLoss as i32);
    assert_other_serves(&mut clients).await?;
    let stop = CancellationToken::new();
    let (http, server) = serve_http(&embedded, &stop).await?;
    let (status, body) = get(http, "/health").await?;
    ensure!(
        status == 503 && body.contains("removed or replaced"),
        "{status} {body}"
    );
    let (_, metrics) = get(http, "/metrics").await?;
    let counted = format!(
        "brook_partition_lost_records_total{{topic=\"{TOPIC}\",partition=\"0\"}} {}",
        3 * RECORDS_PER_BATCH
    );
    ensure!(metrics.contains(&counted), "{counted} not in {metrics}");
    stop.cancel();
    within("http server exit", server).await???;
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    ensure!(
        !partition_dir(dir.path(), TOPIC, 0).exists(),
        "nothing recreated"
    );

    // The next start finds the directory missing: still damaged.
    let (embedded, mut clients) = start(dir.path(), &[]).await?;
    ensure!(embedded.broker().damaged_partitions().len() == 1);
    ensure!(produce_code(&mut clients, TOPIC, 0).await? == tonic::Code::DataLoss as i32);
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    ensure!(
        !partition_dir(dir.path(), TOPIC, 0).exists(),
        "nothing created"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_partition_directory_is_damaged_not_empty() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (embedded, mut clients) = start(dir.path(), &[]).await?;
    clients
        .create_topic(TOPIC, 2, TopicConfig::default())
        .await?;
    for partition in 0..2 {
        clients.produce(TOPIC, partition, batch("v", 2)?).await?;
    }
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    std::fs::remove_dir_all(partition_dir(dir.path(), TOPIC, 1))?;

    let (embedded, mut clients) = start(dir.path(), &[]).await?;
    let damaged = embedded.broker().damaged_partitions();
    ensure!(
        damaged.len() == 1 && damaged[0].0 == TOPIC && damaged[0].1 == 1,
        "{damaged:?}"
    );
    ensure!(produce_code(&mut clients, TOPIC, 1).await? == tonic::Code::DataLoss as i32);
    ensure!(produce_code(&mut clients, TOPIC, 0).await? == 0);
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    ensure!(!partition_dir(dir.path(), TOPIC, 1).exists());

    // Accepted: it starts empty.
    let (embedded, mut clients) = start(dir.path(), &[PartitionName::new(TOPIC, 1)]).await?;
    ensure!(clients.produce(TOPIC, 1, batch("v", 1)?).await? == 0);
    drop(clients);
    within("shutdown", embedded.shutdown()).await??;
    Ok(())
}
