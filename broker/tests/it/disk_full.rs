//! A data volume that fills up, for real: a small tmpfs holds the data
//! directory and the metadata store. Produces are refused with
//! RESOURCE_EXHAUSTED (the partition is not poisoned), `/health` names the
//! partition, metadata writes fail cleanly, nothing acknowledged is lost,
//! and once space is freed writes resume without a restart.
//!
//! Mounting needs root (CAP_SYS_ADMIN); without it the test says so and
//! passes without running.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use brook_broker::BrokerConfig;
use brook_proto::group_service_client::GroupServiceClient;
use brook_proto::{InitProducerIdRequest, ResetOffsetsRequest, TopicConfig, reset_offsets_request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

/// The size of the volume: the metadata store, a ballast file and a few
/// MiB of batches.
const VOLUME: &str = "size=8m";
/// What the test frees to give the broker space again.
const BALLAST_BYTES: usize = 3 * 1024 * 1024;
const VALUE_BYTES: usize = 32 * 1024;
/// Produces until the disk is full, at most: 8 MiB of 32 KiB batches.
const PRODUCES_MAX: usize = 8 * 1024 * 1024 / VALUE_BYTES;

/// A tmpfs mounted on a temporary directory, unmounted when dropped (even
/// when the test fails), before the directory is removed.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not allowed.
    fn mount() -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", VOLUME, "brook-disk-full"])
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Ok(Some(Self { dir })),
            Ok(output) => {
                eprintln!(
                    "disk_full skipped: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("disk_full skipped: cannot run mount: {e}");
                Ok(None)
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file a failed test left open does not keep it mounted.
        let unmounted = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if !unmounted.is_ok_and(|s| s.success()) {
            eprintln!("could not unmount {}", self.dir.path().display());
        }
    }
}

/// Metadata writes tried on the full volume.
const METADATA_WRITES: usize = 20;

/// Writes zeros to `path` until the volume is full.
fn fill(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 4096];
    for _ in 0..(8 * 1024 * 1024 / chunk.len()) {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{} never filled the volume", path.display())
}

fn value(i: usize) -> String {
    format!("{i:0>VALUE_BYTES$}")
}

fn batch_of(i: usize) -> anyhow::Result<bytes::Bytes> {
    let record = brook_record::NewRecord {
        timestamp: common::now_ms(),
        value: Some(bytes::Bytes::from(value(i))),
        ..brook_record::NewRecord::default()
    };
    Ok(brook_record::encode_batch(
        &[record],
        brook_record::BatchOptions::default(),
    )?)
}

/// Produces batch `i` to `full`/0: its offset, or the status of the refusal.
async fn produce(
    clients: &mut common::Clients,
    i: usize,
) -> anyhow::Result<Result<i64, (Code, String)>> {
    let request = common::produce_request(
        i as u64,
        vec![common::partition_batch("full", 0, batch_of(i)?)],
    );
    let response = common::within("produce", clients.produce.produce(request)).await?;
    let response = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Err((status.code(), status.message().to_owned()))),
    };
    let [result] = response.results.as_slice() else {
        bail!("expected one result, got {:?}", response.results);
    };
    Ok(match &result.error {
        Some(error) => Err((Code::from(error.code), error.message.clone())),
        None => Ok(result.base_offset),
    })
}

/// Reads the whole partition back and checks every acknowledged batch.
async fn check_acknowledged(
    clients: &mut common::Clients,
    acknowledged: &BTreeMap<i64, usize>,
) -> anyhow::Result<()> {
    let records = clients.fetch_all("full", 0, 0).await?;
    let stored: BTreeMap<i64, String> = records
        .into_iter()
        .map(|r| {
            let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
            (r.offset, value.unwrap_or_default())
        })
        .collect();
    ensure!(
        stored.len() == acknowledged.len(),
        "{} records stored, {} acknowledged",
        stored.len(),
        acknowledged.len()
    );
    for (offset, i) in acknowledged {
        ensure!(
            stored.get(offset) == Some(&value(*i)),
            "acknowledged batch {i} at offset {offset} is missing or damaged"
        );
    }
    Ok(())
}

