//! Operating `brook serve`: a SIGTERM under produce load loses nothing that
//! was acknowledged, bad settings fail naming the key, `--print-config`
//! shows which source won, `brook health` answers for a container, and
//! `/metrics` shows a topic's traffic.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_client::{Client, ClientError, FetchOptions, NewRecord, PendingAck, TopicConfig};
use brook_record::{BatchOptions, encode_batch};
use bytes::Bytes;
use common::{BROOK, Server};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::timeout;

/// How long any single step of these tests may take.
const LIMIT: Duration = Duration::from_secs(120);
/// How long a `brook` command that should fail at once may take.
const QUICK_LIMIT: Duration = Duration::from_secs(10);

const LOAD_TOPIC: &str = "load";
const LOAD_PARTITIONS: u32 = 4;
const BATCH_RECORDS: u64 = 100;
/// SIGTERM is sent once this many records are acknowledged.
const ACKED_BEFORE_SIGTERM: usize = 20_000;
/// The producer gives up after this many records whatever happens, so that
/// its loop is bounded even if the broker never refuses it.
const RECORDS_MAX: u64 = 5_000_000;
const GRACE: Duration = Duration::from_secs(5);
/// Exit after the grace period: the final fsyncs and process teardown.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// One acknowledged batch: records `first_seq..first_seq + BATCH_RECORDS`
/// at offsets `base_offset..` of `partition`.
#[derive(Debug, Clone, Copy)]
struct Acked {
    partition: u32,
    base_offset: i64,
    first_seq: u64,
}

/// What the producer saw until its first error.
#[derive(Debug, Default)]
struct Produced {
    acked: Vec<Acked>,
    /// Batches handed to the stream (acknowledged or not).
    sent_batches: u64,
    /// The error that stopped it.
    error: Option<ClientError>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_produce_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let grace_ms = GRACE.as_millis().to_string();
    let server = Server::start_with(dir.path(), &["--shutdown-grace-ms", &grace_ms]).await;
    let client = Client::connect(server.endpoint()).await.unwrap();
    client
        .create_topic(LOAD_TOPIC, LOAD_PARTITIONS, TopicConfig::default())
        .await
        .unwrap();

    let produced = Arc::new(Mutex::new(Produced::default()));
    let (acked_records, mut acked_watch) = watch::channel(0_usize);
    let producer = tokio::spawn(produce_until_error(
        client.clone(),
        produced.clone(),
        acked_records,
    ));
    let reached = timeout(
        LIMIT,
        acked_watch.wait_for(|acked| *acked >= ACKED_BEFORE_SIGTERM),
    )
    .await
    .expect("enough records acknowledged in time")
    .is_ok();
    if !reached {
        let produced = produced.lock().await;
        panic!(
            "the producer stopped after {} acknowledged batches: {:?}",
            produced.acked.len(),
            produced.error
        );
    }

    let stopping = Instant::now();
    let status = server
        .stop_within(Signal::SIGTERM, GRACE + EXIT_MARGIN)
        .await;
    let shutdown = stopping.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    timeout(LIMIT, producer)
        .await
        .expect("the producer stops once the broker is gone")
        .expect("the producer task");
    drop(client);

    let produced = std::mem::take(&mut *produced.lock().await);
    let acked_total = produced.acked.len() as u64 * BATCH_RECORDS;
    println!(
        "acknowledged {acked_total} records ({} batches sent, {} acknowledged); \
         shutdown took {shutdown:?}; the producer stopped on: {:?}",
        produced.sent_batches,
        produced.acked.len(),
        produced.error
    );
    let error = produced
        .error
        .as_ref()
        .expect("the producer stops only on an error");
    // A restart is a passing condition: whatever the producer saw must say
    // that a retry is worth it.
    assert!(error.is_retryable(), "not retryable: {error:?}");

