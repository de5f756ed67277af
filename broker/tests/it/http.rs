//! The HTTP endpoints: `/ready` is 503 while recovery runs and while the
//! broker drains, `/health` reports a live process, `/metrics` shows traffic.
//! Idle and slow HTTP clients are closed, and their number is bounded.

use crate::common;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use brook_broker::storage::{LogFile, OsStorage, Storage};
use brook_broker::{BrokerConfig, EmbeddedBroker};
use parking_lot::{Condvar, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A file system whose directory listings wait until the gate opens: it
/// holds recovery at its first partition.
#[derive(Debug, Default)]
struct GatedStorage {
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedStorage {
    fn release(&self) {
        *self.open.lock() = true;
        self.opened.notify_all();
    }
}

impl Storage for GatedStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        OsStorage.open(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsStorage.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_dir_all(path)
    }
    fn list_files(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
        OsStorage.list_files(path)
    }
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        OsStorage.list_dirs(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OsStorage.sync_dir(path)
    }
}

/// GETs `path` and returns the status code and body.
pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `path` until it answers `status`, for at most `common::WAIT`.
pub(crate) async fn wait_for(
    addr: std::net::SocketAddr,
    path: &str,
    status: u16,
) -> anyhow::Result<String> {
    common::within(&format!("{path} answering {status}"), async {
        loop {
            if let Ok((code, body)) = get(addr, path).await
                && code == status
            {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn ready_waits_for_recovery_and_turns_off_for_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let embedded = EmbeddedBroker::builder()
            .data_dir(dir.path())
            .start()
            .await?;
        let mut clients = common::Clients::connect(embedded.endpoint()).await?;
        clients
            .create_topic("recovering", 2, brook_proto::TopicConfig::default())
            .await?;
        embedded.shutdown().await?;
    }

    let storage = Arc::new(GatedStorage::default());
    let mut config = BrokerConfig::default();
    config.data_dir = dir.path().to_owned();
    config.storage = storage.clone();
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

    // Recovery is held at the gate: alive, not ready, no metrics yet.
    let (status, body) = get(http_addr, "/ready").await?;
    ensure!(
        status == 503 && body.contains("starting"),
        "{status} {body}"
    );
    let (status, body) = get(http_addr, "/health").await?;
    ensure!(status == 200, "{status} {body}");

    storage.release();
    wait_for(http_addr, "/ready", 200).await?;
    let (status, body) = get(http_addr, "/health").await?;
    ensure!(status == 200 && body.contains("ok"), "{status} {body}");

    // A stream the client keeps open holds the drain; meanwhile /ready is 503.
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    common::within("first health status", watch.message()).await??;
    stop.cancel();
    let body = wait_for(http_addr, "/ready", 503).await?;
    ensure!(body.contains("stopping"), "{body}");
    drop(watch);
    common::within("server exit", server).await???;
    Ok(())
}

#[tokio::test]
async fn metrics_show_a_topics_traffic() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = listener.local_addr()?;
    // A second server on the same broker, for its HTTP side.
    let stop = CancellationToken::new();
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let server = tokio::spawn(brook_broker::server::serve(
        embedded.broker().clone(),
        grpc,
        Some(listener),
        {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        },
    ));
    let mut clients = common::Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("metered", 1, brook_proto::TopicConfig::default())
        .await?;
    let records: Vec<brook_record::NewRecord> = (0..250)
        .map(|i| brook_record::NewRecord {
            timestamp: 1,
            value: Some(bytes::Bytes::from(format!("v{i}"))),
            ..Default::default()
        })
        .collect();
    for _ in 0..4 {
        let batch = brook_record::encode_batch(&records, brook_record::BatchOptions::default())?;
        clients.produce("metered", 0, batch).await?;
    }
    let fetched = clients.fetch_all("metered", 0, 0).await?;
    ensure!(fetched.len() == 1000, "fetched {}", fetched.len());

    let (status, text) = get(http_addr, "/metrics").await?;
    ensure!(status == 200, "{status}");
    for expected in [
        "brook_produced_records_total{topic=\"metered\"} 1000",
        "brook_fetched_records_total{topic=\"metered\"} 1000",
        "brook_request_duration_seconds_count{method=\"Produce\"} 4",
        "brook_partition_end_offset{topic=\"metered\",partition=\"0\"} 1000",
        "brook_fsync_duration_seconds_count",
        "brook_group_commit_batches_count",
        "process_resident_memory_bytes",
        "# EOF",
    ] {
        ensure!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    stop.cancel();
    common::within("server exit", server).await???;
    Ok(())
}

#[tokio::test]
async fn a_topic_directory_without_metadata_is_kept_aside_and_named_by_health() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    {
        let embedded = EmbeddedBroker::builder()
            .data_dir(dir.path())
            .start()
            .await?;
        let mut clients = common::Clients::connect(embedded.endpoint()).await?;
        clients
            .create_topic("kept", 1, brook_proto::TopicConfig::default())
            .await?;
        clients.produce("kept", 0, common::batch("r", 3)?).await?;
        embedded.shutdown().await?;
    }
    // The topic's metadata is lost (a store restored from an older backup,
    // or a write that never reached the disk); its records are not.
    std::fs::remove_dir_all(dir.path().join("meta"))?;

    let embedded = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let quarantined = embedded.broker().quarantined_topics().to_vec();
    ensure!(quarantined.len() == 1, "{quarantined:?}");
    ensure!(quarantined[0].topic == "kept", "{quarantined:?}");
    let segment = quarantined[0].path.join("0/00000000000000000000.log");
    ensure!(
        std::fs::metadata(&segment)?.len() > 0,
        "{segment:?} kept its data"
    );
    ensure!(!dir.path().join("topics/kept").exists());

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(brook_broker::server::serve(
        embedded.broker().clone(),
        TcpListener::bind("127.0.0.1:0").await?,
        Some(listener),
        {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        },
    ));
    let (status, body) = get(http_addr, "/health").await?;
    ensure!(
        status == 200 && body.contains("quarantined") && body.contains("kept"),
        "{status} {body}"
    );
    let (_, metrics) = get(http_addr, "/metrics").await?;
    ensure!(metrics.contains("brook_quarantined_topics 1"), "{metrics}");
    stop.cancel();
    common::within("server exit", server).await???;
    Ok(())
}

/// A broker serving HTTP with `config` (its data directory a temporary
/// one); returns the HTTP address, the stop token and the server task.
async fn serve_http(
    mut config: BrokerConfig,
    dir: &Path,
) -> anyhow::Result<(
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), brook_broker::server::ServeError>>,
)> {
    config.data_dir = dir.to_owned();
    config.meta = brook_broker::config::MetaBackend::Memory;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
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
    wait_for(http_addr, "/ready", 200).await?;
    Ok((http_addr, stop, server))
}

/// Reads until the server closes `stream`; returns how long that took.
async fn closed_by_server(stream: &mut TcpStream) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    common::within("the server closing the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_http_clients_are_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = BrokerConfig::default();
    config.http_idle_timeout = Duration::from_millis(300);
    config.http_header_read_timeout = Duration::from_millis(500);
    let (addr, stop, server) = serve_http(config, dir.path()).await?;

    // Silent sockets, and one that made a request and kept the connection.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(addr).await?);
    }
    let mut kept = TcpStream::connect(addr).await?;
    kept.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    for stream in idle.iter_mut().chain([&mut kept]) {
        let took = closed_by_server(stream).await?;
        ensure!(took < common::WAIT, "closed after {took:?}");
    }

    // Headers sent a byte at a time, each within the idle timeout, are cut
    // off by the header timeout.
    let mut slow = TcpStream::connect(addr).await?;
    slow.write_all(b"GET /health HTTP/1.1\r\n").await?;
    let started = Instant::now();
    let dripping = async {
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    common::within("the slow client being cut off", dripping).await?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(5),
        "the slow client lasted {took:?}"
    );
    let (status, _) = get(addr, "/health").await?;
    ensure!(status == 200, "{status}");

    stop.cancel();
    common::within("server exit", server).await???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = BrokerConfig::default();
    config.limits.http_connections_max = 2;
    config.http_idle_timeout = Duration::from_secs(60);
    let (addr, stop, server) = serve_http(config, dir.path()).await?;

    let held = [
        TcpStream::connect(addr).await?,
        TcpStream::connect(addr).await?,
    ];
    // A third client waits to be accepted while both are held...
    let waiting = tokio::time::timeout(Duration::from_millis(500), get(addr, "/health")).await;
    ensure!(waiting.is_err(), "answered beyond the bound: {waiting:?}");
    // ... and is answered once one leaves.
    drop(held);
    let (status, _) = get(addr, "/health").await?;
    ensure!(status == 200, "{status}");

    stop.cancel();
    common::within("server exit", server).await???;
    Ok(())
}