/// Two metadata writes (a producer id, a group's offsets): each must answer
/// within `WAIT`. Returns how they answered.
async fn metadata_writes(
    clients: &mut common::Clients,
    groups: &mut GroupServiceClient<Channel>,
) -> anyhow::Result<String> {
    let init = common::within(
        "InitProducerId",
        clients
            .produce
            .init_producer_id(InitProducerIdRequest { producer_id: -1 }),
    )
    .await?;
    let reset = common::within(
        "ResetOffsets",
        groups.reset_offsets(ResetOffsetsRequest {
            group: "readers".to_owned(),
            topic: "full".to_owned(),
            partitions: Vec::new(),
            to: Some(reset_offsets_request::To::Earliest(true)),
        }),
    )
    .await?;
    let describe = |r: Result<(), tonic::Status>| match r {
        Ok(()) => "ok".to_owned(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    };
    Ok(format!(
        "InitProducerId {}; ResetOffsets {}",
        describe(init.map(drop)),
        describe(reset.map(drop))
    ))
}

#[test]
fn a_full_data_volume_refuses_produces_until_space_is_freed() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(fill_and_free());
    // A write stuck in the metadata store must fail the test, not hang it.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn fill_and_free() -> anyhow::Result<()> {
    let Some(volume) = Tmpfs::mount()? else {
        return Ok(());
    };
    let ballast: PathBuf = volume.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; BALLAST_BYTES])?;
    let data_dir = volume.path().join("data");

    let mut config = BrokerConfig::default();
    config.data_dir.clone_from(&data_dir);
    config.shutdown_grace = Duration::from_secs(5);
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(brook_broker::server::run(
        config,
        grpc,
        Some(http),
        {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        },
        |_| {},
    ));
    let result = async {
        crate::http::wait_for(http_addr, "/ready", 200).await?;
        let endpoint = format!("http://{grpc_addr}");
        let mut clients = common::Clients::connect(endpoint.clone()).await?;
        let mut groups = GroupServiceClient::new(Channel::from_shared(endpoint)?.connect().await?);
        let config = TopicConfig {
            segment_bytes: Some(1024 * 1024),
            ..TopicConfig::default()
        };
        clients.create_topic("full", 1, config).await?;

        // Fill the volume.
        let mut acknowledged = BTreeMap::new();
        let mut refusal = None;
        for i in 0..PRODUCES_MAX {
            match produce(&mut clients, i).await? {
                Ok(offset) => {
                    acknowledged.insert(offset, i);
                }
                Err(refused) => {
                    refusal = Some(refused);
                    break;
                }
            }
        }
        let (code, message) = refusal.context("the volume never filled up")?;
        ensure!(code == Code::ResourceExhausted, "{code:?}: {message}");
        ensure!(
            message.contains("no space left on the data volume"),
            "{message}"
        );
        // It stays full: every produce is refused the same way, none poisons.
        for i in 0..5 {
            let (code, message) = match produce(&mut clients, PRODUCES_MAX + i).await? {
                Ok(offset) => bail!("a produce on the full volume got offset {offset}"),
                Err(refused) => refused,
            };
            ensure!(code == Code::ResourceExhausted, "{code:?}: {message}");
        }
        let (status, body) = crate::http::get(http_addr, "/health").await?;
        ensure!(
            status == 200 && body.contains("degraded") && body.contains("\"topic\":\"full\""),
            "{status} {body}"
        );
        ensure!(body.contains("no space left on the data volume"), "{body}");
        ensure!(!body.contains("poisoned"), "{body}");

        // The last bytes a batch could not use go to a filler, so that the
        // metadata store meets the full disk too.
        let filler = volume.path().join("filler");
        fill(&filler)?;
        for _ in 0..METADATA_WRITES {
            let answer = metadata_writes(&mut clients, &mut groups).await?;
            let refused =
                "ResourceExhausted: no space left on the data volume for the metadata store";
            ensure!(
                answer.matches(refused).count() == 2,
                "metadata writes on the full volume: {answer}"
            );
        }
        check_acknowledged(&mut clients, &acknowledged).await?;

        // An operator frees space: writes resume, without a restart.
        std::fs::remove_file(&ballast)?;
        std::fs::remove_file(&filler)?;
        let i = PRODUCES_MAX + 10;
        let offset = match produce(&mut clients, i).await? {
            Ok(offset) => offset,
            Err((code, message)) => bail!("after freeing space: {code:?}: {message}"),
        };
        acknowledged.insert(offset, i);
        let (status, body) = crate::http::get(http_addr, "/health").await?;
        ensure!(
            status == 200 && body.contains("\"status\":\"ok\""),
            "{status} {body}"
        );
        let after = metadata_writes(&mut clients, &mut groups).await?;
        ensure!(
            after == "InitProducerId ok; ResetOffsets ok",
            "metadata writes after space was freed: {after}"
        );
        check_acknowledged(&mut clients, &acknowledged).await
    }
    .await;
    stop.cancel();
    common::within("server exit", server).await???;
    result
}