    let server = Server::start(dir.path()).await;
    let client = Client::connect(server.endpoint()).await.unwrap();
    let mut logs = Vec::new();
    for partition in 0..LOAD_PARTITIONS {
        let log = timeout(
            LIMIT,
            common::read_sequence_numbers(&client, LOAD_TOPIC, partition),
        )
        .await
        .expect("read back in time");
        logs.push(log);
    }
    let mut seen = HashSet::new();
    for seq in logs.iter().flatten() {
        assert!(seen.insert(*seq), "sequence number {seq} twice in the log");
        assert!(
            *seq < produced.sent_batches * BATCH_RECORDS,
            "sequence number {seq} was never sent"
        );
    }
    for batch in &produced.acked {
        let log = &logs[batch.partition as usize];
        for i in 0..BATCH_RECORDS {
            let offset = usize::try_from(batch.base_offset).unwrap() + i as usize;
            assert_eq!(
                log.get(offset),
                Some(&(batch.first_seq + i)),
                "acknowledged record at {}/{offset}",
                batch.partition
            );
        }
    }
    println!(
        "after the restart: {} records in the log, {} of them never acknowledged",
        seen.len(),
        seen.len() as u64 - acked_total
    );

    let status = server.stop(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Sends batches pipelined, round-robin over the partitions, until the first
/// error; a second task awaits the acknowledgements in order and records
/// them in `produced`, publishing the acknowledged record count.
async fn produce_until_error(
    client: Client,
    produced: Arc<Mutex<Produced>>,
    acked_records: watch::Sender<usize>,
) {
    // Bounded like the stream's own in-flight limit; full means the
    // acknowledgements are behind, and the sender waits.
    let (pending_tx, mut pending_rx) = mpsc::channel::<(PendingAck, u32, u64)>(256);
    let collector = {
        let produced = produced.clone();
        tokio::spawn(async move {
            while let Some((ack, partition, first_seq)) = pending_rx.recv().await {
                let answer = ack.await;
                let mut produced = produced.lock().await;
                match answer {
                    Ok(ack) => {
                        assert_eq!(ack.partition, partition);
                        produced.acked.push(Acked {
                            partition,
                            base_offset: ack.base_offset,
                            first_seq,
                        });
                        acked_records.send_replace(produced.acked.len() * BATCH_RECORDS as usize);
                    }
                    Err(error) => {
                        produced.error = Some(error);
                        return;
                    }
                }
            }
        })
    };
    let mut stream = match client.produce_stream().await {
        Ok(stream) => stream,
        Err(error) => {
            produced.lock().await.error = Some(error);
            return;
        }
    };
    let mut sent_batches = 0_u64;
    for first_seq in (0..RECORDS_MAX).step_by(BATCH_RECORDS as usize) {
        let records: Vec<NewRecord> = (first_seq..first_seq + BATCH_RECORDS)
            .map(|seq| NewRecord {
                timestamp: 1_700_000_000_000,
                value: Some(Bytes::from(seq.to_string())),
                ..NewRecord::default()
            })
            .collect();
        let batch = encode_batch(&records, BatchOptions::default()).expect("encode");
        let partition = u32::try_from(sent_batches % u64::from(LOAD_PARTITIONS))
            .expect("below the partition count");
        let ack = match stream.send(LOAD_TOPIC, partition, batch).await {
            Ok(ack) => ack,
            Err(error) => {
                let mut produced = produced.lock().await;
                produced.error.get_or_insert(error);
                break;
            }
        };
        sent_batches += 1;
        if pending_tx.send((ack, partition, first_seq)).await.is_err() {
            // The collector saw an error.
            break;
        }
    }
    drop(pending_tx);
    collector.await.expect("the collector");
    produced.lock().await.sent_batches = sent_batches;
    // Dropped rather than finished: the broker is gone.
    drop(stream);
}

/// Runs `brook <args>` to completion (bounded) with only `env` among the
/// `BROOK_*` variables (and no `RUST_LOG`), whatever its exit status.
async fn run_brook(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut command = Command::new(BROOK);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BROOK_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn brook");
    timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("brook {args:?} finishes within {limit:?}"))
        .expect("wait for brook")
}

/// `brook serve --config <file>` with `flags` and `env`, on a scratch data
/// directory and free ports in case it starts after all.
async fn serve_with_config(
    dir: &Path,
    config: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let file = dir.join("brook.toml");
    std::fs::write(&file, config).expect("write the config file");
    let data = dir.join("data");
    let mut args = vec![
        "serve",
        "--config",
        file.to_str().expect("a UTF-8 temp path"),
        "--data-dir",
        data.to_str().expect("a UTF-8 temp path"),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(flags);
    run_brook(&args, env, QUICK_LIMIT).await
}

fn assert_fails_naming(output: &Output, key: &str, case: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{case}: exits non-zero, got {}; stderr: {stderr}",
        output.status
    );
    assert!(stderr.contains(key), "{case}: stderr names {key}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{case}: no ready line: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    println!("{case}: {}", stderr.trim());
}

#[tokio::test]
async fn a_bad_config_file_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("an unknown key", "lissten = \"x\"\n", "lissten"),
        (
            "a string for a number",
            "shutdown_grace_ms = \"soon\"\n",
            "shutdown_grace_ms",
        ),
        (
            "an unknown fsync policy",
            "fsync = \"sometimes\"\n",
            "fsync",
        ),
        (
            "a limit below the batch header",
            "default_max_message_bytes = 10\n",
            "default_max_message_bytes",
        ),
        (
            "a receive buffer smaller than a batch",
            "max_receive_buffer_bytes = 1024\n",
            "max_receive_buffer_bytes",
        ),
        (
            "more connections than file descriptors",
            "max_connections = 1000000000000\n",
            "max_connections",
        ),
    ];
    for (case, config, key) in cases {
        let output = serve_with_config(dir.path(), config, &[], &[]).await;
        assert_fails_naming(&output, key, case);
    }

    let from_env = serve_with_config(dir.path(), "", &[], &[("BROOK_FSYNC", "sometimes")]).await;
    assert_fails_naming(&from_env, "fsync", "BROOK_FSYNC=sometimes");
    let from_flag = serve_with_config(dir.path(), "", &["--fsync", "sometimes"], &[]).await;
    assert_fails_naming(&from_flag, "fsync", "--fsync sometimes");
    let number_from_env =
        serve_with_config(dir.path(), "", &[], &[("BROOK_SHUTDOWN_GRACE_MS", "soon")]).await;
    assert_fails_naming(
        &number_from_env,
        "shutdown-grace-ms",
        "BROOK_SHUTDOWN_GRACE_MS=soon",
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the settings are checked"
    );
}

/// `brook serve --config <file> --print-config <flags>`; panics unless it
/// exits 0. Returns stdout.
async fn print_config(file: &Path, flags: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = vec![
        "serve",
        "--config",
        file.to_str().expect("a UTF-8 temp path"),
        "--print-config",
    ];
    args.extend_from_slice(flags);
    let output = run_brook(&args, env, QUICK_LIMIT).await;
    assert!(
        output.status.success(),
        "brook {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The value of `key` in printed TOML (one `key = value` per line).
fn toml_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(" = ")?;
            (name == key).then_some(value)
        })
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[tokio::test]
async fn print_config_shows_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("brook.toml");
    std::fs::write(
        &file,
        "shutdown_grace_ms = 1234\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let env = [("BROOK_LISTEN", "127.0.0.1:2")];

    let with_flag = print_config(&file, &["--listen", "127.0.0.1:3"], &env).await;
    assert_eq!(
        toml_value(&with_flag, "listen"),
        "\"127.0.0.1:3\"",
        "{with_flag}"
    );
    assert_eq!(
        toml_value(&with_flag, "shutdown_grace_ms"),
        "1234",
        "{with_flag}"
    );

    let without_flag = print_config(&file, &[], &env).await;
    assert_eq!(
        toml_value(&without_flag, "listen"),
        "\"127.0.0.1:2\"",
        "{without_flag}"
    );
    assert_eq!(toml_value(&without_flag, "shutdown_grace_ms"), "1234");

    let file_only = print_config(&file, &[], &[]).await;
    assert_eq!(toml_value(&file_only, "listen"), "\"127.0.0.1:1\"");

    // The printed text is a complete configuration: read back, it prints
    // the same.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &with_flag).unwrap();
    let again = print_config(&printed, &[], &[]).await;
    assert_eq!(again, with_flag);
}

/// `brook health --http <address> <flags>`, bounded.
async fn health(address: &str, flags: &[&str]) -> Output {
    let mut args = vec!["health", "--http", address, "--timeout-ms", "2000"];
    args.extend_from_slice(flags);
    run_brook(&args, &[], QUICK_LIMIT).await
}

#[tokio::test]
async fn health_command_reports_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let address = server.http.clone();

    let healthy = health(&address, &[]).await;
    assert!(
        healthy.status.success(),
        "{}: {}",
        healthy.status,
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&healthy.stdout), "health: ok\n");
    let ready = health(&address, &["--endpoint", "ready"]).await;
    assert!(
        ready.status.success(),
        "{}: {}",
        ready.status,
        String::from_utf8_lossy(&ready.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ready: ok\n");

    let status = server.stop(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{status}");
    let gone = health(&address, &[]).await;
    assert!(!gone.status.success(), "{}", gone.status);
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(stderr.contains(&address), "{stderr}");
}

/// `GET <path>` over HTTP/1.1 with `Connection: close`: (status, body).
pub(crate) async fn http_get(address: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        response
    };
    let response = timeout(QUICK_LIMIT, exchange)
        .await
        .expect("an HTTP answer in time");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// The body of a chunked transfer encoding.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("a chunk end");
    }
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[tokio::test]
async fn metrics_endpoint_shows_topic_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let client = Client::connect(server.endpoint()).await.unwrap();
    client
        .create_topic("m", 1, TopicConfig::default())
        .await
        .unwrap();
    for first in (0..1_000).step_by(100) {
        let records: Vec<NewRecord> = (first..first + 100)
            .map(|i: u32| NewRecord {
                value: Some(Bytes::from(i.to_string())),
                ..NewRecord::default()
            })
            .collect();
        client.produce("m", 0, &records).await.unwrap();
    }
    let options = FetchOptions::default().with_max_wait(Duration::ZERO);
    let mut offset = 0;
    while offset < 1_000 {
        let fetched = client.fetch("m", 0, offset, options).await.unwrap();
        assert!(!fetched.records.is_empty(), "data below 1000");
        offset = fetched.next_offset;
    }
    assert_eq!(offset, 1_000);

    let (status, metrics) = http_get(&server.http, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let check = |series: &str, want: &dyn Fn(f64) -> bool| {
        let value = sample(&metrics, series);
        assert!(
            value.is_some_and(want),
            "{series} is {value:?} in:\n{metrics}"
        );
    };
    check("brook_produced_records_total{topic=\"m\"}", &|v| {
        (v - 1_000.0).abs() < f64::EPSILON
    });
    check("brook_fetched_records_total{topic=\"m\"}", &|v| {
        v >= 1_000.0
    });
    check("brook_fsync_duration_seconds_count", &|v| v > 0.0);
    check(
        "brook_partition_end_offset{topic=\"m\",partition=\"0\"}",
        &|v| (v - 1_000.0).abs() < f64::EPSILON,
    );
    // Unary calls are timed by method; the client's produce is unary.
    for method in ["Produce", "Fetch", "CreateTopic"] {
        let count = format!("brook_request_duration_seconds_count{{method=\"{method}\"}}");
        check(&count, &|v| v > 0.0);
        let label = format!("method=\"{method}\"");
        assert!(
            metrics.lines().any(
                |line| line.starts_with("brook_request_duration_seconds_bucket{")
                    && line.contains(&label)
            ),
            "no brook_request_duration_seconds_bucket with {label} in:\n{metrics}"
        );
    }

    drop(client);
    let status = server.stop(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{status}");
}
